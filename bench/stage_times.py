"""Time per sipshield module, from the files the runtime writes when asked.

With SIPSHIELD_STAGE_TIMES=<directory> (sipshield.core.stage_timing), each
Kamailio worker keeps ``<directory>/stage-times-<pid>.json``:
``{"requests": N, "stages": {"<module>": {"calls": C, "ns": T}}}``, cumulative
since it started, rewritten at most every 0.5 s and only when a request
arrives.  So after a load the reader waits past that interval and sends a
short burst of OPTIONS, which makes every worker rewrite its file, then sums
the files; the difference between two such snapshots is what the load in
between cost each module.  Part of each burst lands in the next difference:
the report shows how many requests the runtime counted beside the ones the
load made.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cost import CostSample, Measured
from bench.cpu import LOAD_CPU_LIST
from bench.workloads import Endpoint, Flow
from sipshield.core.stage_timing import WRITE_INTERVAL_S
from sipshield.lab.sipp import run_sipp

# Enough for every worker to get a request (the kernel hands a UDP socket's
# datagrams to its waiting workers in turn); a stale file is caught anyway.
BURST_CALLS = 20
BURST_RATE = 40
# A worker that got no request of a burst keeps a stale file: burst again.
BURST_ATTEMPTS = 3


@dataclass(frozen=True)
class StageTotals:
    requests: int = 0
    # module -> (calls, ns)
    stages: dict[str, tuple[int, int]] = field(default_factory=dict)

    def minus(self, earlier: StageTotals) -> StageTotals:
        stages = {}
        for name, (calls, ns) in self.stages.items():
            before_calls, before_ns = earlier.stages.get(name, (0, 0))
            stages[name] = (calls - before_calls, ns - before_ns)
        return StageTotals(self.requests - earlier.requests, stages)


def read_totals(directory: Path) -> StageTotals | None:
    """The sum over every worker's file; None when no worker has written one."""
    files = sorted(directory.glob("stage-times-*.json"))
    if not files:
        return None
    requests = 0
    stages: dict[str, tuple[int, int]] = {}
    for path in files:
        data = json.loads(path.read_text())
        requests += int(data["requests"])
        for name, totals in data["stages"].items():
            calls, ns = stages.get(name, (0, 0))
            stages[name] = (calls + int(totals["calls"]), ns + int(totals["ns"]))
    return StageTotals(requests, stages)


def _stale(directory: Path, since: float) -> list[Path]:
    stale = []
    for path in directory.glob("stage-times-*.json"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < since:
                stale.append(path)
    return stale


def snapshot(endpoint: Endpoint, directory: Path) -> StageTotals | None:
    """Make every worker rewrite its file, then sum them (None: no file was ever written)."""
    for _ in range(BURST_ATTEMPTS):
        # Not a condition to poll: the runtime only rewrites on a request that
        # comes more than its interval after its last write.
        time.sleep(WRITE_INTERVAL_S + 0.05)
        since = time.time()
        run_sipp(
            "options",
            endpoint.target,
            calls=BURST_CALLS,
            rate=BURST_RATE,
            keys={"domain": endpoint.domain},
            cpus=LOAD_CPU_LIST,
        )
        stale = _stale(directory, since)
        if not stale:
            break
    else:
        # Those workers' last requests count in the next snapshot instead.
        print(f"  stage times: {len(stale)} worker files not rewritten", flush=True)
    return read_totals(directory)


@dataclass(frozen=True)
class StageSample:
    workload: str
    round: int
    # Requests the load made (SIPp) and the ones the runtime counted (with burst requests).
    handled: int
    counted: int
    stages: dict[str, tuple[int, int]]

    def us_per_request(self, stage: str) -> float | None:
        calls_ns = self.stages.get(stage)
        if calls_ns is None or self.counted <= 0:
            return None
        return calls_ns[1] / self.counted / 1000

    def total_us_per_request(self) -> float | None:
        if self.counted <= 0:
            return None
        return sum(ns for _, ns in self.stages.values()) / self.counted / 1000

    def as_json(self) -> dict:
        return {
            "workload": self.workload,
            "round": self.round,
            "handled": self.handled,
            "counted": self.counted,
            "stages": {k: {"calls": c, "ns": ns} for k, (c, ns) in self.stages.items()},
        }


class StageRecorder:
    """Per-module times of one lab's runs: a snapshot before the first, then after each.

    Used as bench.cost.interleaved's ``after_run``; other systems' runs are
    ignored.  When the runtime writes no file at all, ``samples`` stays empty
    and nothing more is sent.
    """

    def __init__(self, name: str, endpoint: Endpoint, directory: Path) -> None:
        self.name = name
        self.endpoint = endpoint
        self.directory = directory
        self.samples: list[StageSample] = []
        self.previous = snapshot(endpoint, directory)

    @property
    def written(self) -> bool:
        return self.previous is not None

    def after_run(self, system: Measured, flow: Flow, sample: CostSample) -> None:
        if system.name != self.name or self.previous is None:
            return
        current = snapshot(self.endpoint, self.directory)
        if current is None:
            return
        delta = current.minus(self.previous)
        self.previous = current
        self.samples.append(
            StageSample(flow.name, sample.round, sample.requests, delta.requests, delta.stages)
        )
