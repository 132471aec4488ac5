"""Cost of toll_fraud: the same calls out, with the module off and on.

Three labs, all running for the whole measurement (bench.labs): the SBC with
validation alone (``sipshield-validation``), the same with cancel_guard
(``sipshield-relay-phase``: the relay phase runs on every request, as with any
relay module, and judges nothing here), and the same with toll_fraud in
enforce mode (``sipshield-toll-fraud``: the relay phase, and every INVITE that
leaves for a trunk classified by phonenumbers and admitted by one Lua script
in Redis; the dialog module's answer and the BYE end the count).  The
workload: alice calls a UK number, which the lab PBX sends back out through
the SBC to the lab's carrier, which answers:
  call out  INVITE, 407, ACK, INVITE, ACK, BYE from alice; INVITE, ACK, BYE
            from the PBX to the carrier: 8 requests, one INVITE judged
Redis's CPU is reported apart: the admission and the end run there.  The
method is bench/run.py's (bench.cost).  For bench/run.py: ``measure(quick)``
and ``report(result)``.  Alone: python -m bench.toll_fraud_bench [--quick]
[--rounds N]
"""

from __future__ import annotations

import sys

from bench import feature_comparison as comparison
from bench.cost import CostSample
from bench.feature_comparison import ComparisonResult
from bench.report import redis_us, sbc_us
from bench.workloads import Flow

OFF, RELAY, ON = "sipshield-validation", "sipshield-relay-phase", "sipshield-toll-fraud"
TARGETS = comparison.sipshield_targets(
    {
        OFF: "validation; toll_fraud off",
        RELAY: "validation, cancel_guard (the relay phase); toll_fraud off",
        ON: "validation; toll_fraud on (one Lua admission per call out)",
    }
)
CALL_OUT = Flow("call out", "call_uac", 8, authenticated=True, number="+442071234567")
# Per call: the SBC's µs per request times the requests of a call.
PER_CALL = CALL_OUT.requests


def measure(quick: bool = False, rounds: int | None = None) -> ComparisonResult:
    plan = comparison.plan(quick, rounds)
    loads = {CALL_OUT.name: plan.loads["call"]}
    return comparison.measure_labs(TARGETS, (CALL_OUT,), loads, plan)


def _per_call(sample: CostSample) -> float | None:
    us = sample.us_per_request
    return None if us is None else us * PER_CALL


def report(result: ComparisonResult) -> str:
    return comparison.section(
        result,
        "Toll fraud: the same calls out, toll_fraud off and on",
        f"The three labs running together, SBC on core 0, {result.plan.rounds} interleaved"
        " rounds, median (min-max) of the SBC's CPU µs per handled request and per call"
        f" out ({PER_CALL} requests, one INVITE judged), and Redis's apart.",
        comparison.by_configuration(
            result,
            {
                "SBC µs/request": sbc_us,
                "SBC µs/call": _per_call,
                "Redis µs/request": redis_us,
            },
        ),
        f"SBC µs/request, {ON} ÷ {OFF}: {result.ratio(ON, OFF)};"
        f" {ON} ÷ {RELAY}: {result.ratio(ON, RELAY)}.",
    )


if __name__ == "__main__":
    sys.exit(comparison.main(__doc__, measure, report))
