"""The contract every security module implements.

A module is one class in one file.  It declares a pydantic ``Config`` (its part
of the policy, validated at start-up) and one entry point, :meth:`check`, that
looks at a request and returns :data:`~sipshield.core.verdict.CONTINUE` or a
verdict; a module that must also see the request just before it is relayed
(next hop, anchored SDP, matched INVITE known) implements :meth:`check_relay`.
Modules detect; they never reply, drop, rewrite or ban by themselves:
:mod:`sipshield.core.remediation` does that, in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from sipshield.core.verdict import CONTINUE

if TYPE_CHECKING:
    from sipshield.core.call_event import CallEvent
    from sipshield.core.hop import Hop
    from sipshield.core.site import Site
    from sipshield.core.state import SharedState
    from sipshield.core.verdict import Ban, EndCall, Outcome, Verdict
    from sipshield.sip.message import SipRequest
    from sipshield.sip.reply import ReplyFacts

Mode = Literal["off", "monitor", "enforce"]
FailureMode = Literal["open", "closed"]


class ModuleConfig(BaseModel):
    """Settings every module has; each module subclasses this with its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # off: not built at all; monitor: verdicts are logged as events but not
    # applied; enforce: verdicts are applied.
    mode: Mode = "enforce"
    # What a crash inside this module does to the request.  None means the
    # policy-wide ``on_module_error``.
    on_error: FailureMode | None = None


class ModuleDisabled(Exception):
    """Raised by a module's constructor to switch itself off; the reason is logged."""


class SecurityModule(ABC):
    """Base class of the security modules."""

    #: The name the policy uses for this module.
    name: ClassVar[str]
    #: The module's settings model.
    Config: ClassVar[type[ModuleConfig]]
    #: True for modules that also look at final replies (observe_reply).
    observes_replies: ClassVar[bool] = False
    # True for a module that also judges requests just before they are relayed.
    checks_relay: ClassVar[bool] = False
    # True for a module that follows calls to their end (on_call).
    observes_calls: ClassVar[bool] = False
    # True for a module with periodic work (on_timer).
    has_timer: ClassVar[bool] = False
    # The Config field ("drop" or "reject") that says how its droppable
    # refusals are answered; the decide step reads it, not the module.
    response_setting: ClassVar[str | None] = None

    def __init__(self, config: ModuleConfig) -> None:
        self.config = config

    @abstractmethod
    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        """Inspect one request; return CONTINUE or a verdict."""

    def check_relay(self, msg: SipRequest, hop: Hop, state: SharedState) -> Outcome:
        """Judge a request about to be relayed over ``hop``; CONTINUE, a verdict or a Rewrite.

        Only called when ``checks_relay`` is True, with the same modes, errors
        and events as :meth:`check`.
        """
        return CONTINUE

    def bind(self, site: Site) -> None:  # noqa: B027 - optional hook, empty by default
        """Take what the module needs of the site (domain, PBX, trunks, TLS); once, at build."""

    def on_timer(self, state: SharedState) -> list[EndCall] | None:
        """Periodic work (merging counts into Redis, ending calls): every 200 ms, in the
        node's timer process, never while a request waits.  Only called when ``has_timer``.
        Calls to end are returned: remediation ends them."""
        return None

    def on_call(self, event: CallEvent, state: SharedState) -> Verdict | None:
        """A tracked call was answered or is over; an Alert becomes an event.

        Only called when ``observes_calls`` is True.
        """
        return None

    def observe_reply(self, reply: ReplyFacts, state: SharedState) -> Ban | None:
        """Look at a final reply to an initial request from outside; maybe ask for a ban.

        Only called when ``observes_replies`` is True.
        """
        return None
