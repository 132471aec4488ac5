"""Cost of topology hiding: the same calls with hiding off and on.

Two labs, both running for the whole measurement (bench.labs): the SBC with
validation alone (``sipshield-validation``) and the same with topology hiding
on (``sipshield-topology-hiding``: Kamailio's topos strips Via, Record-Route
and Contact from every message it sends and keeps them in the lab's Redis,
sipshield strips the PBX's Server/User-Agent/Warning).  Workloads, through
the lab PBX to a registered SIPp callee (bench.workloads.LAB_FLOWS):
  register  REGISTER, 401, REGISTER with credentials, 200 (topos leaves
            REGISTER alone: the control)
  call      INVITE, 407, ACK, INVITE, ACK, BYE from the caller, the PBX's
            INVITE, ACK, BYE to the callee, which rings before it answers:
            8 requests, every one hidden
Redis's CPU is reported apart: topos writes a branch record per INVITE and a
dialog record per call there.  The method is bench/run.py's (bench.cost).
For bench/run.py: ``measure(quick)`` and ``report(result)``.  Alone:
python -m bench.topology_bench [--quick] [--rounds N]
"""

from __future__ import annotations

import sys

from bench import feature_comparison as comparison
from bench.feature_comparison import Column, ComparisonResult
from bench.report import redis_us
from bench.workloads import LAB_FLOWS, Flow

OFF, ON = "sipshield-validation", "sipshield-topology-hiding"
TARGETS = comparison.sipshield_targets(
    {
        OFF: "validation; topology hiding off",
        ON: "validation; topology hiding on (topos, records in Redis)",
    }
)
# The callee rings (half a second, SIPp's -d) before it answers.  A SIPp caller
# aborts a call when a 180 arrives after the 200, and a 180 and a 200 sent
# together by the PBX can leave the SBC in the other order (two workers, each
# reply costing topos a Redis round trip); SIP allows it and phones ignore the
# late 180, so both labs run this flow, with the same requests as bench.workloads'.
REGISTER = next(flow for flow in LAB_FLOWS if flow.name == "register")
CALL = Flow("call", "call_uac", 8, authenticated=True, answered=True, callee="call_uas_ringing")
FLOWS = (REGISTER, CALL)


def measure(quick: bool = False, rounds: int | None = None) -> ComparisonResult:
    plan = comparison.plan(quick, rounds)
    loads = {flow.name: plan.loads[flow.name] for flow in FLOWS}
    return comparison.measure_labs(TARGETS, FLOWS, loads, plan)


def report(result: ComparisonResult) -> str:
    return comparison.section(
        result,
        "Topology hiding: the same flows, hiding off and on",
        f"Both labs running together, SBC on core 0, {result.plan.rounds} interleaved"
        " rounds, median (min-max) of the SBC's CPU µs per handled request, and"
        " Redis's apart (topos keeps its records there); requests per flow: "
        + comparison.requests_per_flow(FLOWS)
        + ".",
        comparison.by_workload(
            result,
            [
                Column(f"{OFF} µs/request", OFF),
                Column(f"{ON} µs/request", ON),
                Column(f"{OFF} Redis µs/request", OFF, redis_us),
                Column(f"{ON} Redis µs/request", ON, redis_us),
            ],
            (ON, OFF),
        ),
    )


if __name__ == "__main__":
    sys.exit(comparison.main(__doc__, measure, report))
