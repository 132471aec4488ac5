"""Anti-flood: a request-rate limit per source address and method class.

Counting happens in Redis, so every node that shares it sees the same rate for
a source, in one atomic round trip per initial request.  Requests inside a
dialog are not counted: they were admitted with their dialog, and counting them
would cost a round trip for every re-INVITE and BYE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from sipshield.module import ModuleConfig, SecurityModule
from sipshield.verdict import CONTINUE, Drop, Outcome, Reject

if TYPE_CHECKING:
    # Imported for types only: the policy imports the modules' configs.
    from sipshield.message import SipRequest
    from sipshield.state import SharedState

METHOD_CLASSES = ("register", "invite", "options")


MethodClass = Literal["register", "invite", "options", "other"]
DEFAULT_LIMITS: dict[str, int] = {"register": 30, "invite": 30, "options": 30, "other": 60}


class FloodConfig(ModuleConfig):
    name: Literal["flood"] = "flood"
    window_s: int = Field(default=10, gt=0, le=3600)
    # Requests allowed per source address within one window, by method class;
    # classes left out keep their default.
    limits: dict[MethodClass, PositiveInt] = Field(default_factory=dict)
    # drop: say nothing (an attacker learns nothing and spends its own time);
    # reject: 503 with Retry-After, for peers that back off when told to.
    response: Literal["drop", "reject"] = "drop"


def method_class(method: str) -> str:
    lowered = method.lower()
    return lowered if lowered in METHOD_CLASSES else "other"


class FloodControl(SecurityModule):
    name = "flood"
    Config = FloodConfig

    def __init__(self, config: FloodConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.limits = {**DEFAULT_LIMITS, **config.limits}

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.in_dialog:
            return CONTINUE
        klass = method_class(msg.method)
        limit = self.limits[klass]
        key = state.key("flood", klass, msg.src_ip)
        hits = state.count_in_window(key, self.settings.window_s)
        if hits <= limit:
            return CONTINUE
        reason = (
            f"{hits} {klass} requests from {msg.src_ip} in {self.settings.window_s}s "
            f"(limit {limit})"
        )
        if self.settings.response == "drop":
            return Drop(reason)
        return Reject(
            reason,
            code=503,
            headers=(("Retry-After", str(self.settings.window_s)),),
        )
