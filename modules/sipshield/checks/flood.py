"""Anti-flood: request-rate limits per source and method class, and globally.

Counting makes no round trip: each node counts in its shared memory and
merges into Redis in batches (:mod:`sipshield.core.window_counts`), so every
node sees the same rate for a source within one merge interval (200 ms, the
timer ``sipshield_merge`` in kamailio.cfg and the drop-in).  Requests inside a
dialog are not counted: they were admitted with their dialog.

NAT: a busy office shows many users behind one address.  Each user that
authenticates successfully from an address (seen in the final 2xx of a
request that carried credentials) raises that address's allowance by one
more limit, up to ``nat_max_factor`` limits, so the office is not mistaken
for a flood.  The number of such users is read from Redis when a source first
passes its base limit on this node, then kept on the node and refreshed by
the merge.

Sustained excess (``ban_after`` times the allowance in one window) becomes a
ban; plain excess is dropped or answered 503.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.node_counters import ProcessCounters
from sipshield.core.state import StateUnavailable
from sipshield.core.verdict import CONTINUE, Ban, Outcome, Reject
from sipshield.core.window_counts import MERGE_INTERVAL_S, WindowCounts

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest
    from sipshield.sip.reply import ReplyFacts

log = logging.getLogger("sipshield.checks.flood")

METHOD_CLASSES = ("register", "invite", "options")
MethodClass = Literal["register", "invite", "options", "other"]
DEFAULT_LIMITS: dict[str, int] = {"register": 30, "invite": 30, "options": 30, "other": 60}
# How long an address is remembered as the home of an authenticated user.
AUTH_USERS_TTL_S = 3600
# The count of all sources together, and the node key of a source's authenticated users.
GLOBAL = "global"
USERS = "u"
# Node key: when the counts were last merged (Unix seconds); and how often a
# worker checks that the merging goes on.
MERGED_AT = "merged-at"
TIMER_CHECK_S = 5.0


class FloodConfig(ModuleConfig):
    name: Literal["flood"] = "flood"
    window_s: int = Field(default=10, gt=0, le=3600)
    # Requests allowed per source address within one window, by method class;
    # classes left out keep their default.
    limits: dict[MethodClass, PositiveInt] = Field(default_factory=dict)
    # Initial requests allowed from all sources together per window; None: no limit.
    global_limit: PositiveInt | None = None
    # drop: say nothing (an attacker learns nothing and spends its own time);
    # reject: 503 with Retry-After, for peers that back off when told to.
    response: Literal["drop", "reject"] = "drop"
    # Ban a source that sends this many times its allowance in one window; 0: never.
    ban_after: float = Field(default=3.0, ge=0)
    # A source's allowance grows by one limit per authenticated user, up to this many.
    nat_max_factor: int = Field(default=100, ge=1)


def method_class(method: str) -> str:
    lowered = method.lower()
    return lowered if lowered in METHOD_CLASSES else "other"


class FloodControl(SecurityModule):
    name = "flood"
    Config = FloodConfig
    response_setting = "response"
    observes_replies = True
    has_timer = True

    def __init__(self, config: FloodConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.limits = {**DEFAULT_LIMITS, **config.limits}
        self._counts: WindowCounts | None = None
        # Without node counters (no htable: a composition that does not
        # declare it, or outside Kamailio) each process counts alone and
        # merges when a request finds a merge due.
        self._merge_on_requests = False
        self._next_merge = 0.0
        # With them, whether the timer process merges is checked now and then.
        self._timer_checked_at = time.monotonic()
        self._timer_warned = False

    def counts(self, state: SharedState) -> WindowCounts:
        """The window counts, on the node's shared counters (this process's outside Kamailio)."""
        if self._counts is None:
            node = state.node
            if node is None:
                node = ProcessCounters()
                self._merge_on_requests = True
            self._counts = WindowCounts(node, "flood", self.settings.window_s)
        return self._counts

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.in_dialog:
            return CONTINUE
        counts = self.counts(state)
        self._keep_merging(state)
        window = self.settings.window_s
        source = msg.src_ip
        global_limit = self.settings.global_limit
        # Every initial request counts towards the global rate, refused or not.
        total = 0 if global_limit is None else counts.count(GLOBAL)
        klass = method_class(msg.method)
        hits = counts.count(f"{klass}:{source}")
        limit = self.limits[klass]
        if hits > limit:
            users = self._authenticated_users(source, state)
            allowance = limit * min(max(1, users), self.settings.nat_max_factor)
            if hits > allowance:
                reason = (
                    f"{hits} {klass} requests from {source} in {window}s (allowance {allowance}"
                    + (f" for {users} authenticated users" if users > 1 else "")
                    + ")"
                )
                if self.settings.ban_after and hits >= allowance * self.settings.ban_after:
                    return Ban(f"sustained flood: {reason}")
                return self._refuse(reason)
        if global_limit is not None and total > global_limit:
            return self._refuse(
                f"{total} requests from all sources in {window}s (limit {global_limit})"
            )
        return CONTINUE

    def _keep_merging(self, state: SharedState) -> None:
        now = time.monotonic()
        if self._merge_on_requests:
            if now >= self._next_merge:
                self._next_merge = now + MERGE_INTERVAL_S
                # Counted here meanwhile, merged when Redis is back.
                with contextlib.suppress(StateUnavailable):
                    self.on_timer(state)
            return
        if self._timer_warned or now - self._timer_checked_at < TIMER_CHECK_S:
            return
        self._timer_checked_at = now
        merged_at = self.counts(state).node.value(MERGED_AT)
        if time.time() - merged_at > TIMER_CHECK_S:
            self._timer_warned = True
            log.error(
                "flood: this node's counts have not been merged into Redis for %.0fs: "
                "the timer that calls sipshield's on_timer is not running (rtimer "
                "'sipshield_merge' in kamailio.cfg and the drop-in); each node counts alone",
                time.time() - merged_at if merged_at else float("inf"),
            )

    def _refuse(self, reason: str) -> Outcome:
        retry = (("Retry-After", str(self.settings.window_s)),)
        return Reject(reason, code=503, headers=retry, droppable=True)

    def _authenticated_users(self, source: str, state: SharedState) -> int:
        """How many users authenticated from ``source``: known on the node, or read once."""
        node = self.counts(state).node
        # Kept as users + 1: an absent key reads 0, "not known yet".
        known = node.value(f"{USERS}|{source}")
        if known:
            return known - 1
        try:
            users = int(state.run(lambda client: client.scard(state.key("authusers", source))))
        except StateUnavailable:
            # Redis down and the source new to this node: the base limit holds.
            return 0
        node.put(f"{USERS}|{source}", users + 1)
        return users

    def on_timer(self, state: SharedState) -> None:
        """Merge the node's counts into Redis; refresh the user counts of sources over a limit."""
        counts = self.counts(state)
        totals = counts.merge(state)
        counts.node.put(MERGED_AT, int(time.time()))
        busy = sorted(
            {
                name.partition(":")[2]
                for name, total in totals.items()
                if name != GLOBAL and total > self.limits[name.partition(":")[0]]
            }
        )
        if not busy:
            return

        def operation(client: Any) -> list[int]:
            pipe = client.pipeline(transaction=False)
            for source in busy:
                pipe.scard(state.key("authusers", source))
            return pipe.execute()

        for source, users in zip(busy, state.run(operation), strict=True):
            counts.node.put(f"{USERS}|{source}", int(users) + 1)

    def observe_reply(self, reply: ReplyFacts, state: SharedState) -> Ban | None:
        if 200 <= reply.status < 300 and reply.had_credentials:
            key = state.key("authusers", reply.src_ip)

            def write(pipe: Any) -> None:
                pipe.sadd(key, reply.user)
                pipe.expire(key, AUTH_USERS_TTL_S)

            # The nodes learn the new allowance at their next merge (the
            # source's count is read when it passes its base limit).
            state.defer(write)
            self.counts(state).node.remove(f"{USERS}|{reply.src_ip}")
        return None
