"""Whether the lab survived, and what each module did: read from the lab's own records.

After each batch:
  - the SBC's processes (main and every worker, from /proc) are the ones it
    started with: a worker that died is a finding;
  - the SBC's log, read from where the last batch stopped, is cut into
    Kamailio records (a prefixed line and its continuation lines, as a
    Python traceback comes).  A traceback, an unhandled Python exception,
    any ERROR from sipshield's own loggers and any ALERT, BUG or CRITICAL
    from Kamailio (but for its overload alarms, counted apart) is a
    finding; Kamailio's other errors are its parser refusing input, counted
    for the report;
  - the events file (one JSON object per line): an ``error`` event is a
    module crash (sipshield.core.pipeline), a finding; the others say which
    module rejected, dropped or banned what;
  - the PBX's log: which messages were forwarded to it;
  - the kernel drop counters of the SBC's and the PBX's UDP sockets:
    messages lost before Kamailio read them.
Kamailio's log prefix and the events carry the Call-ID, so each record is
traced to its message's index (fuzz.corpus.find_index).

Between batches the SBC must answer an OPTIONS over UDP and over TCP.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz.corpus import find_index
from tests.integration.lab_fixture import RunningLab

_RECORD = re.compile(r"^\s*-?\d+\(\d+\) ([A-Z]+): ")
# A record that starts where the last one did not end its line (Kamailio
# prints some messages without a newline).
_RECORD_INSIDE = re.compile(r"(?<=\S)(?= -?\d+\(\d+\) [A-Z]+: )")
_SIPSHIELD_ERROR = re.compile(r"sipshield\[[\w.]+\] (?:ERROR|CRITICAL): ")
_CALL = re.compile(r"\{[^}]*\} ")
_NUMBER = re.compile(r"\d+")
_KAMAILIO_ALARMS = ("ALERT", "BUG", "CRITICAL")
# Alarms that say the SBC is overloaded (the fuzz's rate on a busy machine),
# not that a message broke something: counted for the report, not findings.
_OVERLOAD = ("queue full",)
_PYTHON_FAILURES = ("Traceback (most recent call last)", "Unhandled exception")
# An event is also logged as a sipshield WARNING; it is counted from the events file.
_EVENT_LINE = "sipshield[sipshield.core.events] WARNING: event "
# Actions after which the request goes no further.
STOPPING = ("reject", "drop", "ban")
PROBE_RECOVERY_S = 15.0


class LogTail:
    """A growing text file, read line by line from where the last read stopped."""

    def __init__(self, path: Path, from_end: bool = True) -> None:
        self.path = path
        self.offset = path.stat().st_size if from_end and path.exists() else 0
        self._partial = b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        complete, _, self._partial = data.rpartition(b"\n")
        if not complete and not data.endswith(b"\n"):
            return []
        return complete.decode(errors="replace").split("\n")


def records(lines: list[str]) -> list[tuple[str, str]]:
    """Kamailio log records: (level, text with continuation lines), in order."""
    found: list[tuple[str, list[str]]] = []
    for line in (part for whole in lines for part in _RECORD_INSIDE.split(whole)):
        match = _RECORD.match(line)
        if match or not found:
            found.append((match.group(1) if match else "", [line]))
        else:
            found[-1][1].append(line)
    return [(level, "\n".join(text)) for level, text in found]


def summary(text: str) -> str:
    """A log record as a counting key: no Call-ID, no numbers, one line, bounded."""
    first = text.split("\n", 1)[0]
    _, _, message = first.partition(": ")
    return _NUMBER.sub("N", _CALL.sub("", message)).strip()[:140]


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to ``port`` (0 if none)."""
    hex_port = f":{port:04X}"
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(hex_port):
                    total += int(fields[-1])
    return total


@dataclass
class Problem:
    """Something a fuzz run must never see; ``index`` when it is traced to a message."""

    what: str
    detail: str
    index: int | None = None
    # The same bug met again has the same key: a traceback's innermost frame
    # and exception, an event's module and reason, without numbers.
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or f"{self.what}: {_key(self.detail)}"


def _key(detail: str) -> str:
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    frames = [line for line in lines if line.startswith("File ")]
    if frames:
        return _NUMBER.sub("N", f"{frames[-1]} {lines[-1]}")[:240]
    return summary(detail)


