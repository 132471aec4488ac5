"""Capacity: the highest call rate SIPp achieved with no failure and a p99 under 50 ms.

The offered rate starts low and grows by at most 1.25x per step; each step
lasts a fixed time.  A step's achieved rate is SIPp's successful calls over
the wall time of its run, measured here; its response times are SIPp's own
(the scenarios' rtd timers, whole milliseconds).  A configuration stops at
its first step with a failure or a p99 of 50 ms or more; its capacity is the
highest achieved rate of the steps before.  It also stops, and says so, when
a clean step achieved less than 80% of what was offered: the load side (one
core for SIPp, the PBX, Redis and rtpengine) is then the limit, not the SBC.

Steps interleave like the cost rounds: step k runs on every configuration
still stepping before step k+1 runs on any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from bench import sbc_log
from bench.cost import Measured
from bench.cpu import LOAD_CORES, core_ticks, group_cpu_ns, wait_until_idle
from bench.stats import percentile
from bench.workloads import Flow, run_flow

FACTOR = 1.25
P99_LIMIT_MS = 50.0
LOAD_SIDE_SHARE = 0.8
# A failed step leaves retransmissions and transactions timing out (tm's
# fr_timer is 5 s): the next step, on any configuration, must not pay for
# them, so each step ends when its SBC is idle again.
DRAIN_LIMIT_S = 12.0
# A call that waits longer than this for a message has failed.
RECV_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class Step:
    offered: float
    calls: int
    successful: int
    failed: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    # Share of its core the SBC used over the step, and how busy the load core
    # was (SIPp, the PBX, Redis, rtpengine): which side ran out first.
    sbc_busy: float
    load_busy: float
    # UDP datagrams the kernel dropped at a full socket buffer during the step,
    # machine-wide (/proc/net/snmp RcvbufErrors): where a loss happened, if any.
    udp_drops: int
    # The SBC's most frequent error or warning during a failed step, with its count.
    sbc_error: str = ""

    @property
    def achieved(self) -> float:
        return self.successful / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def failure(self) -> str | None:
        """Why the step does not count (None: it does)."""
        if self.failed or self.successful < self.calls:
            return f"{self.failed or self.calls - self.successful} failed"
        if not self.p99_ms < P99_LIMIT_MS:
            return f"p99 {self.p99_ms:.0f} ms"
        return None

    @property
    def load_side_bound(self) -> bool:
        return self.achieved < LOAD_SIDE_SHARE * self.offered


@dataclass
class Capacity:
    target: str
    workload: str
    steps: list[Step] = field(default_factory=list)
    stopped_by: str = ""

    @property
    def rate(self) -> float:
        return max((s.achieved for s in self.steps if s.failure is None), default=0.0)

    @property
    def best(self) -> Step | None:
        clean = [s for s in self.steps if s.failure is None]
        return max(clean, key=lambda s: s.achieved) if clean else None

    def as_json(self) -> dict:
        return {
            "target": self.target,
            "workload": self.workload,
            "capacity": self.rate,
            "stopped_by": self.stopped_by,
            "steps": [
                {**asdict(s), "achieved": s.achieved, "failure": s.failure} for s in self.steps
            ],
        }


def _step(system: Measured, flow: Flow, rate: float, seconds: float) -> Step:
    calls = max(1, round(rate * seconds))
    (load_core,) = LOAD_CORES
    log_offset = sbc_log.size(system.sbc_log)
    before, drops_before = group_cpu_ns(system.sbc_pgid), _udp_receive_drops()
    load_before = core_ticks(load_core)
    result = run_flow(system.endpoint, flow, calls, rate, recv_timeout_ms=RECV_TIMEOUT_MS)
    busy_ns = group_cpu_ns(system.sbc_pgid) - before
    load_busy, load_total = (a - b for a, b in zip(core_ticks(load_core), load_before, strict=True))
    drops = _udp_receive_drops() - drops_before
    wait_until_idle(system.sbc_pgid, limit_s=DRAIN_LIMIT_S)
    times = result.response_times_ms
    return Step(
        offered=rate,
        calls=calls,
        successful=result.successful,
        failed=result.failed,
        elapsed_s=result.elapsed_s,
        p50_ms=percentile(times, 50),
        p99_ms=percentile(times, 99),
        sbc_busy=busy_ns / 1e9 / result.elapsed_s if result.elapsed_s else 0.0,
        load_busy=load_busy / load_total if load_total else 0.0,
        udp_drops=drops,
        sbc_error=sbc_log.most_frequent_problem(system.sbc_log, log_offset)
        if result.failed
        else "",
    )


def _udp_receive_drops() -> int:
    with open("/proc/net/snmp") as snmp:
        header, values = (line.split() for line in snmp if line.startswith("Udp:"))
    return int(values[header.index("RcvbufErrors")])


def _stop_reason(step: Step) -> str | None:
    """Why stepping ends after this step (None: it goes on)."""
    verdict = step.failure
    if verdict is None:
        return "the load side: achieved < 80% of offered" if step.load_side_bound else None
    details = [f"SBC core {step.sbc_busy:.0%}", f"load core {step.load_busy:.0%}"]
    if step.udp_drops:
        details.append(f"{step.udp_drops} UDP drops on the machine")
    if step.sbc_error:
        details.append(f"SBC log: {step.sbc_error}")
    return f"{verdict} ({', '.join(details)})"


def measure(
    systems: Sequence[Measured], flow: Flow, start: float, seconds: float, max_steps: int
) -> list[Capacity]:
    results = {s.name: Capacity(s.name, flow.name) for s in systems}
    stepping = list(systems)
    rate = start
    for _ in range(max_steps):
        for system in list(stepping):
            step = _step(system, flow, rate, seconds)
            results[system.name].steps.append(step)
            stop = _stop_reason(step)
            print(
                f"  {flow.name} {system.name} @ {rate:.0f}/s: achieved {step.achieved:.0f}/s,"
                f" {step.failed} failed, p50 {step.p50_ms:.0f} ms, p99 {step.p99_ms:.0f} ms,"
                f" SBC core {step.sbc_busy:.0%}, load core {step.load_busy:.0%}"
                + (f" -> stop: {stop}" if stop else ""),
                flush=True,
            )
            if stop is not None:
                results[system.name].stopped_by = stop
                stepping.remove(system)
        if not stepping:
            break
        rate = int(rate * FACTOR)
    for system in stepping:
        results[system.name].stopped_by = f"the last step ({max_steps} steps)"
    return list(results.values())
