"""Cost of the Prometheus metrics: the same sipshield lab with and without them.

Two labs of the signalling-protection configuration (sipshield-protection),
both running for the whole measurement, differing only in the metrics
listener (``METRICS``): with it, every screened request adds a counter and a
histogram update in xhttp_prom, every event a counter, every ng command a
histogram, and the timer process measures Redis and the bans once a second.

The method is bench/run.py's (bench.cost): SBCs pinned to core 0, the rest
to core 1; CPU time of every SBC process per handled request; interleaved
rounds, median and spread.  A Prometheus scrape is not part of the load.
For bench/run.py: ``measure(quick)`` and ``report(result)``.  Alone, from the
repository: python -m bench.metrics_bench [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import labs
from bench.cost import CostSample, interleaved
from bench.cpu import placement
from bench.plan import FULL, QUICK, Plan
from bench.report import run_cell, sbc_us, spread_of, summary_cell
from bench.stats import ratio_text
from bench.targets import TARGETS
from bench.workloads import LAB_FLOWS

TARGET = "sipshield-protection"
WITHOUT, WITH = "without metrics", "with metrics"


@dataclass
class MetricsResult:
    plan: Plan
    samples: list[CostSample]

    def of(self, name: str, workload: str) -> list[CostSample]:
        return [s for s in self.samples if s.target == name and s.workload == workload]

    def as_json(self) -> dict:
        return {
            "target": TARGET,
            "rounds": self.plan.rounds,
            "loads": self.plan.loads,
            "samples": [s.as_json() for s in self.samples],
        }


def measure(quick: bool = False) -> MetricsResult:
    plan = QUICK if quick else FULL
    target = TARGETS[TARGET]
    with (
        tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp,
        contextlib.ExitStack() as stop,
    ):
        systems = []
        for name, metrics in ((WITHOUT, False), (WITH, True)):
            print(f"lab up: {TARGET} {name}", flush=True)
            directory = Path(tmp) / ("metrics" if metrics else "plain")
            lab = labs.up(name, target, directory, metrics=metrics)
            stop.callback(labs.down, lab)
            systems.append(lab)
        with placement(
            [lab.sbc_pgid for lab in systems], [p for lab in systems for p in lab.load_pgids]
        ):
            samples = interleaved(systems, LAB_FLOWS, plan.loads, plan.rounds)
    return MetricsResult(plan, samples)


def report(result: MetricsResult) -> str:
    lines = [
        "## Prometheus metrics: the same lab with and without them",
        "",
        f"{TARGET} ({TARGETS[TARGET].summary}), its lab run twice side by side, once with"
        " the metrics listener (docs/metrics.md).  Measured as above: SBCs on core 0,"
        f" {result.plan.rounds} interleaved rounds, median (min-max) of the SBC's CPU µs per"
        " handled request; requests per call: "
        + ", ".join(f"{f.name} {f.requests}" for f in LAB_FLOWS)
        + ".",
        "",
        f"| workload | {WITHOUT} µs/request | {WITH} µs/request | {WITH} ÷ {WITHOUT} |",
        "|---|---:|---:|---:|",
    ]
    for flow in LAB_FLOWS:
        plain, counted = result.of(WITHOUT, flow.name), result.of(WITH, flow.name)
        lines.append(
            f"| {flow.name} | {summary_cell(plain, sbc_us)} | {summary_cell(counted, sbc_us)}"
            f" | {ratio_text(spread_of(counted, sbc_us), spread_of(plain, sbc_us))} |"
        )
    rounds = range(1, result.plan.rounds + 1)
    lines += [
        "",
        "| configuration | workload | " + " | ".join(f"round {r}" for r in rounds) + " |",
        "|---|---|" + "---:|" * len(rounds),
    ]
    for name in (WITHOUT, WITH):
        for flow in LAB_FLOWS:
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