@dataclass
class Watch:
    lab: RunningLab
    seed: int
    sbc_log: LogTail = field(init=False)
    pbx_log: LogTail = field(init=False)
    events_file: LogTail = field(init=False)
    processes: set[int] = field(init=False)
    services: dict[str, int] = field(init=False)
    drops_at_start: int = field(init=False)
    pbx_drops_at_start: int = field(init=False)
    # What the run saw, over all batches:
    events: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # module, action, mode
    reasons: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    stopped_by: dict[int, tuple[str, str]] = field(
        default_factory=dict
    )  # index -> (module, action)
    forwarded: set[int] = field(default_factory=set)
    kamailio_errors: Counter[str] = field(default_factory=Counter)
    sipshield_warnings: Counter[str] = field(default_factory=Counter)
    overload: Counter[str] = field(default_factory=Counter)
    untraced_events: int = 0
    probes: int = 0
    probe_failures: int = 0

    def __post_init__(self) -> None:
        logs = self.lab.info["logs"]
        self.sbc_log = LogTail(Path(logs["sbc"]))
        self.pbx_log = LogTail(Path(logs["pbx"]))
        self.events_file = LogTail(Path(self.lab.info["events"]))
        self.processes = self.lab.processes("sbc")
        self.services = {name: int(pid) for name, pid in self.lab.info["pids"].items()}
        self.drops_at_start = self.kernel_drops_total()
        self.pbx_drops_at_start = self._pbx_drops_total()

    def kernel_drops_total(self) -> int:
        return udp_drops(self.lab.sip("udp")[1])

    def _pbx_drops_total(self) -> int:
        pbx = self.lab.info.get("pbx", {}).get("udp")
        return udp_drops(int(pbx.rsplit(":", 1)[1])) if pbx else 0

    @property
    def kernel_drops(self) -> int:
        """Datagrams lost at the SBC's UDP socket since the run started."""
        return self.kernel_drops_total() - self.drops_at_start

    @property
    def pbx_drops(self) -> int:
        """Datagrams lost at the PBX's UDP socket (what the SBC relayed) since the run started."""
        return self._pbx_drops_total() - self.pbx_drops_at_start

    def check(self) -> list[Problem]:
        """Everything the lab recorded since the last check; the problems among it."""
        problems = self._read_sbc_log() + self._read_events()
        self._read_pbx_log()
        problems += self._check_processes()
        return problems

    def _read_sbc_log(self) -> list[Problem]:
        problems = []
        for level, text in records(self.sbc_log.lines()):
            what = classify(level, text)
            if level in _KAMAILIO_ALARMS and any(sign in text for sign in _OVERLOAD):
                self.overload[summary(text)] += 1
            elif what:
                problems.append(Problem(what, text, find_index(text, self.seed)))
            elif level == "ERROR":
                self.kamailio_errors[summary(text)] += 1
            elif level == "WARNING" and "sipshield[" in text and _EVENT_LINE not in text:
                self.sipshield_warnings[summary(text)] += 1
        return problems

    def _read_events(self) -> list[Problem]:
        problems = []
        for line in self.events_file.lines():
            if not line.strip():
                continue
            try:
                event: dict[str, Any] = json.loads(line)
            except ValueError:
                problems.append(Problem("unreadable-event", line))
                continue
            module, action = str(event.get("module")), str(event.get("action"))
            mode = str(event.get("mode"))
            reason = _NUMBER.sub("N", str(event.get("reason")))[:200]
            self.events[module, action, mode] += 1
            self.reasons[module, action, mode, reason] += 1
            index = find_index(str(event.get("call_id", "")), self.seed)
            if index is None:
                self.untraced_events += 1
            elif action in STOPPING and mode == "enforce" and index not in self.stopped_by:
                # In monitor mode a module only says what it would have done.
                self.stopped_by[index] = (module, action)
            if action == "error":
                key = f"module-error-event: {module}: {reason}"
                problems.append(Problem("module-error-event", line, index, key))
        return problems

    def _read_pbx_log(self) -> None:
        for line in self.pbx_log.lines():
            if "pbx: received" in line:
                index = find_index(line, self.seed)
                if index is not None:
                    self.forwarded.add(index)

    def _check_processes(self) -> list[Problem]:
        problems = []
        now = self.lab.processes("sbc")
        if now != self.processes:
            gone, new = sorted(self.processes - now), sorted(now - self.processes)
            problems.append(Problem("sbc-process-died", f"gone: {gone}; new: {new}"))
            self.processes = now
        for name, pid in self.services.items():
            if name != "sbc" and not Path(f"/proc/{pid}").exists():
                problems.append(Problem(f"{name}-exited", f"{name} (pid {pid}) is gone"))
        return problems

    def probe(self) -> Problem | None:
        """The SBC answers OPTIONS over UDP and TCP, within a grace period for its backlog."""
        self.probes += 1
        deadline = time.monotonic() + PROBE_RECOVERY_S
        while True:
            answers = {t: self.lab.options(t, timeout=1.0) for t in ("udp", "tcp")}
            if all(code == 200 for code in answers.values()):
                return None
            if time.monotonic() > deadline:
                self.probe_failures += 1
                return Problem("sbc-unanswered-probe", f"OPTIONS answers: {answers}")
            time.sleep(0.5)


def classify(level: str, text: str) -> str:
    """What a log record is, when it is a finding; "" when it is not."""
    if _PYTHON_FAILURES[0] in text:
        return "python-traceback"
    if _PYTHON_FAILURES[1] in text:
        return "python-unhandled-exception"
    if level in _KAMAILIO_ALARMS:
        return f"kamailio-{level.lower()}"
    if _SIPSHIELD_ERROR.search(text):
        return "sipshield-error"
    return ""
