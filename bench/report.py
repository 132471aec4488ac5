"""bench/REPORT.md's main section and bench/report.json, from one run's measurements."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from bench.capacity import FACTOR, LOAD_SIDE_SHARE, P99_LIMIT_MS, Capacity
from bench.cost import CostSample, Idle
from bench.plan import Plan
from bench.stage_times import BURST_CALLS, StageSample
from bench.stats import Spread, ratio, ratio_text
from bench.targets import CAPACITY_RATIOS, FLOORS, STAGE_LAB, STAGE_TIMED, TARGETS, Comparison
from bench.workloads import LAB_FLOWS

WORKLOADS = [f.name for f in LAB_FLOWS]
REQUESTS = ", ".join(f"{f.name} {f.requests}" for f in LAB_FLOWS)

# Where native-reference.cfg still differs from sipshield's routing.
ROUTING_DIFFERENCES = (
    "sipshield routes a request for a trunk's domain through that trunk; the native"
    " configurations answer 404 (the benchmark's policies have no trunks and the flows"
    " never ask for one).",
    "sipshield's SBC also listens on TLS; the native ones and the Python floor listen on"
    " UDP and TCP only (no request of the benchmark uses TLS).",
    "sipshield's kamailio.cfg loads htable and rtimer for flood's shared counts: a timer"
    " process runs Python every 200 ms, and its CPU time is part of sipshield's cost.",
    "sipshield builds its message view and runs a relay phase before each relay; the"
    " native route reads what it needs where it needs it.",
    "sanity_check stands in for validation in every native configuration; the Python"
    " floor checks nothing.",
)


@dataclass
class Results:
    plan: Plan
    quick: bool
    # The configurations of the cost rounds, in their order (the stage lab last).
    targets: list[str]
    comparisons: list[Comparison]
    cost: list[CostSample] = field(default_factory=list)
    idle: dict[str, Idle] = field(default_factory=dict)
    capacity: list[Capacity] = field(default_factory=list)
    # None: not run.  Empty with stages_written False: the runtime wrote no file.
    stages: list[StageSample] | None = None
    stages_written: bool = False
    started: float = field(default_factory=time.time)


def _samples(results: Results, target: str, workload: str) -> list[CostSample]:
    return [s for s in results.cost if s.target == target and s.workload == workload]


def spread_of(
    samples: list[CostSample], value: Callable[[CostSample], float | None]
) -> Spread | None:
    return Spread.of(v for s in samples if (v := value(s)) is not None)


def sbc_us(sample: CostSample) -> float | None:
    return sample.us_per_request


def redis_us(sample: CostSample) -> float | None:
    return sample.redis_us_per_request


def cost_spread(results: Results, target: str, workload: str) -> Spread | None:
    return spread_of(_samples(results, target, workload), sbc_us)


def summary_cell(samples: list[CostSample], value: Callable[[CostSample], float | None]) -> str:
    """Median (min-max) over the clean runs, and how many failed."""
    if not samples:
        return "not run"
    spread = spread_of(samples, value)
    if spread is None:
        return f"all {len(samples)} runs failed"
    failed = sum(not s.clean for s in samples)
    return spread.text() + (f"; {failed} of {len(samples)} runs failed" if failed else "")


def run_cell(sample: CostSample) -> str:
    """One run: its cost (and Redis's), or its failures."""
    if not sample.clean:
        return f"{sample.failed or sample.calls - sample.successful} failed"
    text = f"{sample.us_per_request:.0f}"
    if sample.redis_us_per_request is not None:
        text += f" (+{sample.redis_us_per_request:.0f})"
    return text


def _cell(results: Results, target: str, workload: str, redis: bool = False) -> str:
    if redis and not TARGETS[target].uses_redis:
        return "—"
    return summary_cell(_samples(results, target, workload), redis_us if redis else sbc_us)


def _first_line(argv: list[str], fallback: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    return out.splitlines()[0].strip() if out else fallback


def _machine() -> str:
    model = platform.machine()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    kamailio = _first_line(["kamailio", "-v"], "kamailio").removeprefix("version: ").strip()
    sipp = _first_line(["sipp", "-v"], "SIPp").rstrip(".")
    return f"{os.cpu_count()} cores ({model}), {kamailio}, {sipp}"


def _method(results: Results) -> list[str]:
    plan = results.plan
    loads = ", ".join(f"{w} {c} calls at {r:.0f}/s" for w, (c, r) in plan.loads.items())
    return [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(results.started))}"
        f" by `make bench`{' (quick mode)' if results.quick else ''}, on {_machine()}.",
        "",
        "**Method.** Every configuration is a full lab on loopback (SBC with 2 UDP workers,"
        " PBX, Redis, rtpengine), all up for the whole run; only the SBC differs.  The SBC's"
        " processes are pinned to core 0, everything else (SIPp, PBX, Redis, rtpengine, this"
        " harness) to core 1.  *Cost*: CPU time of every SBC Kamailio process (each thread's"
        f" /proc/PID/task/TID/schedstat, ns) over a fixed load ({loads}), divided by the"
        " requests the SBC handled: SIPp's successful calls times the requests per call"
        f" ({REQUESTS}); *Redis µs/request* is the lab's redis-server over the same window."
        f"  {plan.rounds} interleaved rounds, each running every workload on every"
        " configuration (each round starting one configuration further along); a figure is"
        " the median (min-max) of the rounds.  *Capacity*: offered"
        f" rates stepped up by at most {FACTOR}x, {plan.step_seconds:g} s each; achieved rate"
        " = SIPp's successful calls over the run's wall time, p50/p99 from SIPp's own rtd"
        " timers; the capacity is the highest achieved rate of a step with no failure and a"
        f" p99 under {P99_LIMIT_MS:.0f} ms.",
        "",
        "A ratio is the ratio of the medians with the range the spreads allow, or *no"
        " difference* when the two spreads overlap.  A run with any failed call has no cost:"
        " it shows as *N failed* and stays out of the medians.",
        "",
    ]


