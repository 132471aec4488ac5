"""The one place where a verdict is applied to Kamailio.

Modules and the pipeline only decide; this module replies or drops.  The reply
reason phrase is sanitised here because parts of it may come from the request,
and an attacker must not be able to inject header lines through it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sipshield.verdict import Ban, Drop, Reject

if TYPE_CHECKING:
    # For types only: the pipeline imports the modules, and modules read the
    # reply phrases defined here.
    from sipshield.pipeline import Decision

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

_UNSAFE = re.compile(r"[^\x20-\x7e]")
MAX_PHRASE = 120


def reply_phrase(verdict: Reject) -> str:
    phrase = verdict.phrase or STANDARD_PHRASES.get(verdict.code, "Rejected")
    return _UNSAFE.sub("?", phrase)[:MAX_PHRASE]


def apply(decision: Decision, ksr: Any) -> bool:
    """Carry out a decision; True when the request must not be routed further."""
    verdict = decision.verdict
    if isinstance(verdict, Reject):
        for name, value in verdict.headers:
            ksr.hdr.append_to_reply(f"{name}: {_UNSAFE.sub('', value)}\r\n")
        ksr.sl.send_reply(verdict.code, reply_phrase(verdict))
        return True
    # Ending the route without relaying or replying discards a dropped request;
    # a banned source learns nothing either.
    return isinstance(verdict, Drop | Ban)
