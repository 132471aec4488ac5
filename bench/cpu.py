"""CPU time of the measured processes, and the cores they run on.

CPU time is read from every thread's /proc/PID/task/TID/schedstat (time spent
on a core, in nanoseconds).  /proc/PID/stat's utime and stime count clock
ticks of 10 ms, too coarse for loads of a few seconds spread over several
processes.

Placement: the SBC's processes get core 0 to themselves; everything that
makes or answers the load (SIPp, the PBX, Redis, rtpengine, this harness)
shares core 1.  A capacity figure is then the SBC's, on one core.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from sipshield.lab.stack import group_members

SBC_CORES = {0}
LOAD_CORES = {1}
# The same, as SIPp's taskset prefix takes it.
LOAD_CPU_LIST = ",".join(map(str, sorted(LOAD_CORES)))


def process_cpu_ns(pid: int) -> int:
    """Time on a core so far of every thread of one process (0 once it is gone)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    return total


def group_cpu_ns(pgid: int) -> int:
    """Time on a core so far of every live process of a process group (a lab service)."""
    return sum(process_cpu_ns(pid) for pid in group_members(pgid))


def core_ticks(core: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one core so far, every process included (/proc/stat)."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{core} "):
                # user nice system idle iowait irq softirq steal (guest is in user)
                ticks = [int(v) for v in line.split()[1:9]]
                return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    raise RuntimeError(f"/proc/stat has no cpu{core}")


def wait_until_idle(
    pgid: int, *, share: float = 0.05, interval_s: float = 0.05, limit_s: float = 2.0
) -> None:
    """Return once the group used under ``share`` of a core over ``interval_s``.

    Before a measurement window opens, the last load's work (retransmissions,
    transactions ending) must be over; after a load, the window stays open
    until the SBC has finished what the load gave it.  ``limit_s`` bounds the
    wait for a process that is never idle (a timer running Python).
    """
    deadline = time.monotonic() + limit_s
    before = group_cpu_ns(pgid)
    while time.monotonic() < deadline:
        time.sleep(interval_s)
        now = group_cpu_ns(pgid)
        if now - before < share * interval_s * 1e9:
            return
        before = now


def _pin(pgids: Iterable[int], cores: set[int]) -> None:
    # Per thread, as taskset -a -p does: a process's threads keep their own masks.
    for pgid in pgids:
        for pid in group_members(pgid):
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(int(task.name), cores)


@contextlib.contextmanager
def placement(sbc_groups: Iterable[int], load_groups: Iterable[int]) -> Iterator[None]:
    """SBC process groups on core 0, load groups and this process on core 1, then undone."""
    sbc, load = list(sbc_groups), list(load_groups)
    everywhere = set(range(os.cpu_count() or 1))
    if not everywhere >= SBC_CORES | LOAD_CORES:
        raise RuntimeError(
            f"the benchmark needs cores {SBC_CORES | LOAD_CORES}; this machine has {everywhere}"
        )
    own = os.sched_getaffinity(0)
    try:
        _pin(sbc, SBC_CORES)
        _pin(load, LOAD_CORES)
        os.sched_setaffinity(0, LOAD_CORES)
        yield
    finally:
        _pin(sbc + load, everywhere)
        os.sched_setaffinity(0, own)
