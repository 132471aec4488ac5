"""Cost: CPU time per request the SBC handled, over interleaved rounds.

One sample is one load (a fixed number of calls at a moderate rate) on one
configuration: the CPU time every SBC Kamailio process spent from just
before it to when the SBC is idle again, divided by the requests it handled
(SIPp's successful calls times the flow's requests).  Where the
configuration uses Redis, the lab's redis-server is measured over the same
window.  A run with any failure has no cost: it reports its failures and
stays out of the medians.

Rounds interleave: round 1 runs every workload on every configuration, then
round 2 does it again (starting one configuration further along), and so on,
so that whatever else the machine does spreads over all configurations alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from bench import sbc_log
from bench.cpu import group_cpu_ns, wait_until_idle
from bench.workloads import Endpoint, Flow, run_flow


class Measured(Protocol):
    """A running SBC the benchmark can load and measure (a lab, a stock Kamailio)."""

    name: str
    endpoint: Endpoint

    @property
    def sbc_pgid(self) -> int: ...

    @property
    def redis_pgid(self) -> int | None: ...

    @property
    def sbc_log(self) -> Path: ...


@dataclass(frozen=True)
class CostSample:
    target: str
    workload: str
    round: int
    calls: int
    successful: int
    failed: int
    elapsed_s: float
    # Requests the SBC handled: SIPp's successful calls times the flow's requests.
    requests: int
    sbc_cpu_ns: int
    # None where the configuration does not use Redis.
    redis_cpu_ns: int | None
    # When it failed: SIPp's account, and the SBC log's most frequent problem.
    problem: str = ""
    sbc_error: str = ""

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.successful == self.calls and self.requests > 0

    @property
    def us_per_request(self) -> float | None:
        return self.sbc_cpu_ns / self.requests / 1000 if self.clean else None

    @property
    def redis_us_per_request(self) -> float | None:
        if not self.clean or self.redis_cpu_ns is None:
            return None
        return self.redis_cpu_ns / self.requests / 1000

    def describe(self) -> str:
        if not self.clean:
            seen = f"; SBC log: {self.sbc_error}" if self.sbc_error else ""
            return f"{self.failed} failed, {self.successful}/{self.calls} ok{seen}"
        redis = (
            f", Redis {self.redis_us_per_request:.0f}"
            if self.redis_us_per_request is not None
            else ""
        )
        return f"{self.us_per_request:.0f} µs/request{redis} ({self.requests} requests)"

    def as_json(self) -> dict:
        return {
            **asdict(self),
            "us_per_request": self.us_per_request,
            "redis_us_per_request": self.redis_us_per_request,
        }


def measure_run(system: Measured, flow: Flow, calls: int, rate: float, round_: int) -> CostSample:
    wait_until_idle(system.sbc_pgid)
    log_offset = sbc_log.size(system.sbc_log)
    sbc_before, redis_before = group_cpu_ns(system.sbc_pgid), _redis_ns(system)
    result = run_flow(system.endpoint, flow, calls, rate)
    wait_until_idle(system.sbc_pgid)
    redis_after = _redis_ns(system)
    return CostSample(
        target=system.name,
        workload=flow.name,
        round=round_,
        calls=calls,
        successful=result.successful,
        failed=result.failed,
        elapsed_s=result.elapsed_s,
        requests=result.successful * flow.requests,
        sbc_cpu_ns=group_cpu_ns(system.sbc_pgid) - sbc_before,
        redis_cpu_ns=redis_after - redis_before
        if redis_after is not None and redis_before is not None
        else None,
        problem=result.problem,
        sbc_error=sbc_log.most_frequent_problem(system.sbc_log, log_offset)
        if result.failed
        else "",
    )


# Called after each run with the system, the flow and the sample (per-module times).
AfterRun = Callable[[Measured, Flow, CostSample], None]


def interleaved(
    systems: Sequence[Measured],
    flows: Sequence[Flow],
    loads: Mapping[str, tuple[int, float]],
    rounds: int,
    after_run: AfterRun | None = None,
) -> list[CostSample]:
    """``rounds`` rounds; in each, every flow on every system in turn (``loads``: calls, rate).

    Each round starts one system further along, so that no system always runs
    first after a change of flow (or always right after the same neighbour).
    """
    samples = []
    for round_ in range(1, rounds + 1):
        shift = (round_ - 1) % len(systems)
        in_turn = [*systems[shift:], *systems[:shift]]
        for flow in flows:
            calls, rate = loads[flow.name]
            for system in in_turn:
                sample = measure_run(system, flow, calls, rate, round_)
                print(
                    f"  round {round_} {flow.name} {system.name}: {sample.describe()}",
                    flush=True,
                )
                samples.append(sample)
                if after_run is not None:
                    after_run(system, flow, sample)
    return samples


@dataclass(frozen=True)
class Idle:
    """CPU time a system uses with no load (timers, housekeeping), in ms per second."""

    sbc_ms_per_s: float
    redis_ms_per_s: float | None


def idle(systems: Sequence[Measured], seconds: float) -> dict[str, Idle]:
    """Every system's idle use, over one window for all (none is loaded meanwhile).

    Each run's cost includes this much per second of the run: what a system
    spends whether or not requests come.
    """
    for system in systems:
        wait_until_idle(system.sbc_pgid)
    before = {s.name: (group_cpu_ns(s.sbc_pgid), _redis_ns(s)) for s in systems}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    rates = {}
    for system in systems:
        sbc, redis = before[system.name]
        redis_now = _redis_ns(system)
        rates[system.name] = Idle(
            (group_cpu_ns(system.sbc_pgid) - sbc) / 1e6 / elapsed,
            (redis_now - redis) / 1e6 / elapsed
            if redis is not None and redis_now is not None
            else None,
        )
    return rates


def _redis_ns(system: Measured) -> int | None:
    return group_cpu_ns(system.redis_pgid) if system.redis_pgid is not None else None
