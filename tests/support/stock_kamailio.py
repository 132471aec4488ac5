"""Debian's stock kamailio.cfg on loopback, as shipped or with the sipshield drop-in.

(It also runs an operator's own configuration text that calls sipshield
itself, such as a KEMI script's, the same way.)

This is the proof that the drop-in fits a configuration nobody here wrote (the
tests) and the measure of what it costs (the benchmark).  The stock file comes
from the kamailio package at run time and is copied; the only change made to
the copy is the drop-in edit (:func:`sipshield.edge.dropin.add_to_native_config`).
It runs with none of its ``WITH_*`` features, so registrations live in
usrloc's memory and nothing authenticates; it listens only where ``-l`` says.
The SIP domain is the listening address itself (``127.0.0.1:PORT``), which
the stock configuration treats as "myself".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from sipshield.edge.dropin import add_to_native_config
from sipshield.edge.kamailio_env import kamailio_environment
from sipshield.lab.net import free_port
from sipshield.lab.sip_probe import send_request
from sipshield.lab.stack import config_dir, group_cpu_seconds, group_members

STOCK_CONFIG = Path("/etc/kamailio/kamailio.cfg")
HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0


class StockError(RuntimeError):
    """The stock Kamailio (or its Redis) did not come up; the message says why."""


@dataclass
class StockKamailio:
    directory: Path
    port: int
    config: Path
    kamailio: subprocess.Popen
    redis_server: subprocess.Popen | None = None
    redis_url: str = ""

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def domain(self) -> str:
        return self.target

    @property
    def events_file(self) -> Path:
        return self.directory / "events.jsonl"

    def log(self) -> str:
        return (self.directory / "kamailio.log").read_text(errors="replace")

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=2)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of every Kamailio process so far."""
        return group_cpu_seconds(self.kamailio.pid)

    def stop(self) -> None:
        for proc in (self.kamailio, self.redis_server):
            if proc is not None:
                _stop_group(proc)


def _stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and group_members(proc.pid):
            time.sleep(0.05)
        if not group_members(proc.pid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)


def stock_text() -> str:
    if not STOCK_CONFIG.is_file():
        raise StockError(f"{STOCK_CONFIG} is missing; it comes with the kamailio package")
    return STOCK_CONFIG.read_text()


def _wait(what: str, ready: Any, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StockError(f"{what} exited with {proc.returncode}; see {log}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.1)
    raise StockError(f"{what} did not answer within {READY_TIMEOUT_S:.0f}s; see {log}")


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
            env={**os.environ, **(env or {})},
            # Own process group: stopping it stops Kamailio's children too.
            start_new_session=True,
        )


def start(
    directory: Path,
    policy: dict[str, Any] | None = None,
    workers: int = 2,
    *,
    config: str | None = None,
    defines: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> StockKamailio:
    """Start the stock configuration; with a ``policy`` (a dict), with the drop-in.

    The policy's ``redis``, ``events`` and ``peers`` are filled in: a Redis of
    its own on a free port, ``events.jsonl`` in ``directory``, and an inside
    peer that never sends (the stock configuration has none).  ``config``
    runs that configuration text as it is instead (an operator's own, which
    calls sipshield itself, or an edit made by hand), with ``defines`` passed
    as ``-A NAME=VALUE`` and ``env`` as Kamailio's environment.  With ``user``
    Kamailio runs as that user and group, as Debian's unit runs it.
    """
    directory = directory.resolve()
    (directory / "run").mkdir(parents=True, exist_ok=True)
    if user is not None:
        shutil.chown(directory / "run", user, user)
    port = free_port()
    text = config if config is not None else stock_text()
    redis_server = None
    env = dict(env or {})
    arguments = [
        arg for name, value in (defines or {}).items() for arg in ("-A", f"{name}={value}")
    ]
    redis_url = ""
    if policy is not None:
        cfg = config_dir()
        if config is None:
            text = add_to_native_config(text, str(cfg / "sipshield-dropin.cfg"))
        redis_port = free_port()
        redis_url = f"redis://{HOST}:{redis_port}/0"
        (directory / "redis").mkdir(exist_ok=True)
        log = directory / "redis.log"
        redis_server = _spawn(
            ["redis-server", "--bind", HOST, "--port", str(redis_port), "--dir",
             str(directory / "redis"), "--save", "", "--appendonly", "no"],
            log,
        )  # fmt: skip
        _wait("redis", lambda: redis.Redis(port=redis_port, socket_timeout=0.5).ping(),
              redis_server, log)  # fmt: skip
        full = {
            "domain": f"{HOST}:{port}",
            "peers": {"pbx": {"address": f"{HOST}:9"}},
            **policy,
            "redis": {"url": redis_url},
            "events": {"file": str(directory / "events.jsonl")},
        }
        policy_file = directory / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(full, sort_keys=False))
        env = kamailio_environment(str(policy_file))
        arguments += ["-A", f'SIPSHIELD_ENTRY="{cfg / "sipshield_kemi.py"}"']
    config = directory / "kamailio.cfg"
    config.write_text(text)
    log = directory / "kamailio.log"
    argv = ["kamailio", "-f", str(config), "-DD", "-E", "-w", str(directory)]
    argv += ["-Y", str(directory / "run"), "-l", f"udp:{HOST}:{port}", "-n", str(workers)]
    if user is not None:
        argv += ["-u", user, "-g", user]
    proc = _spawn(argv + arguments, log, env)
    stock = StockKamailio(directory, port, config, proc, redis_server, redis_url)
    try:
        _wait("kamailio", lambda: send_request((HOST, port), timeout=0.5) == 200, proc, log)
    except BaseException:
        stock.stop()
        raise
    return stock
