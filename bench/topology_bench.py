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
python -m bench.topology_bench [--quick]
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
from bench.workloads import LAB_FLOWS, Flow

OFF, ON = "sipshield-validation", "sipshield-topology-hiding"
TARGETS = {
    name: Target(name, POLICIES / f"{name}.yaml", None, summary)
    for name, summary in (
        (OFF, "validation; topology hiding off"),
        (ON, "validation; topology hiding on (topos, records in Redis)"),
    )
}
# The callee rings (half a second, SIPp's -d) before it answers.  A SIPp caller
# aborts a call when a 180 arrives after the 200, and a 180 and a 200 sent
# together by the PBX can leave the SBC in the other order (two workers, each
# reply costing topos a Redis round trip); SIP allows it and phones ignore the
# late 180, so both labs run this flow, with the same requests as bench.workloads'.
REGISTER = next(flow for flow in LAB_FLOWS if flow.name == "register")
CALL = Flow("call", "call_uac", 8, authenticated=True, answered=True, callee="call_uas_ringing")
FLOWS = (REGISTER, CALL)


@dataclass
class TopologyResult:
    plan: Plan
    samples: list[CostSample]

    def of(self, name: str, workload: str) -> list[CostSample]:
        return [s for s in self.samples if s.target == name and s.workload == workload]

    def as_json(self) -> dict:
        return {"rounds": self.plan.rounds, "samples": [s.as_json() for s in self.samples]}


def measure(quick: bool = False) -> TopologyResult:
    plan = QUICK if quick else FULL
    with labs.running({name: (target, False) for name, target in TARGETS.items()}) as running:
        systems = [running[name] for name in TARGETS]
        loads = {flow.name: plan.loads[flow.name] for flow in FLOWS}
        samples = interleaved(systems, FLOWS, loads, plan.rounds)
    return TopologyResult(plan, samples)


def report(result: TopologyResult) -> str:
    lines = [
        "## Topology hiding: the same flows, hiding off and on",
        "",
        f"Both labs running together, SBC on core 0, {result.plan.rounds} interleaved"
        " rounds, median (min-max) of the SBC's CPU µs per handled request, and"
        " Redis's apart (topos keeps its records there); requests per flow: "
        + ", ".join(f"{f.name} {f.requests}" for f in FLOWS)
        + ".",
        "",
        f"| workload | {OFF} µs/request | {ON} µs/request"
        f" | {OFF} Redis µs/request | {ON} Redis µs/request | {ON} ÷ {OFF} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for flow in FLOWS:
        off, on = result.of(OFF, flow.name), result.of(ON, flow.name)
        lines.append(
            f"| {flow.name} | {summary_cell(off, sbc_us)} | {summary_cell(on, sbc_us)}"
            f" | {summary_cell(off, redis_us)} | {summary_cell(on, redis_us)}"
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