def _floors(results: Results) -> list[str]:
    natives = [t for t in results.targets if t in TARGETS and not TARGETS[t].uses_redis]
    lines = [
        "## Floors and native references (SBC CPU µs per request)",
        "",
        "| workload | " + " | ".join(natives) + " |",
        "|---|" + "---:|" * len(natives),
    ]
    for workload in WORKLOADS:
        cells = [_cell(results, t, workload) for t in natives]
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return lines + [""] + [f"- {t}: {TARGETS[t].summary}." for t in natives] + [""]


def _comparison(results: Results, number: int, comparison: Comparison) -> list[str]:
    ours, native = comparison.ours, comparison.native
    lines = [
        f"## {number}. {comparison.title}: {ours} vs {native}",
        "",
        f"{ours}: {TARGETS[ours].summary}.",
        "",
        f"| workload | {ours} µs/request | Redis µs/request | {native} µs/request"
        f" | ÷ {FLOORS[0]} | ÷ {FLOORS[1]} | ÷ {native} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for workload in WORKLOADS:
        a = cost_spread(results, ours, workload)
        ratios = [ratio_text(a, cost_spread(results, t, workload)) for t in (*FLOORS, native)]
        lines.append(
            f"| {workload} | {_cell(results, ours, workload)}"
            f" | {_cell(results, ours, workload, redis=True)}"
            f" | {_cell(results, native, workload)} | " + " | ".join(ratios) + " |"
        )
    return lines + [""]


def _idle(results: Results) -> list[str]:
    if not results.idle:
        return []
    lines = [
        "## Idle CPU (no load, ms of CPU per second)",
        "",
        "| configuration | SBC | Redis |",
        "|---|---:|---:|",
    ]
    for name, idle in results.idle.items():
        redis = f"{idle.redis_ms_per_s:.2f}" if idle.redis_ms_per_s is not None else "—"
        lines.append(f"| {name} | {idle.sbc_ms_per_s:.2f} | {redis} |")
    # A run at R calls/s of a flow of N requests adds 1 ms/s / (R x N) per request.
    added = ", ".join(
        f"{f.name} {1000 / (results.plan.loads[f.name][1] * f.requests):.1f} µs" for f in LAB_FLOWS
    )
    return lines + [
        "",
        "Every lab watched together for a few seconds before the rounds, with no load.  This"
        " much is in every run's figure whatever the load: at the cost runs' rates, each ms/s"
        f" of idle use adds to every request {added}.",
        "",
    ]


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f} ms"


