"""Benchmark sipshield against native Kamailio and the Python floor, in one run.

Configurations (bench.targets), each a full lab, all up for the whole run:
  native-minimal    Kamailio answering OPTIONS with maxfwd + sanity_check +
                    sl_send_reply, relaying the rest plainly (the native floor)
  python-floor      a KEMI script that only replies to OPTIONS and relays the
                    rest with no check (the cost of Python itself)
  native-reference  sipshield's routing in Kamailio's language, with sanity_check
  native-protection the same with Kamailio's own flood, ban and scanner defences
  sipshield-*       sipshield's kamailio.cfg with the policies in bench/policies/

Workloads (SIPp, bench.workloads): options, register, call.

Measured (the method is in REPORT.md's first paragraph):
  cost      SBC CPU µs per handled request (and Redis's), interleaved rounds;
  capacity  stepped rates with the SBC alone on core 0 (bench.capacity);
  stages    µs per sipshield module from a lab with SIPSHIELD_STAGE_TIMES;
  and the drop-in, kernel-flood and media sections from their own modules.

Writes bench/REPORT.md and bench/report.json.  From the repository:
  python -m bench.run [--quick] [--only PARTS]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    capacity,
    content_bench,
    cost,
    kernel_flood,
    labs,
    media_bench,
    metrics_bench,
    report,
    stock_dropin,
    toll_fraud_bench,
    topology_bench,
)
from bench.plan import FULL, QUICK, Plan
from bench.stage_times import StageRecorder
from bench.targets import (
    CAPACITY,
    COMPARISONS,
    FLOORS,
    STAGE_LAB,
    STAGE_TIMED,
    TARGETS,
    Comparison,
    Target,
)
from bench.workloads import LAB_FLOWS
from tests.support.netns import NamespacesRefused

BENCH = Path(__file__).resolve().parent
# How long every lab's idle CPU is watched before the rounds.
IDLE_SECONDS = 2.0
PARTS_HELP = (
    "comma-separated parts: comparison numbers (1-based: "
    + "; ".join(f"{n} {c.ours}" for n, c in enumerate(COMPARISONS, 1))
    + "; the floors always run with them), 'capacity', 'stages', 'dropin', 'kernel',"
    " 'media', 'content', 'metrics', 'topology', 'toll_fraud'; default all"
)


def cost_targets(comparisons: list[Comparison]) -> list[str]:
    """The floors, then each comparison's native equivalent and sipshield configuration."""
    names: list[str] = list(FLOORS) if comparisons else []
    for comparison in comparisons:
        names += [n for n in (comparison.native, comparison.ours) if n not in names]
    return names


def _labs_wanted(
    names: list[str], with_capacity: bool, with_stages: bool
) -> dict[str, tuple[Target, bool]]:
    """Every lab the parts asked for: name -> (configuration, whether it writes stage times)."""
    wanted = {name: (TARGETS[name], False) for name in names}
    if with_capacity:
        wanted |= {n: (TARGETS[n], False) for group in CAPACITY.values() for n in group}
    if with_stages:
        wanted[STAGE_LAB] = (TARGETS[STAGE_TIMED], True)
    return wanted


def _stage_recorder(running: dict[str, labs.BenchLab]) -> StageRecorder:
    staged = running[STAGE_LAB]
    if staged.stage_dir is None:
        raise RuntimeError(f"{STAGE_LAB} was started without a stage-times directory")
    recorder = StageRecorder(STAGE_LAB, staged.endpoint, staged.stage_dir)
    if not recorder.written:
        print("  stage times: the runtime wrote no file", flush=True)
    return recorder


