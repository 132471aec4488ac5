"""Enforce bans: requests from a banned source (or banned user at a source) are stopped.

Place it right after ip_controls.  The check reads the worker's local copy of
the bans (kept current through Redis pub/sub, see :mod:`sipshield.core.bans`), so it
costs no Redis round trip.  Blocked requests are counted on the ban record in
batches, at most once a second per worker, so a flood does not turn into Redis
traffic.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Literal

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.state import StateUnavailable
from sipshield.core.verdict import CONTINUE, Outcome, Reject

if TYPE_CHECKING:
    from sipshield.core.decisions import DecisionStore
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

HIT_FLUSH_INTERVAL_S = 1.0


class BanCheckConfig(ModuleConfig):
    name: Literal["bans"] = "bans"
    # drop: no answer; reject: 403, the same for every user, so a banned
    # guesser learns nothing about which accounts exist.
    response: Literal["drop", "reject"] = "drop"


class BanCheck(SecurityModule):
    name = "bans"
    Config = BanCheckConfig
    response_setting = "response"

    def __init__(self, config: BanCheckConfig) -> None:
        super().__init__(config)
        self.settings = config
        self._hits: Counter[str] = Counter()
        self._flush_at = 0.0

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        decisions = state.decisions
        if decisions is None:
            return CONTINUE
        # The From user is parsed only while a user-scoped ban is in force.
        scope = decisions.banned(msg.src_ip, lambda: msg.from_user)
        if scope is None:
            return CONTINUE
        self._count(scope, decisions)
        return Reject(f"banned ({scope})", code=403, droppable=True)

    def _count(self, scope: str, decisions: DecisionStore) -> None:
        self._hits[scope] += 1
        now = time.monotonic()
        if now < self._flush_at:
            return
        self._flush_at = now + HIT_FLUSH_INTERVAL_S
        hits, self._hits = self._hits, Counter()
        for hit_scope, count in hits.items():
            try:
                decisions.count_hit(hit_scope, count)
            except StateUnavailable:
                # The ban holds from the local copy whatever Redis does; only
                # its count waits (one number per banned scope) for Redis.
                self._hits[hit_scope] += count
