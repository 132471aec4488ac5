"""A feature's cost: the same flows on configurations that differ by it, side by side.

What the feature parts of ``make bench`` (content, metrics, topology,
toll_fraud, the drop-in) share: every configuration running for the whole
measurement, interleaved rounds of bench.cost, and a report section of a
summary table (median (min-max) and ratios that respect the spread) followed
by every round.  Each part keeps what is its own: its configurations, flows,
loads, title, introduction and the columns it needs.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import labs
from bench.cost import CostSample, Measured, interleaved
from bench.plan import FULL, QUICK, Plan
from bench.report import round_table, sbc_us, spread_of, summary_cell
from bench.stats import ratio_text
from bench.targets import POLICIES, Target
from bench.workloads import Flow

Value = Callable[[CostSample], float | None]
Loads = Mapping[str, tuple[int, float]]


def plan(quick: bool, rounds: int | None = None) -> Plan:
    """The run's plan; ``rounds`` only to check a part runs (make bench keeps the plan's)."""
    chosen = QUICK if quick else FULL
    return chosen if rounds is None else dataclasses.replace(chosen, rounds=rounds)


def sipshield_targets(summaries: Mapping[str, str]) -> dict[str, Target]:
    """sipshield's kamailio.cfg with bench/policies/NAME.yaml, per name and its summary."""
    return {
        name: Target(name, POLICIES / f"{name}.yaml", None, summary)
        for name, summary in summaries.items()
    }


@dataclass
class ComparisonResult:
    plan: Plan
    # In the order they were started: the rows of every table.
    configurations: list[str]
    workloads: list[str]
    loads: dict[str, tuple[int, float]]
    samples: list[CostSample]
    # What a part adds to its report.json entry.
    extra_json: dict[str, Any] = field(default_factory=dict)

    def of(self, configuration: str, workload: str | None = None) -> list[CostSample]:
        return [
            s
            for s in self.samples
            if s.target == configuration and (workload is None or s.workload == workload)
        ]

    def ratio(self, a: str, b: str, workload: str | None = None) -> str:
        """a ÷ b of the SBC's µs per request, or "no difference" where the spreads overlap."""
        return ratio_text(
            spread_of(self.of(a, workload), sbc_us), spread_of(self.of(b, workload), sbc_us)
        )

    def as_json(self) -> dict:
        return {
            **self.extra_json,
            "rounds": self.plan.rounds,
            "loads": self.loads,
            "samples": [s.as_json() for s in self.samples],
        }


def measure_systems(
    systems: Sequence[Measured], flows: Sequence[Flow], loads: Loads, plan: Plan
) -> ComparisonResult:
    """Interleaved rounds over systems already running (and pinned)."""
    samples = interleaved(systems, flows, loads, plan.rounds)
    return ComparisonResult(
        plan, [s.name for s in systems], [f.name for f in flows], dict(loads), samples
    )


def measure_labs(
    targets: Mapping[str, Target],
    flows: Sequence[Flow],
    loads: Loads,
    plan: Plan,
    metrics: Collection[str] = (),
) -> ComparisonResult:
    """One lab per name, all up together (``metrics``: the names with the metrics listener)."""
    wanted = {name: (target, False) for name, target in targets.items()}
    with labs.running(wanted, metrics=metrics) as running:
        return measure_systems([running[name] for name in targets], flows, loads, plan)


@dataclass(frozen=True)
class Column:
    """One column of the summary table: a configuration's median (min-max) of a value."""

    header: str
    configuration: str
    value: Value = sbc_us


def by_workload(
    result: ComparisonResult, columns: Sequence[Column], ratio: tuple[str, str]
) -> list[str]:
    """A row per workload: the columns, then ratio[0] ÷ ratio[1] of the SBC's µs."""
    a, b = ratio
    lines = [
        "| workload | " + " | ".join(c.header for c in columns) + f" | {a} ÷ {b} |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for workload in result.workloads:
        cells = [summary_cell(result.of(c.configuration, workload), c.value) for c in columns]
        lines.append(
            f"| {workload} | " + " | ".join(cells) + f" | {result.ratio(a, b, workload)} |"
        )
    return lines


def by_configuration(result: ComparisonResult, columns: Mapping[str, Value]) -> list[str]:
    """A row per configuration over all its runs (one workload): header -> value."""
    lines = [
        "| configuration | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in result.configurations:
        samples = result.of(name)
        cells = [summary_cell(samples, value) for value in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def requests_per_flow(flows: Sequence[Flow]) -> str:
    return ", ".join(f"{f.name} {f.requests}" for f in flows)


def section(result: ComparisonResult, title: str, *blocks: str | list[str]) -> str:
    """``## title``, the part's blocks (paragraphs, tables), then every round's run."""
    lines = [f"## {title}"]
    for block in blocks:
        lines += ["", *([block] if isinstance(block, str) else block)]
    lines += [
        "",
        *round_table(
            result.samples,
            result.configurations,
            result.workloads,
            result.plan.rounds,
            # One workload needs no column of its own.
            workload_column=len(result.workloads) > 1,
        ),
    ]
    return "\n".join(lines) + "\n"


def main(
    doc: str,
    measure: Callable[[bool, int | None], ComparisonResult],
    report: Callable[[ComparisonResult], str],
) -> int:
    """A part run alone: python -m bench.PART [--quick] [--rounds N]."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loads")
    parser.add_argument(
        "--rounds", type=int, help="fewer rounds than the plan's, to check the part runs"
    )
    args = parser.parse_args()
    print(report(measure(args.quick, args.rounds)))
    return 0
