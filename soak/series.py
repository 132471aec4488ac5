"""The series, cut out of the samples, each with the growth it may show.

Tolerances (soak.levelling): growth over the last third is a leak beyond
the larger of a share of the level and an amount in the series' own unit.

  memory (RssAnon of each SBC process,  2% and 1 MiB: a few bytes per call
  the shared segment, rtpengine's RSS,  over ten minutes of calls is a leak;
  Redis's used_memory)
  descriptors, sessions, Redis keys    10% and 5 to 20: they follow the load
                                       and the attack rounds up and down;
  event stream, ban index, live bans   5% and 5 to 100 entries.

Each SBC process's VmRSS is shown, not judged: it adds to RssAnon the pages
of the shared segment the process has touched, which climb for a long time
in a process that frees what others allocated (soak.sampler), and the
segment is judged as a whole.  Counters that only grow by nature (events
written, SIPp's calls) are not series; the report shows them as counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from soak.levelling import Point, Tolerance, Verdict, judge
from soak.sampler import Sample

MEMORY = Tolerance(0.02, 1024)  # kB
REDIS_MEMORY = Tolerance(0.02, 1024 * 1024)  # bytes
DESCRIPTORS = Tolerance(0.10, 5)
RTPENGINE_DESCRIPTORS = Tolerance(0.10, 20)
SESSIONS = Tolerance(0.10, 20)
KEYS = Tolerance(0.10, 20)
EVENT_STREAM = Tolerance(0.05, 100)
BANS = Tolerance(0.05, 5)


@dataclass
class Series:
    name: str
    unit: str
    # None: shown with its figures, not judged.
    tolerance: Tolerance | None
    points: list[Point] = field(default_factory=list)
    # The SBC process the series is about, if it is about one.
    pid: int | None = None

    def judge(self) -> Verdict:
        if self.tolerance is None:
            shown = judge(self.points, Tolerance(math.inf, math.inf))
            return replace(shown, limit=math.nan, verdict="not judged")
        return judge(self.points, self.tolerance)


def process_label(pid: int, ranks: dict[int, int]) -> str:
    rank = ranks.get(pid)
    return f"SBC pid {pid}" + (f" (rank {rank})" if rank is not None else "")


def build(samples: list[Sample], ranks: dict[int, int]) -> list[Series]:
    """Every judged series, in the report's order."""
    pids = sorted({pid for s in samples for pid in s.sbc})
    found: list[Series] = []
    for metric, label, tolerance in (("rss_kb", "RSS", None), ("anon_kb", "RssAnon", MEMORY)):
        for pid in pids:
            name = f"{process_label(pid, ranks)} {label}"
            series = Series(name, "kB", tolerance, pid=pid)
            series.points = [(s.t, s.sbc[pid][metric]) for s in samples if pid in s.sbc]
            found.append(series)

    def sbc_fds(s: Sample) -> float:
        return sum(p["fds"] for p in s.sbc.values())

    plain: list[tuple[str, str, Tolerance, Callable[[Sample], float | None]]] = [
        ("SBC shared memory (resident)", "kB", MEMORY, lambda s: s.sbc_shared_kb),
        ("SBC descriptors (all processes)", "fds", DESCRIPTORS, sbc_fds),
        ("rtpengine RSS", "kB", MEMORY, lambda s: s.rtpengine.get("rss_kb")),
        ("rtpengine descriptors", "fds", RTPENGINE_DESCRIPTORS, lambda s: s.rtpengine.get("fds")),
        ("rtpengine sessions", "sessions", SESSIONS, lambda s: s.rtpengine.get("sessions")),
        ("Redis keys", "keys", KEYS, lambda s: s.redis["keys"]),
        ("Redis used_memory", "bytes", REDIS_MEMORY, lambda s: s.redis["used_memory"]),
        ("event stream length", "entries", EVENT_STREAM, lambda s: s.redis["event_stream"]),
        ("ban index (sorted set)", "entries", BANS, lambda s: s.redis["ban_index"]),
        ("bans in force", "bans", BANS, lambda s: s.redis["live_bans"]),
    ]
    for name, unit, tolerance, value in plain:
        series = Series(name, unit, tolerance)
        for sample in samples:
            v = value(sample)
            if v is not None and v >= 0:
                series.points.append((sample.t, float(v)))
        found.append(series)
    return found
