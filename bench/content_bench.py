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
python -m bench.content_bench [--quick]
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

OFF, ON = "sipshield-validation", "sipshield-content"
TARGETS = {
    name: Target(name, POLICIES / f"{name}.yaml", None, summary)
    for name, summary in (
        (OFF, "validation; the content modules off"),
        (ON, "validation and the seven content modules, enforced"),
    )
}
FLOWS = (
    Flow("message", "message_uac", 3, authenticated=True, answered=True, callee="message_uas"),
    Flow("notify", "notify_uac", 2, answered=True, callee="notify_uas"),
)
# Calls and rate per run: as the cost runs of bench.plan, far below capacity.
LOADS = {"message": (400, 200), "notify": (400, 200)}
QUICK_LOADS = {"message": (60, 200), "notify": (60, 200)}


@dataclass
class ContentResult:
    plan: Plan
    samples: list[CostSample]

    def of(self, name: str, workload: str) -> list[CostSample]:
        return [s for s in self.samples if s.target == name and s.workload == workload]

    def as_json(self) -> dict:
        return {"rounds": self.plan.rounds, "samples": [s.as_json() for s in self.samples]}


def measure(quick: bool = False) -> ContentResult:
    plan = QUICK if quick else FULL
    with labs.running({name: (target, False) for name, target in TARGETS.items()}) as running:
        systems = [running[name] for name in TARGETS]
        samples = interleaved(systems, FLOWS, QUICK_LOADS if quick else LOADS, plan.rounds)
    return ContentResult(plan, samples)


def report(result: ContentResult) -> str:
    lines = [
        "## Content inspection: MESSAGE and NOTIFY, content modules off and on",
        "",
        f"Both labs running together, SBC on core 0, {result.plan.rounds} interleaved"
        " rounds, median (min-max) of the SBC's CPU µs per handled request (Redis"
        " apart: spit counts each MESSAGE there); requests per flow: "
        + ", ".join(f"{f.name} {f.requests}" for f in FLOWS)
        + ".",
        "",
        f"| workload | {OFF} µs/request | {ON} µs/request | {ON} Redis µs/request | {ON} ÷ {OFF} |",
        "|---|---:|---:|---:|---:|",
    ]
    for flow in FLOWS:
        off, on = result.of(OFF, flow.name), result.of(ON, flow.name)
        lines.append(
            f"| {flow.name} | {summary_cell(off, sbc_us)} | {summary_cell(on, sbc_us)}"
            f" | {summary_cell(on, redis_us)}"
            f" | {ratio_text(spread_of(on, sbc_us), spread_of(off, sbc_us))} |"
        )
    rounds = range(1, result.plan.rounds + 1)
    lines += [
        "",
        "| configuration | workload | " + " | ".join(f"round {r}" for r in rounds) + " |",
        "|---|---|" + "---:|" * len(rounds),
    ]
    for name in TARGETS:
        for flow in FLOWS:
            by_round = {s.round: run_cell(s) for s in result.of(name, flow.name)}
            cells = [by_round.get(r, "") for r in rounds]
            lines.append(f"| {name} | {flow.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loads")
    args = parser.parse_args()
    print(report(measure(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
