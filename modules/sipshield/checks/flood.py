"""Anti-flood: request-rate limits per source and method class, and globally.

Counting happens in Redis, so every node that shares it sees the same rate for
a source, in one atomic round trip per initial request (a Lua script
counting the source and the global rate and reading the size of the source's
set of authenticated users).  Requests inside a dialog are not counted: they were
admitted with their dialog, and counting them would cost a round trip for every
re-INVITE and BYE.

NAT: a busy office shows many users behind one address.  Each user that
authenticates successfully from an address (seen in the final 2xx of a
request that carried credentials) raises that address's allowance by one
more limit, up to ``nat_max_factor`` limits, so the office is not mistaken
for a flood.

Sustained excess (``ban_after`` times the allowance in one window) becomes a
ban; plain excess is dropped or answered 503.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Ban, Outcome, Reject

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest
    from sipshield.sip.reply import ReplyFacts

METHOD_CLASSES = ("register", "invite", "options")
MethodClass = Literal["register", "invite", "options", "other"]
DEFAULT_LIMITS: dict[str, int] = {"register": 30, "invite": 30, "options": 30, "other": 60}
# How long an address is remembered as the home of an authenticated user.
AUTH_USERS_TTL_S = 3600
# KEYS: source counter, global counter, the source's authenticated users.
# ARGV: window.  Returns {source hits, global hits, authenticated users}.
COUNT_SCRIPT = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local total = redis.call('INCR', KEYS[2])
if total == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return {hits, total, redis.call('SCARD', KEYS[3])}
"""


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

    def __init__(self, config: FloodConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.limits = {**DEFAULT_LIMITS, **config.limits}

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.in_dialog:
            return CONTINUE
        window = self.settings.window_s
        klass = method_class(msg.method)
        keys = [
            state.key("flood", klass, msg.src_ip),
            state.key("flood", "global"),
            state.key("authusers", msg.src_ip),
        ]
        hits, total, users = (int(n) for n in state.script(COUNT_SCRIPT, keys, [window]))
        factor = min(max(1, users), self.settings.nat_max_factor)
        allowance = self.limits[klass] * factor
        if hits > allowance:
            reason = (
                f"{hits} {klass} requests from {msg.src_ip} in {window}s "
                f"(allowance {allowance}"
                + (f" for {users} authenticated users" if users > 1 else "")
                + ")"
            )
            if self.settings.ban_after and hits >= allowance * self.settings.ban_after:
                return Ban(f"sustained flood: {reason}")
            return self._refuse(reason)
        limit = self.settings.global_limit
        if limit is not None and total > limit:
            return self._refuse(f"{total} requests from all sources in {window}s (limit {limit})")
        return CONTINUE

    def _refuse(self, reason: str) -> Outcome:
        retry = (("Retry-After", str(self.settings.window_s)),)
        return Reject(reason, code=503, headers=retry, droppable=True)

    def observe_reply(self, reply: ReplyFacts, state: SharedState) -> Ban | None:
        if 200 <= reply.status < 300 and reply.had_credentials:
            key = state.key("authusers", reply.src_ip)

            def operation(client: Any) -> None:
                pipe = client.pipeline(transaction=False)
                pipe.sadd(key, reply.user)
                pipe.expire(key, AUTH_USERS_TTL_S)
                pipe.execute()

            state.run(operation)
        return None
