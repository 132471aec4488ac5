"""Brute-force protection: failed authentications per source and per user.

A failure is a final 401, 407 or 403 to a request that carried credentials
(the first, credential-less request of every digest exchange is challenged
by design and does not count).  Counts live in Redis for ``window_s``:
- beyond ``max_failures_per_user`` for one user from one source, that user is
  banned from that source (a guesser behind an office NAT does not lock out
  the whole office);
- beyond ``max_failures_per_source`` for all users from one source, the
  source is banned (a guesser trying many accounts).
A successful authentication of a user resets that user's count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Ban, Outcome

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest
    from sipshield.sip.reply import ReplyFacts

AUTH_FAILURES = (401, 403, 407)


class BruteForceConfig(ModuleConfig):
    name: Literal["brute_force"] = "brute_force"
    window_s: int = Field(default=300, gt=0)
    max_failures_per_user: int = Field(default=5, gt=0)
    max_failures_per_source: int = Field(default=30, gt=0)


class BruteForce(SecurityModule):
    name = "brute_force"
    Config = BruteForceConfig
    observes_replies = True

    def __init__(self, config: BruteForceConfig) -> None:
        super().__init__(config)
        self.settings = config

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        # Requests are stopped by the bans this module asks for; see observe_reply.
        return CONTINUE

    def observe_reply(self, reply: ReplyFacts, state: SharedState) -> Ban | None:
        if not reply.had_credentials:
            return None
        user_key = state.key("authfail", "user", reply.src_ip, reply.user)
        source_key = state.key("authfail", "source", reply.src_ip)
        if 200 <= reply.status < 300:
            state.defer(lambda pipe: pipe.delete(user_key))
            return None
        if reply.status not in AUTH_FAILURES:
            return None
        window = self.settings.window_s

        def operation(client: Any) -> tuple[int, int]:
            pipe = client.pipeline(transaction=True)
            pipe.incr(user_key)
            pipe.expire(user_key, window, nx=True)
            pipe.incr(source_key)
            pipe.expire(source_key, window, nx=True)
            user_failures, _, source_failures, _ = pipe.execute()
            return int(user_failures), int(source_failures)

        user_failures, source_failures = state.run(operation)
        if source_failures > self.settings.max_failures_per_source:
            return Ban(f"{source_failures} failed authentications from {reply.src_ip} in {window}s")
        if user_failures > self.settings.max_failures_per_user:
            return Ban(
                f"{user_failures} failed authentications for {reply.user} from "
                f"{reply.src_ip} in {window}s",
                scope="user",
                user=reply.user,
            )
        return None
