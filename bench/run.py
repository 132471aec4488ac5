"""Benchmark sipshield against the native-Kamailio reference, in one run.

Configurations, each a full lab (SBC, PBX, Redis, rtpengine) on loopback:
  a) sipshield: the reference kamailio.cfg with the Python pipeline, running
     bench/policies/sipshield-validation.yaml (validation in enforce mode);
  b) native: bench/native-reference.cfg, the same relaying in Kamailio's own
     language with sanity_check, no Python.

Workloads (SIPp):
  options   OPTIONS to the SBC itself                       1 request each
  register  REGISTER, 401, REGISTER with credentials, 200   2 requests each
  call      INVITE, 407, ACK, INVITE, 200, ACK, BYE, 200;   8 requests each
            the SBC also relays the PBX's INVITE, ACK and BYE to the callee

Two measurements per workload and configuration:
  cost      CPU time (user + system, from /proc) of every SBC Kamailio
            process over a fixed load at a moderate rate, per request;
  capacity  stepped rates; the highest step with zero failed calls.

Writes bench/REPORT.md.  Usage, from the repository: python -m bench.run [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import kernel_flood, media_bench, stock_dropin
from sipshield.lab.net import free_port
from sipshield.lab.sipp import SippResult, SippServer, run_sipp
from sipshield.lab.stack import group_cpu_seconds
from tests.support.netns import NamespacesRefused

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# name -> (policy, SBC configuration; None is sipshield's reference kamailio.cfg)
CONFIGS = {
    "sipshield-validation": (BENCH / "policies" / "sipshield-validation.yaml", None),
    "native-sanity": (
        BENCH / "policies" / "sipshield-validation.yaml",
        BENCH / "native-reference.cfg",
    ),
    "sipshield-protection": (BENCH / "policies" / "sipshield-protection.yaml", None),
    "native-protection": (
        BENCH / "policies" / "sipshield-validation.yaml",
        BENCH / "native-protection.cfg",
    ),
    "sipshield-dialog": (BENCH / "policies" / "sipshield-dialog.yaml", None),
    "sipshield-dialog-records": (BENCH / "policies" / "sipshield-dialog-records.yaml", None),
}
# Each row of the report: (what is compared, sipshield config, native reference)
COMPARISONS = [
    ("validation vs sanity_check", "sipshield-validation", "native-sanity"),
    (
        "ip_controls+bans+validation+flood+scanner+brute_force vs htable ipban+pike+sanity",
        "sipshield-protection",
        "native-protection",
    ),
    (
        "validation + signed dialog tokens + CANCEL and registration guards vs sanity_check",
        "sipshield-dialog",
        "native-sanity",
    ),
    (
        "the same with dialog records in Redis (CSeq per side) vs sanity_check",
        "sipshield-dialog-records",
        "native-sanity",
    ),
]
REQUESTS_PER_FLOW = {"options": 1, "register": 2, "call": 8}
COST_LOAD = {"options": (3000, 500), "register": (1000, 200), "call": (300, 50)}
STEPS = {
    "options": [500, 1000, 2000, 4000, 8000],
    "register": [200, 400, 800, 1600],
    "call": [25, 50, 100, 200, 400],
}
STEP_SECONDS = 4
DRAIN_SECONDS = 8


@dataclass
class Lab:
    directory: Path
    info: dict

    @property
    def target(self) -> str:
        return self.info["sip"]["udp"]

    def password(self, user: str) -> str:
        return next(u["password"] for u in self.info["users"] if u["username"] == user)

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.info["pids"]["sbc"])


@dataclass
class Outcome:
    cost_us: dict[str, float] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def lab_up(name: str, directory: Path) -> Lab:
    policy, sbc_config = CONFIGS[name]
    argv = [sys.executable, "-m", "sipshield.ops.cli", "lab", "up", "--policy", str(policy)]
    argv += ["--dir", str(directory), "--detach"]
    if sbc_config:
        argv += ["--sbc-config", str(sbc_config)]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
    return Lab(directory, json.loads((directory / "lab.json").read_text()))


def lab_down(lab: Lab) -> None:
    subprocess.run(
        [sys.executable, "-m", "sipshield.ops.cli", "lab", "down", "--dir", str(lab.directory)],
        check=False, capture_output=True, timeout=60,
    )  # fmt: skip


def run_flow(lab: Lab, flow: str, calls: int, rate: float, callee_port: int) -> SippResult:
    common = {"calls": calls, "rate": rate, "timeout_s": int(calls / rate) + 30,
              "recv_timeout_ms": 5000, "keys": {"domain": lab.info["domain"]}}  # fmt: skip
    if flow == "options":
        return run_sipp("options", lab.target, **common)
    if flow == "register":
        return run_sipp(
            "register", lab.target, service="alice", auth=("alice", lab.password("alice")), **common
        )
    callee = SippServer("call_uas", local_port=callee_port, calls=calls,
                        keys={"domain": lab.info["domain"]})  # fmt: skip
    caller = run_sipp(
        "call_uac", lab.target, service="bob", auth=("alice", lab.password("alice")),
        talk_ms=100, **{**common, "keys": {**common["keys"], "caller": "alice"}},
    )  # fmt: skip
    answered = callee.finish(timeout_s=30)
    if caller.ok and not answered.ok:
        return answered
    return caller


def measure(name: str, quick: bool) -> Outcome:
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        lab = lab_up(name, Path(tmp) / "lab")
        try:
            callee_port = free_port()
            reg = run_sipp(
                "register", lab.target, service="bob", local_port=callee_port,
                auth=("bob", lab.password("bob")), keys={"domain": lab.info["domain"]},
            )  # fmt: skip
            if not reg.ok:
                raise RuntimeError(f"{name}: callee registration failed\n{reg.explain()}")
            for flow, (calls, rate) in COST_LOAD.items():
                if quick:
                    calls //= 5
                before = lab.cpu_seconds()
                result = run_flow(lab, flow, calls, rate, callee_port)
                spent = lab.cpu_seconds() - before
                if not result.ok:
                    outcome.notes.append(f"{flow} cost run had failures: {result.failed}")
                requests = calls * REQUESTS_PER_FLOW[flow]
                outcome.cost_us[flow] = spent * 1e6 / requests
                print(f"  {name} {flow}: {outcome.cost_us[flow]:.0f} us/request", flush=True)
            for flow, rates in STEPS.items():
                best = 0
                for rate in rates[:2] if quick else rates:
                    calls = rate * STEP_SECONDS
                    result = run_flow(lab, flow, calls, rate, callee_port)
                    clean = result.ok and result.successful == calls
                    print(f"  {name} {flow} @ {rate}/s: {result.successful}/{calls} ok, "
                          f"{result.failed} failed", flush=True)  # fmt: skip
                    if not clean:
                        break
                    best = rate
                    time.sleep(1)
                outcome.capacity[flow] = best
                # The failed step left transactions and retransmissions behind
                # (tm's timers run for seconds); the next workload must start
                # on a drained lab, or it measures this one's overload.
                time.sleep(DRAIN_SECONDS)
        finally:
            lab_down(lab)
    return outcome


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def report(
    results: dict[str, Outcome],
    comparisons: list[tuple[str, str, str]],
    quick: bool,
) -> str:
    kamailio = subprocess.run(["kamailio", "-v"], capture_output=True, text=True).stdout
    lines = [
        "# Benchmark: sipshield vs native Kamailio",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench`"
        + (" (quick mode)" if quick else "")
        + f", every configuration in the same run, on {os.cpu_count()} cores"
        f" ({_cpu_model()}), {kamailio.splitlines()[0] if kamailio else 'kamailio'};"
        " every SBC with 2 UDP workers.",
        "SIPp, the PBX, Redis and rtpengine run on the same machine, so capacity is"
        " bounded by the whole lab, not by the SBC alone.",
        "",
    ]
    for title, ours, native in comparisons:
        a, b = results[ours], results[native]
        lines += [
            f"## {title}",
            "",
            f"| workload | CPU µs/request {ours} | CPU µs/request {native} | ratio "
            f"| max rate {ours} (/s) | max rate {native} (/s) | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for flow in REQUESTS_PER_FLOW:
            ca, cb = a.cost_us[flow], b.cost_us[flow]
            ra, rb = a.capacity[flow], b.capacity[flow]
            lines.append(
                f"| {flow} | {ca:.0f} | {cb:.0f} | {ca / cb:.2f} | {ra} | {rb} | "
                + (f"{ra / rb:.2f}" if rb else "n/a")
                + " |"
            )
        lines.append("")
    lines += [
        "Cost: CPU time of all SBC Kamailio processes (user + system, /proc/PID/stat)"
        " during a fixed load, divided by the SIP requests the SBC handled"
        " (options 1, register 2, call 8 per flow).  Max rate: the highest step of"
        f" {', '.join(f'{k} {v}' for k, v in STEPS.items())} (per second, {STEP_SECONDS} s"
        " each) with zero failed calls; 0 means even the first step failed.  Steps run"
        f" in order on one lab, with {DRAIN_SECONDS} s for it to drain between workloads.",
        "",
    ]
    for name, result in results.items():
        lines += [f"- note ({name}): {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads, two steps")
    parser.add_argument(
        "--only",
        help="comma-separated parts: comparison numbers (1-based), 'dropin', 'kernel'; default all",
    )
    args = parser.parse_args()
    parts = set(args.only.split(",")) if args.only else None
    comparisons = [c for n, c in enumerate(COMPARISONS, 1) if parts is None or str(n) in parts]
    wanted = {name for _, ours, native in comparisons for name in (ours, native)}
    results = {}
    for name in (n for n in CONFIGS if n in wanted):
        print(f"benchmarking {name} ...", flush=True)
        results[name] = measure(name, args.quick)
    sections = [report(results, comparisons, args.quick)]
    extras = {
        "dropin": ("the stock configuration with and without the drop-in", lambda: (
            stock_dropin.report(stock_dropin.measure(args.quick)))),
        "kernel": ("a banned flood, kernel enforcement off and on", lambda: "\n".join(
            kernel_flood.report_lines(kernel_flood.measure(quick=args.quick)))),
        "media": ("SRTP call setup and rtpengine capacity", lambda: "\n".join(
            media_bench.report_lines(media_bench.measure(args.quick)))),
    }  # fmt: skip
    failed = 0
    for part, (title, run) in extras.items():
        if parts is not None and part not in parts:
            continue
        print(f"benchmarking {title} ...", flush=True)
        try:
            sections.append(run())
        except NamespacesRefused as exc:
            sections.append(f"## {title}\n\nNot measured: {exc}\n")
        except Exception as exc:  # one broken part must not lose the others
            failed += 1
            sections.append(f"## {title}\n\nNot measured: the run failed: {exc}\n")
            print(f"  {title} failed: {exc}", flush=True)
    text = "\n".join(section.rstrip() + "\n" for section in sections)
    (BENCH / "REPORT.md").write_text(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
