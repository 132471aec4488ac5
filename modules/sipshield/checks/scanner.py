"""Scanner and enumeration detection.

Two signals, because User-Agents are trivially spoofed:
- signature: the User-Agent of a known scanning tool (sipvicious and its
  "friendly-scanner", sipcli, ...) gets the source banned at once;
- behaviour: failures a scanner cannot avoid.  A sweep of OPTIONS, REGISTER or
  INVITE across many distinct users that all end in 404/403/484 (or 401/407
  although credentials were sent), or many such failures from one source
  without a single success, gets the source banned.  A success from the source
  clears its failure count, so a busy NAT whose users mistype a number now and
  then is not mistaken for a scanner.
Banned scanners are dropped silently (the ``bans`` module), so they cannot tell
which extensions exist.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Ban, Outcome

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest
    from sipshield.sip.reply import ReplyFacts

DEFAULT_SIGNATURES = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "iwar",
    "smap",
    "vaxsipuseragent",
    "pplsip",
    "sipptk",
    "voip-scanner",
]
SWEPT_METHODS = ("OPTIONS", "REGISTER", "INVITE")
# Final replies that say "no such user / not allowed": what a sweep collects.
NOT_FOUND = (403, 404, 484)
AUTH_CHALLENGES = (401, 407)


class ScannerConfig(ModuleConfig):
    name: Literal["scanner"] = "scanner"
    # Case-insensitive substrings of the User-Agent that identify a scanning tool.
    user_agents: list[str] = Field(default_factory=lambda: list(DEFAULT_SIGNATURES))
    window_s: int = Field(default=60, gt=0)
    # Distinct users probed without success from one source within the window.
    max_distinct_failed_users: int = Field(default=10, gt=0)
    # Failures from one source without a success in between, within the window.
    max_failures: int = Field(default=30, gt=0)


class ScannerDetection(SecurityModule):
    name = "scanner"
    Config = ScannerConfig
    observes_replies = True

    def __init__(self, config: ScannerConfig) -> None:
        super().__init__(config)
        self.settings = config
        # One search for every signature (plain substrings, escaped).
        self.signatures = re.compile(
            "|".join(re.escape(sig.lower()) for sig in config.user_agents) or r"(?!)"
        )

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        agent = msg.user_agent
        if agent and self.signatures.search(agent.lower()):
            return Ban(f"scanner User-Agent {agent[:60]!r}")
        return CONTINUE

    def observe_reply(self, reply: ReplyFacts, state: SharedState) -> Ban | None:
        if reply.method not in SWEPT_METHODS:
            return None
        failures_key = state.key("scan", "failures", reply.src_ip)
        users_key = state.key("scan", "users", reply.src_ip)
        if 200 <= reply.status < 300:
            state.defer(lambda pipe: pipe.delete(failures_key, users_key))
            return None
        failed = reply.status in NOT_FOUND or (
            reply.status in AUTH_CHALLENGES and reply.had_credentials
        )
        if not failed:
            return None
        window = self.settings.window_s

        def operation(client: Any) -> tuple[int, int]:
            pipe = client.pipeline(transaction=True)
            pipe.incr(failures_key)
            pipe.expire(failures_key, window, nx=True)
            pipe.sadd(users_key, reply.to_user)
            pipe.expire(users_key, window, nx=True)
            pipe.scard(users_key)
            failures, _, _, _, users = pipe.execute()
            return int(failures), int(users)

        failures, users = state.run(operation)
        if users > self.settings.max_distinct_failed_users:
            return Ban(f"sweep: {users} distinct users probed without success in {window}s")
        if failures > self.settings.max_failures:
            return Ban(f"{failures} failed requests without a success in {window}s")
        return None