def _capacity(results: Results) -> list[str]:
    if not results.capacity:
        return []
    lines = [
        "## Capacity (calls per second, the SBC alone on core 0)",
        "",
        "| workload | configuration | capacity (/s) | SBC core / load core at capacity"
        " | p50 / p99 at capacity | last step offered (/s) | stopped by |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for c in results.capacity:
        best = c.best
        lines.append(
            f"| {c.workload} | {c.target} | {c.rate:.0f}"
            f" | {f'{best.sbc_busy:.0%} / {best.load_busy:.0%}' if best else '—'}"
            f" | {f'{_ms(best.p50_ms)} / {_ms(best.p99_ms)}' if best else '—'}"
            f" | {c.steps[-1].offered:.0f} | {c.stopped_by} |"
        )
    lines.append("")
    by_key = {(c.workload, c.target): c for c in results.capacity}
    for workload, ours, other in CAPACITY_RATIOS:
        a, b = by_key.get((workload, ours)), by_key.get((workload, other))
        if a is not None and b is not None and b.rate:
            lines.append(f"- {workload}: {ours} / {other} = {a.rate / b.rate:.2f}")
    return lines + [
        "",
        "Capacity is one stepped pass per configuration (the steps interleaved), not"
        f" {results.plan.rounds} rounds, so it has no spread.  A step with a failure or a"
        f" p99 of {P99_LIMIT_MS:.0f} ms or more ends the stepping and does not count; so does"
        f" a clean step that achieved under {LOAD_SIDE_SHARE:.0%} of the offered rate, which"
        " counts (the load side on core 1 is then the limit, not the SBC).  SIPp's response"
        " times are whole milliseconds: 0 means under 1 ms.",
        "",
    ]


def _stage_spread(
    stages: list[StageSample], workload: str, value: Callable[[StageSample], float | None]
) -> str:
    found = Spread.of(v for s in stages if s.workload == workload and (v := value(s)) is not None)
    return found.text(1) if found else "—"


def _stages(results: Results) -> list[str]:
    if results.stages is None:
        return []
    title = f"## Time per sipshield module ({STAGE_TIMED}, µs per request)"
    if not results.stages_written:
        return [title, "", "Not measured: no stage timings written.", ""]
    stages = results.stages
    names = sorted({name for s in stages for name in s.stages})
    lines = [
        title,
        "",
        "| module | " + " | ".join(WORKLOADS) + " |",
        "|---|" + "---:|" * len(WORKLOADS),
    ]
    for name in names:
        cells = [_stage_spread(stages, w, lambda s, n=name: s.us_per_request(n)) for w in WORKLOADS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    total = [_stage_spread(stages, w, StageSample.total_us_per_request) for w in WORKLOADS]
    counted = [
        f"{sum(s.counted for s in stages if s.workload == w)}"
        f" / {sum(s.handled for s in stages if s.workload == w)}"
        for w in WORKLOADS
    ]
    return lines + [
        "| all modules | " + " | ".join(total) + " |",
        "| requests counted / made by the loads | " + " | ".join(counted) + " |",
        "",
        f"A lab of its own ({STAGE_LAB}: {STAGE_TIMED} with SIPSHIELD_STAGE_TIMES set),"
        " loaded in the same rounds as the others.  Each module's time summed over every"
        " worker, divided by the requests the workers counted; median and min-max over the"
        " rounds.  The runtime counts the requests that meet the chain: the PBX's (trusted)"
        " do not, so a call counts 5 of its 8.  The counts include part of the"
        f" {BURST_CALLS} OPTIONS sent after each load to make the workers write their files.",
        "",
    ]


def _notes(results: Results) -> list[str]:
    lines = [
        "## Notes",
        "",
        "- The Python floor answers OPTIONS with KSR.sl.sl_send_reply alone; every other"
        " request it relays as native-reference does (bench/python_floor.py), with no check.",
        "- native-minimal answers OPTIONS with maxfwd, sanity_check and sl_send_reply, and"
        " relays the rest without NAT handling, reply route or next-hop rule.",
        "- native-reference does sipshield's routing (NAT contact aliasing and keepalive"
        " marking, a reply route on every reply, the sips next-hop rule, record-routing and"
        " Path) with sanity_check.  Where it still differs:",
        *(f"  - {difference}" for difference in ROUTING_DIFFERENCES),
        *(f"- {c.ours} vs {c.native}: {c.gap}" for c in results.comparisons),
    ]
    failed = [s for s in results.cost if not s.clean]
    if not failed:
        return lines + ["- No run had a failure.", ""]
    lines.append("- Runs with failures, left out of the medians:")
    for s in failed:
        lines.append(f"  - round {s.round} {s.workload} {s.target}: {s.describe()}")
    return lines + [""]


def round_table(
    samples: list[CostSample],
    configurations: list[str],
    workloads: list[str],
    rounds: int,
    workload_column: bool = True,
) -> list[str]:
    """A row per configuration and workload that ran, a column per round (run_cell)."""
    numbers = range(1, rounds + 1)
    workload_header = ("workload | ", "---|") if workload_column else ("", "")
    lines = [
        f"| configuration | {workload_header[0]}"
        + " | ".join(f"round {r}" for r in numbers)
        + " |",
        f"|---|{workload_header[1]}" + "---:|" * len(numbers),
    ]
    for target in configurations:
        for workload in workloads:
            by_round = {
                s.round: run_cell(s)
                for s in samples
                if s.target == target and s.workload == workload
            }
            if by_round:
                cells = [by_round.get(r, "") for r in numbers]
                workload_cell = f"{workload} | " if workload_column else ""
                lines.append(f"| {target} | {workload_cell}" + " | ".join(cells) + " |")
    return lines


def _every_run(results: Results) -> list[str]:
    return [
        "## Every run (SBC µs/request, (+Redis µs/request))",
        "",
        *round_table(results.cost, results.targets, WORKLOADS, results.plan.rounds),
        "",
    ]


def markdown(results: Results) -> str:
    lines = ["# Benchmark: sipshield vs native Kamailio", "", *_method(results)]
    if results.cost:
        lines += _floors(results)
        for number, comparison in enumerate(results.comparisons, 1):
            lines += _comparison(results, number, comparison)
    lines += _idle(results) + _capacity(results) + _stages(results)
    if results.cost:
        lines += _notes(results) + _every_run(results)
    return "\n".join(lines).rstrip() + "\n"


def _spread_json(spread: Spread | None) -> dict | None:
    if spread is None:
        return None
    return {"median": spread.median, "min": spread.low, "max": spread.high, "n": spread.count}


def _comparisons_json(results: Results) -> list[dict]:
    out = []
    for c in results.comparisons:
        rows = {}
        for workload in WORKLOADS:
            ours = cost_spread(results, c.ours, workload)
            rows[workload] = {}
            for other in (*FLOORS, c.native):
                theirs = cost_spread(results, other, workload)
                rows[workload][other] = {
                    "ratio": ratio(ours, theirs),
                    "no_difference": bool(ours and theirs and ours.overlaps(theirs)),
                }
        out.append({"title": c.title, "ours": c.ours, "native": c.native, "ratios": rows})
    return out


def as_json(results: Results) -> dict:
    summary = {
        target: {
            workload: {
                "cost_us": _spread_json(cost_spread(results, target, workload)),
                "redis_us": _spread_json(spread_of(_samples(results, target, workload), redis_us)),
                "runs": len(_samples(results, target, workload)),
                "failed_runs": sum(not s.clean for s in _samples(results, target, workload)),
            }
            for workload in WORKLOADS
        }
        for target in results.targets
    }
    return {
        "started": results.started,
        "quick": results.quick,
        "plan": {
            "rounds": results.plan.rounds,
            "loads": results.plan.loads,
            "capacity_start": results.plan.capacity_start,
            "step_seconds": results.plan.step_seconds,
            "max_steps": results.plan.max_steps,
        },
        "targets": {t: TARGETS[t].summary for t in results.targets if t in TARGETS},
        "samples": [s.as_json() for s in results.cost],
        "idle_ms_per_s": {name: asdict(idle) for name, idle in results.idle.items()},
        "summary": summary,
        "comparisons": _comparisons_json(results),
        "capacity": [c.as_json() for c in results.capacity],
        "stage_times": None
        if results.stages is None
        else {"written": results.stages_written, "samples": [s.as_json() for s in results.stages]},
    }
