"""The one place where a decision is applied to Kamailio.

Modules and the pipeline only decide; this module replies, drops and rewrites
(the router's own answers, such as "no route", go through it too).  The reply
reason phrase is sanitised here because parts of it may come from the request,
and an attacker must not be able to inject header lines through it.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from sipshield.core.verdict import STANDARD_PHRASES, Ban, Decision, Drop, EndCall, Reject
from sipshield.sip.sdp_body import SDP_TYPE

if TYPE_CHECKING:
    from sipshield.sip.sdp_body import SdpPart

log = logging.getLogger("sipshield.core.remediation")
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
    if isinstance(verdict, Ban) and verdict.code is not None:
        ksr.sl.send_reply(verdict.code, reply_phrase(Reject("", verdict.code, verdict.phrase)))
        return True
    # Ending the route without relaying or replying discards a dropped request;
    # a banned source learns nothing either.
    if isinstance(verdict, Drop | Ban):
        return True
    for rewrite in decision.rewrites:
        if not rewrite_body(ksr, rewrite.part, rewrite.text, rewrite.content_type):
            # Relaying the body unchanged would let through what the rewrite removes.
            log.error("rewrite (%s) failed in Kamailio; request refused", rewrite.reason)
            ksr.sl.send_reply(500, "Server Internal Error")
            return True
    return False


def end_calls(ksr: Any, calls: list[EndCall]) -> None:
    """End calls in progress: the dialog module sends the BYEs, to both parties."""
    if not hasattr(ksr, "dialog"):
        log.error("%d calls to end, but Kamailio's dialog module is not loaded", len(calls))
        return
    for call in calls:
        if ksr.dialog.dlg_get(call.call_id, call.from_tag, call.to_tag) > 0:
            ksr.dialog.dlg_bye("all")
        else:
            log.warning("call %s to end is not followed by this node", call.call_id)


def reply(ksr: Any, code: int, phrase: str) -> None:
    """Answer the request with a routing outcome (no route, too many hops, ...)."""
    ksr.sl.send_reply(code, _UNSAFE.sub("?", phrase)[:MAX_PHRASE])


def reply_relay_error(ksr: Any) -> None:
    """Answer a request that could not be relayed with the error tm recorded."""
    ksr.sl.sl_reply_error()


def drop_reply(ksr: Any) -> None:
    """Discard the reply being handled (reply route): it is not relayed."""
    ksr.set_drop()


def close_connection(ksr: Any, connection: str) -> None:
    """Close a TCP/TLS connection by its id (tcpops): nothing more is read from it or sent."""
    if connection:
        ksr.tcpops.tcp_close_connection(int(connection))


def remove_headers(ksr: Any, names: tuple[str, ...]) -> None:
    """Remove every header named in ``names`` from the message being handled."""
    for name in names:
        ksr.hdr.remove(name)


def replace_header(ksr: Any, name: str, value: str) -> None:
    """Replace every ``name`` header of the message being handled with one carrying ``value``."""
    ksr.hdr.remove(name)
    ksr.hdr.append(f"{name}: {_UNSAFE.sub('', value)}\r\n")


def rewrite_body(ksr: Any, part: SdpPart, text: str, content_type: str = SDP_TYPE) -> bool:
    """Have Kamailio relay ``text`` in place of the part found at ``part`` (an SDP by default).

    In a multipart body only the part's text is replaced: the Content-Type, the
    boundary and the other parts stay byte for byte.  Setting the whole body
    again is not possible there, as KEMI strings cannot carry a binary ISUP part
    (whoever located the part made sure the first match of its text is the part).
    False when Kamailio refused the change.
    """
    if part.multipart:
        return bool(ksr.textops.replace_body_str(part.text, text, "f") > 0)
    return bool(ksr.textops.set_body(text, content_type) > 0)
