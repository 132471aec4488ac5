"""SIP message validation: refuse requests that break RFC 3261 or the policy's limits.

Malformed requests are how parser bugs behind the edge are reached, and how a
request is made to mean one thing to the SBC and another to the PBX (two
Call-IDs, a Content-Length that hides a second message).  Kamailio's core
parser already discards what it cannot parse at all (a broken start line, an
unparsable Via, a missing or doubled Call-ID); this module checks what the core
lets through, on the bytes as received, so every later module and the PBX see
only well-formed requests.

The checks are pure functions over the raw bytes and one
:class:`~sipshield.sip.message.RawSipMessage` parse, run in a fixed order; the
first problem found decides the answer.  Requests inside a dialog get the same
checks: malformed is malformed, whoever sends it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, STANDARD_PHRASES, Outcome, Reject
from sipshield.sip.ksr_message import MAX_NON_UTF8_MESSAGE, MessageUnreadable
from sipshield.sip.message import MalformedMessage, RawSipMessage
from sipshield.sip.sdp_body import UNSUPPORTED_MEDIA_TYPE, BodyProblem, media_type, multipart_parts
from sipshield.sip.sip_syntax import (
    CALL_ID_CHARS,
    SipSyntaxError,
    check_name_addr,
    check_uri,
    check_via,
    is_number,
    is_token,
    only,
    split_address_list,
    uri_scheme,
)

_CALL_ID = only(CALL_ID_CHARS)

if TYPE_CHECKING:
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

DEFAULT_METHODS = (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
    "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
)  # fmt: skip
DEFAULT_CONTENT_TYPES = (
    "application/sdp",
    "multipart/mixed",
    "multipart/alternative",
    "multipart/related",
    "application/dtmf-relay",
    "application/dtmf",
    "text/plain",
    "application/pidf+xml",
    "application/xpidf+xml",
    "application/rlmi+xml",
    "application/reginfo+xml",
    "application/dialog-info+xml",
    "application/watcherinfo+xml",
    "application/im-iscomposing+xml",
    "application/simple-message-summary",
    "application/isup",
    "message/sipfrag",
    "message/cpim",
    "message/imdn+xml",
    "application/resource-lists+xml",
    "application/conference-info+xml",
    "application/simple-filter+xml",
    "application/media_control+xml",
)
# Exactly one of each in every request (RFC 3261 section 8.1.1); Via may repeat.
SINGLE_HEADERS = {
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "max-forwards": "Max-Forwards",
}
# At most one: two different values are how a body is hidden from one parser.
AT_MOST_ONE_HEADERS = {"content-length": "Content-Length", "content-type": "Content-Type"}
# Transports where only Content-Length marks the end of a message.
STREAM_TRANSPORTS = frozenset(("tcp", "tls", "ws", "wss"))
MAX_CSEQ = 2**31 - 1
MAX_MAX_FORWARDS = 255
# Lists of addresses; the router and the registrar act on their URIs.
ADDRESS_LIST_HEADERS = {"route": "Route", "record-route": "Record-Route", "contact": "Contact"}

# Head bytes a request may carry: HTAB, CR, LF, printable ASCII, and bytes
# above 0x7f (UTF-8, or the Latin-1 that old phones put in display names).
_HEAD_BYTES = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x7F), *range(0x80, 0x100)])


class ValidationConfig(ModuleConfig):
    name: Literal["validation"] = "validation"
    # Request methods accepted; others are answered 405 with an Allow header.
    methods: tuple[str, ...] = Field(default=DEFAULT_METHODS, min_length=1)
    # Request-URI schemes accepted; others are answered 416.
    uri_schemes: tuple[str, ...] = Field(default=("sip", "sips", "tel"), min_length=1)
    # Body media types accepted (each part of a multipart, nested multiparts
    # included); others get 415.  How multiparts are split, how deep they may
    # nest and how many parts they may hold is sipshield.sip.sdp_body's to say.
    content_types: tuple[str, ...] = Field(default=DEFAULT_CONTENT_TYPES, min_length=1)
    # Above a UDP datagram's usual size on purpose: large SDP and SIP-I bodies
    # over TCP are legitimate.  Larger messages get 413.  The ceiling is the
    # largest message Kamailio can hand to Python when it is not UTF-8.
    max_message_bytes: int = Field(default=16384, ge=1024, le=MAX_NON_UTF8_MESSAGE)
    max_headers: int = Field(default=80, ge=10, le=1000)
    # Also the limit of the Request-URI (414 above it).
    max_header_value_bytes: int = Field(default=2048, ge=128, le=65535)
    # reject: a stateless reply saying what is wrong; drop: say nothing.
    # A malformed ACK is always dropped: an ACK is never answered.
    response: Literal["reject", "drop"] = "reject"

    @field_validator("methods")
    @classmethod
    def _methods_are_tokens(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        bad = [method for method in methods if not is_token(method)]
        if bad:
            raise ValueError(f"not SIP method names: {', '.join(bad)}")
        return methods

    @field_validator("uri_schemes", "content_types")
    @classmethod
    def _lower_case(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip().lower() for name in names)


@dataclass(frozen=True)
class Problem:
    """What is wrong with a request.

    ``summary`` is fixed text, safe to put in the reply; ``detail`` may quote
    the request and goes only to logs and events.
    """

    code: int
    summary: str
    detail: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def phrase(self) -> str:
        return f"{STANDARD_PHRASES[self.code]} ({self.summary})"


def _bad(summary: str, detail: str = "") -> Problem:
    return Problem(400, summary, detail)


def _byte_length(text: str) -> int:
    # RawSipMessage decodes with surrogateescape, so this is the length on the wire.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def check_raw(raw: bytes, rules: ValidationConfig) -> Problem | None:
    """Checks that need the bytes: size, end of headers, characters, line ends."""
    if len(raw) > rules.max_message_bytes:
        return Problem(
            413, "message too large", f"{len(raw)} bytes, limit {rules.max_message_bytes}"
        )
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
        if end < 0:
            return _bad("headers not terminated")
    head = raw[:end]
    stray = head.translate(None, _HEAD_BYTES)
    if stray:
        return _bad("control character", f"byte 0x{stray[0]:02x} before the body")
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf:
        return _bad("bare CR in headers")
    if crlf and head.count(b"\n") != crlf:
        return _bad("mixed line endings")
    return None


def check_start_line(msg: RawSipMessage, rules: ValidationConfig) -> Problem | None:
    if not is_token(msg.method):
        return _bad("invalid method", f"method {msg.method[:40]!r}")
    if msg.version.upper() != "SIP/2.0":
        return Problem(505, "only SIP/2.0", f"version {msg.version[:20]!r}")
    if msg.method not in rules.methods:
        return Problem(
            405,
            "method not allowed",
            f"method {msg.method[:40]}",
            (("Allow", ", ".join(rules.methods)),),
        )
    if _byte_length(msg.ruri) > rules.max_header_value_bytes:
        return Problem(
            414,
            "Request-URI too long",
            f"{_byte_length(msg.ruri)} bytes, limit {rules.max_header_value_bytes}",
        )
    try:
        scheme = uri_scheme(msg.ruri)
        if scheme not in rules.uri_schemes:
            return Problem(416, "URI scheme not allowed", f"scheme {scheme[:20]!r}")
        check_uri(msg.ruri)
    except SipSyntaxError as exc:
        return _bad("malformed Request-URI", str(exc))
    return None


def check_header_lines(msg: RawSipMessage, rules: ValidationConfig) -> Problem | None:
    if len(msg.headers) > rules.max_headers:
        return _bad("too many headers", f"{len(msg.headers)}, limit {rules.max_headers}")
    for name, value in msg.headers:
        if not is_token(name):
            return _bad("invalid header name", f"header name {name[:40]!r}")
        if _byte_length(value) > rules.max_header_value_bytes:
            return _bad(
                "header value too long",
                f"{name}: {_byte_length(value)} bytes, limit {rules.max_header_value_bytes}",
            )
    return None


def check_header_counts(msg: RawSipMessage, rules: ValidationConfig) -> Problem | None:
    counts = Counter(name for name, _ in msg.headers)
    if not counts["via"]:
        return _bad("missing Via")
    for name, display in SINGLE_HEADERS.items():
        if not counts[name]:
            return _bad(f"missing {display}")
    for name, display in (SINGLE_HEADERS | AT_MOST_ONE_HEADERS).items():
        if counts[name] > 1:
            return _bad(f"duplicate {display}")
    return None


def check_identifiers(msg: RawSipMessage, rules: ValidationConfig) -> Problem | None:
    """Call-ID, CSeq and Max-Forwards (each present exactly once by now)."""
    call_id = msg.call_id
    if not _CALL_ID.fullmatch(call_id):
        return _bad("malformed Call-ID")
    cseq = (msg.header("cseq") or "").split()
    if len(cseq) != 2 or not is_number(cseq[0], 10) or int(cseq[0]) > MAX_CSEQ:
        return _bad("malformed CSeq", f"CSeq {' '.join(cseq)[:40]!r}")
    if cseq[1] != msg.method:
        return _bad(
            "CSeq method does not match",
            f"CSeq method {cseq[1][:40]!r}, request method {msg.method}",
        )
    max_forwards = msg.header("max-forwards") or ""
    if not is_number(max_forwards, 3) or int(max_forwards) > MAX_MAX_FORWARDS:
        return _bad("malformed Max-Forwards", f"Max-Forwards {max_forwards[:20]!r}")
    if int(max_forwards) == 0:
        return Problem(483, "Max-Forwards is 0")
    return None


def check_routing_headers(msg: RawSipMessage, rules: ValidationConfig) -> Problem | None:
    """Every Via entry, the From and To addresses, and every Route and Contact address."""
    for value in msg.header_values("via"):
        try:
            check_via(value)
        except SipSyntaxError as exc:
            return _bad("malformed Via", str(exc))
    for name in ("from", "to"):
        try:
            check_name_addr(msg.header(name) or "")
        except SipSyntaxError as exc:
            return _bad(f"malformed {name.capitalize()}", str(exc))
    for name, display in ADDRESS_LIST_HEADERS.items():
        for value in msg.header_values(name):
            if name == "contact" and value == "*":
                continue  # REGISTER's "remove every binding"
            try:
                for address in split_address_list(value):
                    check_name_addr(address)
            except SipSyntaxError as exc:
                return _bad(f"malformed {display}", str(exc))
    return None


def check_body(msg: RawSipMessage, rules: ValidationConfig) -> Problem | None:
    """Content-Length against the body, and the body's media types.

    A multipart body is split as :mod:`sipshield.sip.sdp_body` splits it for the
    media modules, so what is judged here is what they act on; every part's
    type is checked, nested multiparts included.
    """
    length = msg.header("content-length")
    if length is None and msg.transport in STREAM_TRANSPORTS:
        # Only the length says where a message ends on a stream.  Kamailio's
        # core refuses these itself unless tcp_accept_no_cl is on, which the
        # metrics listener needs (HTTP GETs carry none): refused here either way.
        return _bad(
            "missing Content-Length",
            f"required over {msg.transport.upper()} (RFC 3261 section 18.3)",
        )
    if length is not None:
        if not is_number(length, 10):
            return _bad("malformed Content-Length", f"Content-Length {length[:20]!r}")
        if int(length) != len(msg.body):
            # A shorter length hides bytes from one parser and not another.
            return _bad(
                "Content-Length does not match the body",
                f"Content-Length {int(length)}, body {len(msg.body)} bytes",
            )
    if not msg.body:
        return None
    content_type = msg.header("content-type")
    if content_type is None:
        return _bad("body without Content-Type")
    problem = _check_media_type(content_type, rules)
    if problem or not media_type(content_type).startswith("multipart/"):
        return problem
    parts = multipart_parts(content_type, msg.body, with_containers=True)
    if isinstance(parts, BodyProblem):
        if parts.code == UNSUPPORTED_MEDIA_TYPE:  # too deep, too many parts
            return _unsupported("multipart body not supported", parts.reason, rules)
        return _bad("malformed body", parts.reason)
    for part in parts:
        problem = _check_media_type(part.content_type, rules)
        if problem:
            return problem
    return None


def _check_media_type(content_type: str, rules: ValidationConfig) -> Problem | None:
    media = media_type(content_type)
    kind, slash, subtype = media.partition("/")
    if not (slash and is_token(kind) and is_token(subtype)):
        return _bad("malformed Content-Type", f"Content-Type {content_type[:60]!r}")
    if media not in rules.content_types:
        return _unsupported("body type not allowed", f"Content-Type {media[:60]}", rules)
    return None


def _unsupported(summary: str, detail: str, rules: ValidationConfig) -> Problem:
    # A 415 must say what is accepted (RFC 3261 section 21.4.13).
    return Problem(415, summary, detail, (("Accept", ", ".join(rules.content_types)),))


CHECKS: tuple[Callable[[RawSipMessage, ValidationConfig], Problem | None], ...] = (
    check_start_line,
    check_header_lines,
    check_header_counts,
    check_identifiers,
    check_routing_headers,
    check_body,
)


def find_problem(raw: bytes, rules: ValidationConfig, transport: str = "udp") -> Problem | None:
    """The first thing wrong with a request received over ``transport``, or None."""
    problem = check_raw(raw, rules)
    if problem:
        return problem
    try:
        msg = RawSipMessage(raw, transport=transport)
    except MalformedMessage as exc:
        return _bad("malformed message", str(exc))
    for check in CHECKS:
        problem = check(msg, rules)
        if problem:
            return problem
    return None


class SipValidation(SecurityModule):
    name = "validation"
    Config = ValidationConfig
    response_setting = "response"

    def __init__(self, config: ValidationConfig) -> None:
        super().__init__(config)
        self.rules = config

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        try:
            raw = msg.raw
        except MessageUnreadable as exc:
            # Only a message above the largest size allowed here is unreadable.
            return self._verdict(Problem(413, "message too large", str(exc)))
        return self.judge(raw, msg.transport)

    def judge(self, raw: bytes, transport: str = "udp") -> Outcome:
        """The verdict on a request given as the bytes received over ``transport``."""
        problem = find_problem(raw, self.rules, transport)
        if problem is None:
            return CONTINUE
        return self._verdict(problem)

    def _verdict(self, problem: Problem) -> Outcome:
        reason = f"{problem.summary}: {problem.detail}" if problem.detail else problem.summary
        # An ACK is never answered: the decide step drops its refusal.
        return Reject(
            reason,
            code=problem.code,
            phrase=problem.phrase,
            headers=problem.headers,
            droppable=True,
        )
