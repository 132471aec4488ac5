"""Run SIPp scenarios (Debian's sip-tester) and read their outcome.

The scenarios live in ``tests/sipp/``; the tests and the benchmarks use this
runner.  ``sipshield selftest`` does not: its sends must all pass its guard.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sipshield.lab.net import free_port

SCENARIO_DIR = Path(__file__).resolve().parents[3] / "tests" / "sipp"
TRANSPORT_FLAG = {"udp": "u1", "tcp": "t1", "tls": "l1"}
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
_COUNTER = re.compile(r"^\s*(Successful call|Failed call)\s+\|\s+\d+\s+\|\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str
    errors: str
    # Wall time of the run, measured around the process (run_sipp only).
    elapsed_s: float = 0.0
    # Every response time the scenario's rtd timers took (SIPp's -trace_rtt), in
    # SIPp's whole milliseconds; empty for a scenario without rtd attributes.
    response_times_ms: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0

    def explain(self) -> str:
        return (
            f"sipp exit {self.returncode}, {self.successful} ok, {self.failed} failed\n"
            f"--- errors ---\n{self.errors[-3000:]}\n--- output ---\n{self.output[-2000:]}"
        )


def credentials_file(path: Path, credentials: list[tuple[str, str]]) -> Path:
    """An injection file for the *_many scenarios: one user per call.

    SIPp expands keywords that come from a field, but not fields nested in a
    keyword, so the whole [authentication ...] keyword is the second field.
    """
    lines = ["SEQUENTIAL"] + [
        f"{user};[authentication username={user} password={password}]"
        for user, password in credentials
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def sipp_command(
    scenario: str,
    target: str,
    *,
    service: str = "",
    transport: str = "udp",
    local_ip: str = "127.0.0.1",
    local_port: int | None = None,
    keys: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    calls: int = 1,
    rate: float | None = None,
    max_concurrent: int | None = None,
    timeout_s: int = 30,
    talk_ms: int = 500,
    recv_timeout_ms: int | None = None,
    injection_file: Path | None = None,
    cpus: str | None = None,
    workdir: Path,
) -> list[str]:
    """SIPp's command line; ``cpus`` (a taskset list, e.g. "1") pins it to those cores."""
    path = (
        Path(scenario)
        if scenario.endswith(".xml") and "/" in scenario
        else (SCENARIO_DIR / f"{scenario}.xml")
    )
    argv = ["taskset", "-c", cpus] if cpus else []
    argv += [
        "sipp",
        target,
        "-sf",
        str(path),
        "-t",
        TRANSPORT_FLAG[transport],
        "-i",
        local_ip,
        "-m",
        str(calls),
        "-nostdin",
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        "-trace_screen",
        "-screen_file",
        str(workdir / "screen.log"),
        # Every rtd sample as it is taken (by default SIPp writes them 200
        # calls at a time and drops the last, partial batch).
        "-trace_rtt",
        "-rtt_freq",
        "1",
        # SIPp's default 64 KB socket buffers overflow when it is descheduled
        # for a few milliseconds at thousands of calls per second, and the
        # replies it loses would count against the system under test.
        "-buff_size",
        str(SOCKET_BUFFER_BYTES),
        "-mi",
        local_ip,
    ]
    # An explicit free port: SIPp's default (5060) would clash between runs.
    argv += ["-p", str(local_port or free_port(local_ip))]
    if service:
        argv += ["-s", service]
    if auth:
        argv += ["-au", auth[0], "-ap", auth[1]]
    if rate is not None:
        argv += ["-r", str(rate), "-rp", "1000"]
    if recv_timeout_ms is not None:
        # A call waiting longer than this for a message counts as failed.
        argv += ["-recv_timeout", str(recv_timeout_ms)]
    if max_concurrent is not None:
        argv += ["-l", str(max_concurrent)]
    argv += ["-d", str(talk_ms)]
    if injection_file is not None:
        argv += ["-inf", str(injection_file)]
    defaults = {"expires": "300", "user_agent": "sipshield-test"}
    for name, value in {**defaults, **(keys or {})}.items():
        argv += ["-key", name, value]
    return argv


def _response_times(workdir: Path) -> tuple[float, ...]:
    """The samples of SIPp's <scenario>_<pid>_rtt.csv (Date_ms;response_time_ms;rtd_no)."""
    samples: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            fields = line.split(";")
            if len(fields) >= 2:
                samples.append(float(fields[1]))
    return tuple(samples)


def _result(proc: subprocess.CompletedProcess, workdir: Path, elapsed_s: float = 0.0) -> SippResult:
    screen = (
        (workdir / "screen.log").read_text(errors="replace")
        if (workdir / "screen.log").exists()
        else ""
    )
    counters = {name: int(value) for name, value in _COUNTER.findall(screen)}
    errors = (
        (workdir / "errors.log").read_text(errors="replace")
        if (workdir / "errors.log").exists()
        else ""
    )
    return SippResult(
        returncode=proc.returncode,
        successful=counters.get("Successful call", 0),
        failed=counters.get("Failed call", 0),
        output=proc.stdout + proc.stderr + screen,
        errors=errors,
        elapsed_s=elapsed_s,
        response_times_ms=_response_times(workdir),
    )


def run_sipp(scenario: str, target: str, **options: object) -> SippResult:
    """Run a scenario to its end (a UAC); options are those of :func:`sipp_command`."""
    timeout_s = int(options.get("timeout_s", 30))  # type: ignore[call-overload]
    with tempfile.TemporaryDirectory(prefix="sipp-") as tmp:
        workdir = Path(tmp)
        argv = sipp_command(scenario, target, workdir=workdir, **options)  # type: ignore[arg-type]
        started = time.monotonic()
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s + 30, check=False, cwd=tmp
        )
        return _result(proc, workdir, time.monotonic() - started)


class SippServer:
    """A SIPp UAS running in the background until :meth:`finish`."""

    def __init__(
        self,
        scenario: str,
        *,
        local_port: int,
        calls: int = 1,
        extra_argv: tuple[str, ...] = (),
        **options: object,
    ):
        self._tmp = tempfile.TemporaryDirectory(prefix="sipp-uas-")
        self.workdir = Path(self._tmp.name)
        argv = sipp_command(
            scenario,
            "",
            local_port=local_port,
            calls=calls,
            workdir=self.workdir,
            **options,  # type: ignore[arg-type]
        )
        argv.remove("")  # a UAS has no target
        argv += extra_argv
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.workdir
        )

    def finish(self, timeout_s: float = 30) -> SippResult:
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        result = _result(
            subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err),
            self.workdir,
        )
        self._tmp.cleanup()
        return result
