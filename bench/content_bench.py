"""Cost of content inspection: MESSAGE and NOTIFY with the content modules on and off.

Two labs, both running for the whole measurement (bench.labs): the SBC with
validation alone (``sipshield-validation``: the content modules off) and with
validation and every content-security module enforced
(``sipshield-content``).  Workloads, through the lab PBX to a registered
SIPp callee:
  message   MESSAGE, 407, MESSAGE with credentials (text with emoji, Cyrillic
            and a link), 200; the PBX relays it back through the SBC
            to the callee: 3 requests
  notify    an out-of-dialog presence NOTIFY with a PIDF body, relayed
            by the PBX without authentication: 2 requests
Requests from the PBX are not inspected (the inside's own), so the per-request
figure spreads the inspection of the outside request over both crossings,
as a real deployment pays it.  The method is bench/run.py's (bench.cost).
For bench/run.py: ``measure(quick)`` and ``report(result)``.  Alone:
python -m bench.content_bench [--quick] [--rounds N]
"""

from __future__ import annotations

import sys

from bench import feature_comparison as comparison
from bench.feature_comparison import Column, ComparisonResult
from bench.report import redis_us
from bench.workloads import Flow

OFF, ON = "sipshield-validation", "sipshield-content"
TARGETS = comparison.sipshield_targets(
    {
        OFF: "validation; the content modules off",
        ON: "validation and the seven content modules, enforced",
    }
)
FLOWS = (
    Flow("message", "message_uac", 3, authenticated=True, answered=True, callee="message_uas"),
    Flow("notify", "notify_uac", 2, answered=True, callee="notify_uas"),
)
# Calls and rate per run: as the cost runs of bench.plan, far below capacity.
LOADS = {"message": (400, 200), "notify": (400, 200)}
QUICK_LOADS = {"message": (60, 200), "notify": (60, 200)}


def measure(quick: bool = False, rounds: int | None = None) -> ComparisonResult:
    loads = QUICK_LOADS if quick else LOADS
    return comparison.measure_labs(TARGETS, FLOWS, loads, comparison.plan(quick, rounds))


def report(result: ComparisonResult) -> str:
    return comparison.section(
        result,
        "Content inspection: MESSAGE and NOTIFY, content modules off and on",
        f"Both labs running together, SBC on core 0, {result.plan.rounds} interleaved"
        " rounds, median (min-max) of the SBC's CPU µs per handled request (Redis"
        " apart: spit counts each MESSAGE there); requests per flow: "
        + comparison.requests_per_flow(FLOWS)
        + ".",
        comparison.by_workload(
            result,
            [
                Column(f"{OFF} µs/request", OFF),
                Column(f"{ON} µs/request", ON),
                Column(f"{ON} Redis µs/request", ON, redis_us),
            ],
            (ON, OFF),
        ),
    )


if __name__ == "__main__":
    sys.exit(comparison.main(__doc__, measure, report))
