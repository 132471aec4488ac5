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
repository: python -m bench.metrics_bench [--quick] [--rounds N]
"""

from __future__ import annotations

import sys

from bench import feature_comparison as comparison
from bench.feature_comparison import Column, ComparisonResult
from bench.targets import TARGETS
from bench.workloads import LAB_FLOWS

TARGET = "sipshield-protection"
WITHOUT, WITH = "without metrics", "with metrics"


def measure(quick: bool = False, rounds: int | None = None) -> ComparisonResult:
    plan = comparison.plan(quick, rounds)
    same = {WITHOUT: TARGETS[TARGET], WITH: TARGETS[TARGET]}
    result = comparison.measure_labs(same, LAB_FLOWS, plan.loads, plan, metrics={WITH})
    result.extra_json["target"] = TARGET
    return result


def report(result: ComparisonResult) -> str:
    return comparison.section(
        result,
        "Prometheus metrics: the same lab with and without them",
        f"{TARGET} ({TARGETS[TARGET].summary}), its lab run twice side by side, once with"
        " the metrics listener (docs/metrics.md).  Measured as above: SBCs on core 0,"
        f" {result.plan.rounds} interleaved rounds, median (min-max) of the SBC's CPU µs per"
        " handled request; requests per call: " + comparison.requests_per_flow(LAB_FLOWS) + ".",
        comparison.by_workload(
            result,
            [Column(f"{WITHOUT} µs/request", WITHOUT), Column(f"{WITH} µs/request", WITH)],
            (WITH, WITHOUT),
        ),
    )


if __name__ == "__main__":
    sys.exit(comparison.main(__doc__, measure, report))
