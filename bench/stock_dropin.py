"""Cost of the drop-in: Debian's stock kamailio.cfg with and without sipshield.

Two configurations, each the stock file from the kamailio package run on
loopback with 2 UDP workers (tests.support.stock_kamailio):
  stock          as shipped;
  stock+dropin   the same file plus the include and the three route calls,
                 with the full signalling protection policy below.

Workloads (SIPp, no authentication, as the stock file has none):
  options   OPTIONS keepalive to Kamailio itself     1 request each
  register  REGISTER, 200                            1 request each
  call      INVITE, 200, ACK, BYE, 200               3 requests each
            (Kamailio relays them to the registered callee)

Cost: CPU time (user + system, /proc) of every Kamailio process over a fixed
load, per request.  For bench/run.py: ``measure(quick)`` returns
{config: {workload: µs/request}}, ``report(results)`` a Markdown section.
Alone, from the repository: python -m bench.stock_dropin [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from sipshield.lab.net import free_port
from sipshield.lab.sipp import SippResult, SippServer, run_sipp
from tests.support.stock_kamailio import StockKamailio, start

# Limits far above the benchmark's rates: the cost of checking, not of refusing.
POLICY: dict[str, Any] = {
    "modules": [
        {"name": "ip_controls"},
        {"name": "bans"},
        {"name": "validation"},
        {"name": "flood", "window_s": 10,
         "limits": {"invite": 100000, "register": 100000, "options": 100000, "other": 100000}},
        {"name": "scanner"},
        {"name": "brute_force"},
    ],
}  # fmt: skip
CONFIGS: dict[str, dict[str, Any] | None] = {"stock": None, "stock+dropin": POLICY}
REQUESTS_PER_FLOW = {"options": 1, "register": 1, "call": 3}
COST_LOAD = {"options": (3000, 500), "register": (2000, 400), "call": (300, 50)}


def run_flow(kamailio: StockKamailio, flow: str, calls: int, rate: float, callee_port: int):
    common = {"calls": calls, "rate": rate, "timeout_s": int(calls / rate) + 30,
              "recv_timeout_ms": 5000, "keys": {"domain": kamailio.domain}}  # fmt: skip
    if flow == "options":
        return run_sipp("options", kamailio.target, **common)
    if flow == "register":
        return run_sipp("register_noauth", kamailio.target, service="alice", **common)
    callee = SippServer("call_uas", local_port=callee_port, calls=calls,
                        keys={"domain": kamailio.domain})  # fmt: skip
    caller = run_sipp("call_uac_noauth", kamailio.target, service="bob", talk_ms=100,
                      **{**common, "keys": {**common["keys"], "caller": "alice"}})  # fmt: skip
    answered = callee.finish(timeout_s=30)
    return answered if caller.ok and not answered.ok else caller


def measure_one(policy: dict[str, Any] | None, quick: bool) -> dict[str, float]:
    cost: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stock-") as tmp:
        kamailio = start(Path(tmp) / "stock", policy)
        try:
            callee_port = free_port()
            reg = run_sipp("register_noauth", kamailio.target, service="bob",
                           local_port=callee_port, keys={"domain": kamailio.domain})  # fmt: skip
            if not reg.ok:
                raise RuntimeError(f"callee registration failed\n{reg.explain()}")
            for flow, (calls, rate) in COST_LOAD.items():
                calls = calls // 5 if quick else calls
                before = kamailio.cpu_seconds()
                result: SippResult = run_flow(kamailio, flow, calls, rate, callee_port)
                spent = kamailio.cpu_seconds() - before
                if not result.ok:
                    print(f"  {flow}: {result.failed} failed calls", flush=True)
                cost[flow] = spent * 1e6 / (calls * REQUESTS_PER_FLOW[flow])
        finally:
            kamailio.stop()
    return cost


def measure(quick: bool = False) -> dict[str, dict[str, float]]:
    results = {}
    for name, policy in CONFIGS.items():
        print(f"benchmarking {name} ...", flush=True)
        results[name] = measure_one(policy, quick)
        for flow, us in results[name].items():
            print(f"  {name} {flow}: {us:.0f} us/request", flush=True)
    return results


def report(results: dict[str, dict[str, float]]) -> str:
    plain, dropin = results["stock"], results["stock+dropin"]
    lines = [
        "## Drop-in: Debian's stock kamailio.cfg with and without sipshield",
        "",
        "The stock configuration from the kamailio package (no WITH_* features: in-memory"
        " location, no authentication), 2 UDP workers; the drop-in adds the include and"
        " the three route calls, with ip_controls, bans, validation, flood, scanner and"
        " brute_force enforced.",
        "",
        "| workload | CPU µs/request stock | CPU µs/request stock+dropin | ratio |",
        "|---|---:|---:|---:|",
    ]
    for flow in REQUESTS_PER_FLOW:
        a, b = plain[flow], dropin[flow]
        lines.append(
            f"| {flow} | {a:.0f} | {b:.0f} | {b / a:.2f} |"
            if a
            else f"| {flow} | 0 | {b:.0f} | n/a |"
        )
    lines += [
        "",
        "Requests per flow: options 1, register 1 (no challenge), call 3 (INVITE, ACK,"
        " BYE from the caller; Kamailio relays each to the callee).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the load")
    args = parser.parse_args()
    print(report(measure(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
