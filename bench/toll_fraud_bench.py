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
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from bench import labs
from bench.cost import CostSample, interleaved
from bench.plan import FULL, QUICK, Plan
from bench.report import redis_us, run_cell, sbc_us, spread_of, summary_cell
from bench.stats import ratio_text
from bench.targets import POLICIES, Target
from bench.workloads import Flow

OFF, RELAY, ON = "sipshield-validation", "sipshield-relay-phase", "sipshield-toll-fraud"
TARGETS = {
    name: Target(name, POLICIES / f"{name}.yaml", None, summary)
    for name, summary in (
        (OFF, "validation; toll_fraud off"),
        (RELAY, "validation, cancel_guard (the relay phase); toll_fraud off"),
        (ON, "validation; toll_fraud on (one Lua admission per call out)"),
    )
}
CALL_OUT = Flow("call out", "call_uac", 8, authenticated=True, number="+442071234567")
# Per call: the SBC's µs per request times the requests of a call.
PER_CALL = CALL_OUT.requests


@dataclass
class TollFraudResult:
    plan: Plan
    samples: list[CostSample]

    def of(self, name: str) -> list[CostSample]:
        return [s for s in self.samples if s.target == name]

    def as_json(self) -> dict:
        return {"rounds": self.plan.rounds, "samples": [s.as_json() for s in self.samples]}


def measure(quick: bool = False) -> TollFraudResult:
    plan = QUICK if quick else FULL
    with labs.running({name: (target, False) for name, target in TARGETS.items()}) as running:
        systems = [running[name] for name in TARGETS]
        samples = interleaved(
            systems, (CALL_OUT,), {CALL_OUT.name: plan.loads["call"]}, plan.rounds
        )
    return TollFraudResult(plan, samples)


def _per_call(sample: CostSample) -> float | None:
    us = sample.us_per_request
    return None if us is None else us * PER_CALL


def report(result: TollFraudResult) -> str:
    off, relay, on = result.of(OFF), result.of(RELAY), result.of(ON)
    lines = [
        "## Toll fraud: the same calls out, toll_fraud off and on",
        "",
        f"The three labs running together, SBC on core 0, {result.plan.rounds} interleaved"
        " rounds, median (min-max) of the SBC's CPU µs per handled request and per call"
        f" out ({PER_CALL} requests, one INVITE judged), and Redis's apart.",
        "",
        "| configuration | SBC µs/request | SBC µs/call | Redis µs/request |",
        "|---|---:|---:|---:|",
    ]
    for name, samples in ((OFF, off), (RELAY, relay), (ON, on)):
        lines.append(
            f"| {name} | {summary_cell(samples, sbc_us)}"
            f" | {summary_cell(samples, _per_call)} | {summary_cell(samples, redis_us)} |"
        )
    lines += [
        "",
        f"SBC µs/request, {ON} ÷ {OFF}: "
        + ratio_text(spread_of(on, sbc_us), spread_of(off, sbc_us))
        + f"; {ON} ÷ {RELAY}: "
        + ratio_text(spread_of(on, sbc_us), spread_of(relay, sbc_us))
        + ".",
    ]
    rounds = range(1, result.plan.rounds + 1)
    lines += [
        "",
        "| configuration | " + " | ".join(f"round {r}" for r in rounds) + " |",
        "|---|" + "---:|" * len(rounds),
    ]
    for name in TARGETS:
        by_round = {s.round: run_cell(s) for s in result.of(name)}
        lines.append(f"| {name} | " + " | ".join(by_round.get(r, "") for r in rounds) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loads")
    args = parser.parse_args()
    print(report(measure(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
