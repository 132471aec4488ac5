"""The benchmark's labs: all up at the start, side by side, all down at the end.

Each is ``sipshield lab up --detach`` in a directory of its own (its own free
ports, its own Redis, rtpengine, PBX and SBC), so that every configuration
is measured in every round without starting anything between runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import placement
from bench.targets import Target
from bench.workloads import Endpoint, register_callee
from sipshield.core.stage_timing import ENVIRONMENT as STAGE_TIMES_VARIABLE
from sipshield.lab.net import free_port


@dataclass
class BenchLab:
    """A running lab, as the measurements see it (bench.cost.Measured)."""

    name: str
    target: Target
    directory: Path
    info: dict
    endpoint: Endpoint
    # Where its workers write per-module times (bench.stage_times), if they do.
    stage_dir: Path | None = None

    @property
    def sbc_pgid(self) -> int:
        return int(self.info["pids"]["sbc"])

    @property
    def redis_pgid(self) -> int | None:
        return int(self.info["pids"]["redis"]) if self.target.uses_redis else None

    @property
    def sbc_log(self) -> Path:
        return Path(self.info["logs"]["sbc"])

    @property
    def load_pgids(self) -> list[int]:
        """Every service but the SBC: they share the load core with SIPp."""
        return [int(pid) for name, pid in self.info["pids"].items() if name != "sbc"]


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sipshield.ops.cli", "lab", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def up(
    name: str,
    target: Target,
    directory: Path,
    stage_dir: Path | None = None,
    metrics: bool = False,
) -> BenchLab:
    """A lab of ``target``; without ``metrics`` as deployed by default (no metrics listener:
    bench.metrics_bench measures what it costs)."""
    argv = ["up", "--policy", str(target.policy), "--dir", str(directory), "--detach"]
    if not metrics:
        argv.append("--no-metrics")
    if target.sbc_config is not None:
        argv += ["--sbc-config", str(target.sbc_config)]
    env = dict(target.environment)
    if stage_dir is not None:
        stage_dir.mkdir(parents=True, exist_ok=True)
        env[STAGE_TIMES_VARIABLE] = str(stage_dir)
    done = _cli(*argv, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"lab {name} did not come up:\n{done.stdout}{done.stderr}")
    info = json.loads((directory / "lab.json").read_text())
    endpoint = Endpoint(
        target=info["sip"]["udp"],
        domain=info["domain"],
        callee_port=free_port(),
        passwords={u["username"]: u["password"] for u in info["users"]},
    )
    lab = BenchLab(name, target, directory, info, endpoint, stage_dir)
    try:
        register_callee(endpoint)
    except BaseException:
        down(lab)
        raise
    return lab


def down(lab: BenchLab) -> None:
    _cli("down", "--dir", str(lab.directory))


@contextlib.contextmanager
def running(
    wanted: dict[str, tuple[Target, bool]], metrics: Collection[str] = ()
) -> Iterator[dict[str, BenchLab]]:
    """Bring up one lab per name (target, whether it writes stage times), pinned; all down after.

    The labs named in ``metrics`` have the metrics listener (bench.metrics_bench).
    """
    labs: dict[str, BenchLab] = {}
    with tempfile.TemporaryDirectory(prefix="sipshield-bench-") as tmp:
        try:
            for name, (target, staged) in wanted.items():
                print(f"lab up: {name}", flush=True)
                # A name may be a phrase ("with metrics"); a directory's is one word.
                directory = Path(tmp) / name.replace(" ", "-")
                stage_dir = directory / "stages" if staged else None
                labs[name] = up(name, target, directory, stage_dir, metrics=name in metrics)
            with placement(
                [lab.sbc_pgid for lab in labs.values()],
                [pgid for lab in labs.values() for pgid in lab.load_pgids],
            ):
                yield labs
        finally:
            # Side by side, as they ran: each lab's down waits for its own processes.
            with ThreadPoolExecutor(max_workers=len(labs) or 1) as pool:
                list(pool.map(down, labs.values()))
