"""Cost of the drop-in: Debian's stock kamailio.cfg with and without sipshield.

Two configurations, each the stock file from the kamailio package run on
loopback with 2 UDP workers (tests.support.stock_kamailio), both running
for the whole measurement:
  stock          as shipped;
  stock+dropin   the same file plus the include and the three route calls,
                 with the full signalling protection policy below.

Workloads (SIPp, no authentication, as the stock file has none):
  options   OPTIONS keepalive to Kamailio itself     1 request each
  register  REGISTER, 200                            1 request each
  call      INVITE, 200, ACK, BYE, 200               3 requests each
            (Kamailio relays them to the registered callee)

The method is bench/run.py's (bench.cost): Kamailio pinned to core 0, the
rest to core 1; CPU time of every Kamailio process (and of the drop-in's
Redis) per handled request; interleaved rounds, median and spread; a run
with failures reports them instead of a cost.  For bench/run.py:
``measure(quick)`` and ``report(result)``.  Alone, from the repository:
python -m bench.stock_dropin [--quick] [--rounds N]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import feature_comparison as comparison
from bench.cpu import placement
from bench.feature_comparison import Column, ComparisonResult
from bench.report import redis_us
from bench.workloads import Endpoint, Flow, register_callee
from sipshield.lab.net import free_port
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
STOCK, DROPIN = "stock", "stock+dropin"
CONFIGS: dict[str, dict[str, Any] | None] = {STOCK: None, DROPIN: POLICY}
FLOWS = (
    Flow("options", "options", 1),
    Flow("register", "register_noauth", 1),
    # INVITE, ACK, BYE from the caller; Kamailio relays each to the callee.
    Flow("call", "call_uac_noauth", 3, answered=True),
)


@dataclass
class StockSystem:
    """A running stock Kamailio, as bench.cost measures it."""

    name: str
    kamailio: StockKamailio
    endpoint: Endpoint

    @property
    def sbc_pgid(self) -> int:
        return self.kamailio.kamailio.pid

    @property
    def redis_pgid(self) -> int | None:
        server = self.kamailio.redis_server
        return server.pid if server is not None else None

    @property
    def sbc_log(self) -> Path:
        return self.kamailio.directory / "kamailio.log"


def measure(quick: bool = False, rounds: int | None = None) -> ComparisonResult:
    plan = comparison.plan(quick, rounds)
    with tempfile.TemporaryDirectory(prefix="bench-stock-") as tmp, contextlib.ExitStack() as stop:
        systems = []
        for name, policy in CONFIGS.items():
            print(f"starting {name} ...", flush=True)
            kamailio = start(Path(tmp) / name.replace("+", "-"), policy)
            stop.callback(kamailio.stop)
            endpoint = Endpoint(kamailio.target, kamailio.domain, free_port())
            register_callee(endpoint)
            systems.append(StockSystem(name, kamailio, endpoint))
        redis = [pgid for s in systems if (pgid := s.redis_pgid) is not None]
        with placement([s.sbc_pgid for s in systems], redis):
            return comparison.measure_systems(systems, FLOWS, plan.loads, plan)


def report(result: ComparisonResult) -> str:
    return comparison.section(
        result,
        "Drop-in: Debian's stock kamailio.cfg with and without sipshield",
        "The stock configuration from the kamailio package (no WITH_* features: in-memory"
        " location, no authentication), 2 UDP workers; the drop-in adds the include and the"
        " three route calls, with ip_controls, bans, validation, flood, scanner and"
        " brute_force enforced.  Measured as above: both running together, Kamailio on"
        f" core 0, {result.plan.rounds} interleaved rounds, median (min-max) of Kamailio's"
        " CPU µs per handled request; requests per call: "
        + comparison.requests_per_flow(FLOWS)
        + ".",
        comparison.by_workload(
            result,
            [
                Column(f"{STOCK} µs/request", STOCK),
                Column(f"{DROPIN} µs/request", DROPIN),
                Column("Redis µs/request", DROPIN, redis_us),
            ],
            (DROPIN, STOCK),
        ),
    )


if __name__ == "__main__":
    sys.exit(comparison.main(__doc__, measure, report))
