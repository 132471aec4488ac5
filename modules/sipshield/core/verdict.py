"""What a security module answers for a request.

A module returns :data:`CONTINUE` to let the next module look at the request,
or one of the verdicts below to stop the pipeline.  Anything else is a bug in
the module, and the pipeline says which module returned it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

# The reason phrase a Reject sends unless it names its own.
STANDARD_PHRASES: dict[int, str] = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    505: "Version Not Supported",
    603: "Decline",
}


class _Continue:
    """Singleton meaning "nothing to say, ask the next module"."""

    _instance: _Continue | None = None

    def __new__(cls) -> _Continue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "CONTINUE"


CONTINUE: Final = _Continue()


@dataclass(frozen=True)
class Verdict:
    """Base of every stopping verdict; ``reason`` ends up in logs and events."""

    reason: str

    @property
    def action(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True)
class Accept(Verdict):
    """Stop checking and let the request through (for example an allowlisted peer)."""


@dataclass(frozen=True)
class Alert(Verdict):
    """Let the request go on, but report it: an event, and the next module runs.

    For what is suspicious but not proof (a registration that moves); the
    policy decides per module whether such a finding alerts or denies.
    """


@dataclass(frozen=True)
class Reject(Verdict):
    """Answer the request statelessly with ``code`` and never forward it.

    ``reason`` is the detail for logs and events; ``phrase`` is the reason
    phrase the peer sees (by default the standard one for the code), so that a
    reply tells an attacker no more than the policy wants.
    """

    code: int = 403
    phrase: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=())
    # The module's policy may answer this refusal by dropping the request
    # instead (its ``response: drop``); the decide step applies that choice.
    droppable: bool = False

    def __post_init__(self) -> None:
        if not 400 <= self.code <= 699:
            raise ValueError(f"Reject needs a 4xx-6xx code, got {self.code}")


@dataclass(frozen=True)
class Drop(Verdict):
    """Silently discard the request: no reply, nothing forwarded."""


@dataclass(frozen=True)
class Rewrite(Verdict):
    """Let the request go on with one part of its body replaced by ``text`` (before relaying only).

    ``part`` is where that text is in the body (:class:`sipshield.sip.sdp_body.SdpPart`:
    an SDP, or a text part located the same way); ``content_type`` is the body's
    type when the part is the whole body; ``verb`` names the change in events
    (sdes_guard's is "strip").  A rewrite does not stop the chain: the modules
    after it still judge the request.
    """

    part: Any = None
    text: str = ""
    verb: str = "rewrite"
    content_type: str = "application/sdp"

    @property
    def action(self) -> str:
        return self.verb


@dataclass(frozen=True)
class Ban(Verdict):
    """Ban the source (``scope="ip"``), the user from that source (``"user"``), or an
    account wherever it calls from (``"account"``, ``user`` naming it).

    The request is dropped, or answered with ``code`` when one is given (a
    call from the PBX, which would only retransmit a dropped one), and the
    decision step (:mod:`sipshield.core.bans`) sets the TTL, which grows with
    repeat offences, unless ``ttl_s`` is given.
    """

    scope: Literal["ip", "user", "account"] = "ip"
    user: str = ""
    ttl_s: int | None = None
    code: int | None = None
    phrase: str = ""


@dataclass(frozen=True)
class EndCall(Verdict):
    """End a call in progress that this node follows: Kamailio's dialog module sends
    the BYE to both parties (found by Call-ID and tags).  From periodic work only."""

    call_id: str = ""
    from_tag: str = ""
    to_tag: str = ""

    @property
    def action(self) -> str:
        return "end"


Outcome = _Continue | Verdict

STOPS_REQUEST: Final = (Reject, Drop, Ban)


@dataclass(frozen=True)
class Decision:
    """The chain's answer: the stopping verdict and who gave it, and the rewrites to make."""

    verdict: Verdict | None = None
    module: str = ""
    rewrites: tuple[Rewrite, ...] = ()


PASS: Final = Decision()


def decided_response(verdict: Verdict, method: str, drops: bool) -> Verdict:
    """The decide step's form of a refusal.

    A droppable refusal is dropped when the module's policy says ``drop``;
    any refusal of an ACK is dropped, as an ACK is never answered.
    """
    if isinstance(verdict, Reject) and (method == "ACK" or (drops and verdict.droppable)):
        return Drop(verdict.reason)
    return verdict
