"""One sample of everything the soak watches, read from outside the processes.

  SBC           every Kamailio process of the SBC's process group: VmRSS and
                RssAnon (/proc/PID/status) and open descriptors (/proc/PID/fd),
                and the CPU the group used since the last sample;
  rtpengine     its RSS and descriptors, and its sessions (ng "statistics":
                sessionstotal; "list": the Call-IDs it holds);
  Redis         DBSIZE, used_memory, the event stream's length, the ban index
                (every member of the sorted set) and the bans in force in it;
  events        lines the SBC wrote to its events file so far;
  legitimate    SIPp's own counters per stream, and the TLS probe's.

A process's VmRSS is three things: RssAnon, its private memory (Python's
heap, Kamailio's pkg memory: a leak in the modules grows it); RssFile, the
libraries; and RssShmem, the pages of Kamailio's shared segment (transactions,
TLS connections, htables) that this process has touched.  RssShmem is no
measure of the segment: a timer process that only frees what the workers
allocated climbs, for many minutes, towards the pages the workers touched long
ago, without a byte more being used.  The segment itself is measured once, as
its resident pages (fincore on /proc/PID/map_files: the pages every process
together has touched, which a leak in shared memory keeps growing).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.labs import BenchLab
from sipshield.lab.stack import group_cpu_seconds, group_members
from sipshield.rtpengine import NgError, RtpengineClient

# Kamailio's log prefix, " <rank>(<pid>) LEVEL: ...": names a process by its rank.
_RANK = re.compile(r"^\s*(-?\d+)\((\d+)\) [A-Z]+:", re.MULTILINE)
BAN_INDEX = "sipshield:bans"
EVENT_STREAM = "sipshield:events"


def process_memory(pid: int) -> dict[str, int] | None:
    """VmRSS, RssAnon and RssShmem in kB, and open descriptors, of one process (None once gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "anon_kb": int(fields["RssAnon"].split()[0]),
        "shmem_kb": int(fields["RssShmem"].split()[0]),
        "fds": fds,
    }


def shared_segment(pid: int) -> Path | None:
    """Kamailio's shared memory, as a file: the largest shared /dev/zero mapping of ``pid``."""
    best: tuple[int, str] | None = None
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[1].endswith("s") and fields[5] == "/dev/zero":
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if best is None or end - start > best[0]:
                    best = (end - start, fields[0])
    return Path(f"/proc/{pid}/map_files/{best[1]}") if best else None


def resident_kb(path: Path) -> int | None:
    """Resident pages of a file (util-linux's fincore), in kB; None if it cannot tell."""
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return int(done.stdout.split()[0]) // 1024
    except (IndexError, ValueError):
        return None


def kamailio_ranks(log: Path) -> dict[int, int]:
    """pid -> rank of each Kamailio process that has logged a line (0: main, 1..: workers)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    return {int(pid): int(rank) for rank, pid in _RANK.findall(text)}


class LineCounter:
    """Lines of a file that only grows, counted from where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        with contextlib.suppress(OSError), open(self.path, "rb") as data:
            data.seek(self.offset)
            chunk = data.read()
            # Only whole lines: a half-written one is counted next time.
            whole = chunk.rfind(b"\n") + 1
            self.lines += chunk.count(b"\n", 0, whole)
            self.offset += whole
        return self.lines


@dataclass
class Sample:
    # Seconds since the load started.
    t: float
    sbc: dict[int, dict[str, int]]
    # Resident kB of Kamailio's shared memory segment (None: not readable).
    sbc_shared_kb: int | None
    # Share of one core the SBC used since the previous sample.
    sbc_cpu: float
    rtpengine: dict[str, int]
    redis: dict[str, int]
    events: int
    legit: dict[str, dict[str, int]] = field(default_factory=dict)


class Sampler:
    def __init__(
        self, lab: BenchLab, started: float, legit: Callable[[], dict[str, dict[str, int]]]
    ) -> None:
        self.lab, self.started, self.legit = lab, started, legit
        self.sbc_pgid = lab.sbc_pgid
        self.segment = shared_segment(self.sbc_pgid)
        self.rtpengine_pid = int(lab.info["pids"]["rtpengine"])
        host, _, port = lab.info["rtpengine_ng"].rpartition(":")
        self.ng = RtpengineClient([(host, int(port))], timeout=2.0, retries=1)
        self.redis = redis.Redis.from_url(lab.info["redis"], decode_responses=True)
        self.events = LineCounter(Path(lab.info["events"]))
        self._cpu = (time.monotonic(), group_cpu_seconds(self.sbc_pgid))

    def sample(self) -> Sample:
        now = time.monotonic()
        cpu = group_cpu_seconds(self.sbc_pgid)
        before_at, before_cpu = self._cpu
        self._cpu = (now, cpu)
        sbc = {
            pid: memory
            for pid in sorted(group_members(self.sbc_pgid))
            if (memory := process_memory(pid)) is not None
        }
        return Sample(
            t=round(now - self.started, 1),
            sbc=sbc,
            sbc_shared_kb=resident_kb(self.segment) if self.segment else None,
            sbc_cpu=round((cpu - before_cpu) / (now - before_at), 3) if now > before_at else 0.0,
            rtpengine=self._rtpengine(),
            redis=self._redis(),
            events=self.events.count(),
            legit=self.legit(),
        )

    def _rtpengine(self) -> dict[str, int]:
        found: dict[str, int] = dict(process_memory(self.rtpengine_pid) or {})
        try:
            current = self.ng.statistics().get("currentstatistics", {})
            found["sessions"] = int(current.get("sessionstotal", -1))  # type: ignore[union-attr]
            found["calls"] = len(self.ng.list_calls(limit=1_000_000))
        except NgError:
            found["sessions"] = found["calls"] = -1
        return found

    def _redis(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.dbsize()
        pipe.info("memory")
        pipe.xlen(EVENT_STREAM)
        pipe.zcard(BAN_INDEX)
        pipe.zcount(BAN_INDEX, time.time(), "+inf")
        keys, memory, stream, index, live = pipe.execute()
        return {
            "keys": int(keys),
            "used_memory": int(memory["used_memory"]),
            "event_stream": int(stream),
            "ban_index": int(index),
            "live_bans": int(live),
        }

    def rtpengine_sessions(self) -> int:
        """The sessions rtpengine holds now (-1: it did not answer)."""
        return self._rtpengine()["sessions"]

    def rtpengine_totals(self) -> dict[str, Any]:
        """rtpengine's totals since it started (sessions made, ended by a delete, timed out)."""
        try:
            return dict(self.ng.statistics().get("totalstatistics", {}))  # type: ignore[call-overload]
        except NgError:
            return {}

    def close(self) -> None:
        self.ng.close()
