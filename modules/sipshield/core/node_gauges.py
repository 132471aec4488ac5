"""The gauges the node's timer process keeps current: Redis health, bans in force, the policy.

Nothing on a request's path asks Redis for these.  The timer process (every
200 ms) calls :meth:`NodeGauges.tick`; at most once per ``interval_s`` it
pings Redis (availability, round-trip time) and counts the bans in force,
removing the expired ones from the index (which counts them), in two round
trips in all (the second a script that counts inside Redis).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sipshield.core.bans import BanStore
from sipshield.core.metrics import Metrics
from sipshield.core.state import SharedState, StateUnavailable

log = logging.getLogger("sipshield.core.node_gauges")

INTERVAL_S = 1.0


class NodeGauges:
    def __init__(
        self,
        metrics: Metrics,
        state: SharedState,
        bans: BanStore | None,
        policy_digest: str,
        policy_loaded_at: float,
        rtpengines: tuple[str, ...] = (),
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.state = state
        self.bans = bans
        self.policy_digest = policy_digest
        self.policy_loaded_at = policy_loaded_at
        self.rtpengines = rtpengines
        self.interval_s = interval_s
        self.clock = clock
        self._next = 0.0
        self._declared = False

    def tick(self) -> None:
        if not self.metrics.enabled:
            return
        if not self._declared:
            self._declared = True
            self.metrics.declare(self.rtpengines)
            self.metrics.policy_loaded(self.policy_digest, self.policy_loaded_at)
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.interval_s
        self._measure_redis()

    def _measure_redis(self) -> None:
        started = time.perf_counter()
        try:
            self.state.run(lambda client: client.ping())
        except StateUnavailable:
            self.metrics.redis(up=False, rtt_s=None)
            return
        self.metrics.redis(up=True, rtt_s=time.perf_counter() - started)
        if self.bans is None:
            return
        try:
            self.metrics.bans_active(self.bans.census())
        except StateUnavailable:
            return  # down since the ping: the next tick says so