def measure_labs(
    plan: Plan, quick: bool, comparisons: list[Comparison], with_capacity: bool, with_stages: bool
) -> report.Results:
    names = cost_targets(comparisons) + ([STAGE_LAB] if with_stages else [])
    results = report.Results(plan, quick, names, comparisons)
    wanted = _labs_wanted(cost_targets(comparisons), with_capacity, with_stages)
    if not wanted:
        return results
    with labs.running(wanted) as running:
        systems = [running[name] for name in names]
        if systems:
            # Before anything is sent: the stage recorder's first burst is load too.
            results.idle = cost.idle(systems, IDLE_SECONDS)
        recorder = _stage_recorder(running) if with_stages else None
        if systems:
            print(f"cost: {plan.rounds} interleaved rounds", flush=True)
            after_run = recorder.after_run if recorder is not None else None
            results.cost = cost.interleaved(systems, LAB_FLOWS, plan.loads, plan.rounds, after_run)
        if recorder is not None:
            results.stages, results.stages_written = recorder.samples, recorder.written
        if with_capacity:
            for flow in (f for f in LAB_FLOWS if f.name in CAPACITY):
                print(f"capacity: {flow.name}", flush=True)
                results.capacity += capacity.measure(
                    [running[name] for name in CAPACITY[flow.name]],
                    flow,
                    plan.capacity_start[flow.name],
                    plan.step_seconds,
                    plan.max_steps,
                )
    return results


def _extras(quick: bool) -> dict[str, tuple[str, Callable[[], tuple[str, Any]]]]:
    """The sections other modules measure and write: part -> (title, run -> (markdown, data))."""

    def dropin() -> tuple[str, Any]:
        result = stock_dropin.measure(quick)
        return stock_dropin.report(result), result.as_json()

    def kernel() -> tuple[str, Any]:
        result = kernel_flood.measure(quick=quick)
        return "\n".join(kernel_flood.report_lines(result)), result

    def content() -> tuple[str, Any]:
        result = content_bench.measure(quick)
        return content_bench.report(result), result.as_json()

    def metrics() -> tuple[str, Any]:
        result = metrics_bench.measure(quick)
        return metrics_bench.report(result), result.as_json()

    def topology() -> tuple[str, Any]:
        result = topology_bench.measure(quick)
        return topology_bench.report(result), result.as_json()

    def toll_fraud() -> tuple[str, Any]:
        result = toll_fraud_bench.measure(quick)
        return toll_fraud_bench.report(result), result.as_json()

    def media() -> tuple[str, Any]:
        result = media_bench.measure(quick)
        return "\n".join(media_bench.report_lines(result)), result

    return {
        "dropin": ("the stock configuration with and without the drop-in", dropin),
        "kernel": ("a banned flood, kernel enforcement off and on", kernel),
        "media": ("SRTP call setup and rtpengine capacity", media),
        "content": ("content inspection of MESSAGE and NOTIFY", content),
        "metrics": ("the Prometheus metrics, off and on", metrics),
        "topology": ("topology hiding, off and on", topology),
        "toll_fraud": ("toll-fraud limits on calls out, off and on", toll_fraud),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loads, fewer capacity steps")
    parser.add_argument("--only", help=PARTS_HELP)
    args = parser.parse_args()
    parts = set(args.only.split(",")) if args.only else None
    known = {str(n) for n in range(1, len(COMPARISONS) + 1)} | {
        "capacity",
        "stages",
        *_extras(args.quick),
    }
    if parts is not None and not parts <= known:
        parser.error(f"unknown parts {', '.join(sorted(parts - known))}; {PARTS_HELP}")

    def wants(part: str) -> bool:
        return parts is None or part in parts

    comparisons = [c for n, c in enumerate(COMPARISONS, 1) if wants(str(n))]
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    results = measure_labs(plan, args.quick, comparisons, wants("capacity"), wants("stages"))
    print(f"labs measured in {time.monotonic() - started:.0f} s", flush=True)
    sections = [report.markdown(results)]
    data: dict[str, Any] = report.as_json(results)
    failed = 0
    for part, (title, run) in _extras(args.quick).items():
        if not wants(part):
            continue
        print(f"benchmarking {title} ...", flush=True)
        started = time.monotonic()
        try:
            text, data[part] = run()
            sections.append(text)
            print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
        except NamespacesRefused as exc:
            sections.append(f"## {title}\n\nNot measured: {exc}\n")
        except Exception as exc:  # one broken part must not lose the others
            failed += 1
            sections.append(f"## {title}\n\nNot measured: the run failed: {exc}\n")
            print(f"  {title} failed: {exc}", flush=True)
    text = "\n".join(section.rstrip() + "\n" for section in sections)
    (BENCH / "REPORT.md").write_text(text)
    (BENCH / "report.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
