"""One SIPp running for the whole soak, read while it runs.

bench runs SIPp to its end (sipshield.lab.sipp.run_sipp); a soak needs its
counts every few seconds.  SIPp writes them itself: ``-trace_stat`` appends
one line of cumulative counters every ``-fd`` seconds, and a last one when it
exits, so reading the file's last line costs SIPp nothing and needs no screen
scraping.  The command line is sipshield.lab.sipp's, so the scenarios behave
exactly as in the tests and the benchmark.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sipshield.lab.sipp import sipp_command


@dataclass(frozen=True)
class StreamCounts:
    """SIPp's cumulative counters: calls made or received, and how they ended."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    # Calls in progress when the line was written.
    current: int = 0
    # Seconds since SIPp started, by its own clock (ElapsedTime(C)).
    elapsed_s: float = 0.0


def _seconds(text: str) -> float:
    """SIPp's HH:MM:SS or HH:MM:SS:uuuuuu."""
    parts = text.split(":")
    seconds = int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])
    return seconds + (int(parts[3]) / 1e6 if len(parts) > 3 else 0.0)


def read_counts(stat_file: Path) -> StreamCounts:
    """The last complete line of a -trace_stat file (zeros before the first one)."""
    try:
        lines = stat_file.read_text(errors="replace").splitlines()
    except OSError:
        return StreamCounts()
    if len(lines) < 2:
        return StreamCounts()
    header = lines[0].split(";")
    # The last line may be half written; the one before it is whole.
    for line in reversed(lines[1:]):
        fields = line.split(";")
        if len(fields) != len(header):
            continue
        row = dict(zip(header, fields, strict=True))
        return StreamCounts(
            created=int(row["TotalCallCreated"]),
            successful=int(row["SuccessfulCall(C)"]),
            failed=int(row["FailedCall(C)"]),
            current=int(row["CurrentCall"]),
            elapsed_s=_seconds(row["ElapsedTime(C)"]),
        )
    return StreamCounts()


class SippStream:
    """A SIPp (UAC, or UAS when ``target`` is empty) in the background, logging to ``workdir``.

    ``options`` are those of sipshield.lab.sipp.sipp_command (calls, rate,
    local_port, keys, auth, injection_file, ...).
    """

    def __init__(
        self,
        name: str,
        scenario: str,
        target: str,
        workdir: Path,
        stat_interval_s: int,
        **options: object,
    ) -> None:
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.stat_file = workdir / "stat.csv"
        argv = sipp_command(scenario, target, workdir=workdir, **options)  # type: ignore[arg-type]
        if not target:
            argv.remove("")  # a UAS has no target
        # SIPp's own per-call rtt log would grow for the whole soak: off.
        for flag, value in (("-trace_rtt", None), ("-rtt_freq", "1")):
            index = argv.index(flag)
            del argv[index : index + (2 if value else 1)]
        argv += ["-trace_stat", "-fd", str(stat_interval_s), "-stf", str(self.stat_file)]
        self.argv = argv
        self.started = time.monotonic()
        self._log = open(workdir / "sipp.out", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir
        )
        self.wall_s = 0.0

    def counts(self) -> StreamCounts:
        return read_counts(self.stat_file)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 30.0) -> int:
        """Let calls in progress end (SIGUSR1: no new calls), then stop it; its exit status.

        A UAS never ends by itself before its call count: it is told to stop
        once its callers have finished.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.wall_s:
            self.wall_s = time.monotonic() - self.started
        self._log.close()
        return self.proc.returncode

    def wait(self, timeout_s: float) -> bool:
        """Wait for SIPp to end by itself (a UAC after its last call); True if it did."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        self.wall_s = time.monotonic() - self.started
        return True

    def errors(self, limit: int = 1500) -> str:
        """The end of SIPp's error log: the messages it did not expect, if any."""
        path = self.workdir / "errors.log"
        try:
            return path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""
