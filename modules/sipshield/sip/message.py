"""The read-only view of a SIP request that security modules inspect.

Modules are written against :class:`SipRequest`.  Inside Kamailio the view is
:class:`sipshield.sip.ksr_message.KsrMessage`, which asks Kamailio's parser lazily,
field by field, so a module that never looks at the body never pays for it.
In unit tests, and wherever raw bytes are at hand, :class:`RawSipMessage`
parses a message itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

from sipshield.core.site import Site, TrunkSite
from sipshield.sip.body_parts import ContentPart, body_parts
from sipshield.sip.sdp_body import BodyProblem, SdpPart, find_sdp
from sipshield.sip.sip_syntax import SipSyntaxError, closing_quote

# RFC 3261 section 7.3.3 and the IANA registry: compact header names.
COMPACT_HEADERS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_TAG = re.compile(r";\s*tag\s*=\s*([^;>\s]+)", re.IGNORECASE)
_URI_IN_ANGLES = re.compile(r"<([^>]*)>")
_USER_PART = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:([^@;?>]+)@")


def canonical_header_name(name: str) -> str:
    """Lower-cased long form of a header name (``i`` and ``CALL-ID`` give ``call-id``)."""
    known = _CANONICAL.get(name)
    if known is not None:
        return known
    lowered = name.strip().lower()
    canonical = COMPACT_HEADERS.get(lowered, lowered)
    if len(_CANONICAL) < _CANONICAL_REMEMBERED:  # a peer's invented names must not grow it
        _CANONICAL[name] = canonical
    return canonical


# Header names as they are spelt on the wire -> canonical_header_name(); the
# same few dozen spellings make up nearly every message.
_CANONICAL: dict[str, str] = {}
_CANONICAL_REMEMBERED = 4096


def uri_of(name_addr: str) -> str:
    """The URI inside a From/To/Contact/Refer-To value, with or without angle brackets.

    A quoted display name may itself hold ``<sip:...>``: it is skipped, so the
    URI is the one a SIP parser would route to.  "" when the quotes never close.
    """
    text = name_addr.strip()
    if text.startswith('"'):
        try:
            text = text[closing_quote(text) + 1 :]
        except SipSyntaxError:
            return ""
    inside = _URI_IN_ANGLES.search(text)
    if inside:
        return inside.group(1).strip()
    return text.split(";", 1)[0].strip()


def user_of(uri: str) -> str:
    match = _USER_PART.match(uri)
    return match.group(1) if match else ""


def tag_of(name_addr: str) -> str:
    # The tag is a header parameter, so it lives after the closing '>' if any.
    params = name_addr.rsplit(">", 1)[-1]
    match = _TAG.search(params)
    return match.group(1) if match else ""


_BRANCH = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)


def branch_of(via: str) -> str:
    """The branch parameter of the first via-parm of a Via header value ("" if none)."""
    match = _BRANCH.search(via.split(",", 1)[0])
    return match.group(1) if match else ""


@runtime_checkable
class SipRequest(Protocol):
    """What every security module may read about a request."""

    @property
    def method(self) -> str: ...
    @property
    def ruri(self) -> str: ...
    @property
    def src_ip(self) -> str: ...
    @property
    def src_port(self) -> int: ...
    @property
    def transport(self) -> str: ...
    @property
    def call_id(self) -> str: ...
    @property
    def from_user(self) -> str: ...
    @property
    def from_tag(self) -> str: ...
    @property
    def to_user(self) -> str: ...
    @property
    def to_tag(self) -> str: ...
    @property
    def user_agent(self) -> str: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def body(self) -> bytes: ...

    # The TLS connection the request came on; empty (and False) for UDP and TCP.
    @property
    def tls_version(self) -> str:
        """Negotiated protocol, e.g. "TLSv1.3"."""
        ...

    @property
    def tls_peer_verified(self) -> bool:
        """True when the peer's certificate chain verified against the trusted CAs."""
        ...

    @property
    def tls_peer_certificate(self) -> bytes:
        """The peer's certificate (DER), or b"" when it sent none."""
        ...

    def header(self, name: str) -> str | None:
        """First value of a header (long or compact name), or None."""
        ...

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, in message order."""
        ...

    @property
    def in_dialog(self) -> bool:
        """True when the request carries a To tag, i.e. belongs to a dialog."""
        ...

    @property
    def sdp(self) -> SdpPart | BodyProblem | None:
        """The body's SDP, located once (single or in a multipart body); a problem; or None."""
        ...

    @property
    def body_parts(self) -> list[ContentPart] | BodyProblem:
        """The body's leaves (multiparts split once), [] for none, or a problem."""
        ...

    # Who sent it, as the site knows its peers (sipshield.core.site).
    @property
    def from_pbx(self) -> bool:
        """True when it comes from the inside PBX (its address and port)."""
        ...

    @property
    def trunk(self) -> TrunkSite | None:
        """The trunk whose source networks hold its source address, or None."""
        ...

    @property
    def acks_failed_invite(self) -> bool:
        """True for the ACK of a negative final reply to an INVITE this node relayed.

        That ACK is hop by hop (RFC 3261 17.1.1.3): it has the INVITE's Via
        branch and Route set, the transaction layer absorbs it, and it is never
        relayed.  It carries a To tag but no Record-Route of ours.
        """
        ...


class DerivedFacts:
    """What both views work out from what they read, written once.

    A view subclass provides ``to_tag``, ``header``, ``body``, ``src_ip``,
    ``src_port`` and ``site`` (who is who; None: the sender is a remote user).
    """

    site: Site | None
    to_tag: str
    body: bytes
    src_ip: str
    src_port: int

    def header(self, name: str) -> str | None:
        raise NotImplementedError

    @property
    def in_dialog(self) -> bool:
        return bool(self.to_tag)

    @cached_property
    def sdp(self) -> SdpPart | BodyProblem | None:
        return find_sdp(self.header("content-type"), self.body)

    @cached_property
    def body_parts(self) -> list[ContentPart] | BodyProblem:
        return body_parts(self.header("content-type"), self.body)

    @cached_property
    def from_pbx(self) -> bool:
        return self.site is not None and self.site.is_pbx(self.src_ip, self.src_port)

    @cached_property
    def trunk(self) -> TrunkSite | None:
        return None if self.site is None else self.site.trunk_of(self.src_ip)


class MalformedMessage(ValueError):
    """The bytes are not a SIP request this parser can read."""


@dataclass
class RawSipMessage(DerivedFacts):
    """A SIP request parsed from bytes, tolerant of what RFC 3261 allows.

    It accepts compact names, line folding, any whitespace around the colon and
    unknown headers; it refuses only what cannot be a request at all.
    """

    raw: bytes
    src_ip: str = "127.0.0.1"
    src_port: int = 5060
    transport: str = "udp"
    tls_version: str = ""
    tls_peer_verified: bool = False
    tls_peer_certificate: bytes = b""
    # Only the transaction layer knows; a parsed message is told.
    acks_failed_invite: bool = False
    # Who is who (the PBX, the trunks); without one, the sender is a remote user.
    site: Site | None = None
    method: str = field(init=False)
    ruri: str = field(init=False)
    version: str = field(init=False)
    headers: list[tuple[str, str]] = field(init=False)
    body: bytes = field(init=False)

    def __post_init__(self) -> None:
        head, sep, body = self.raw.partition(b"\r\n\r\n")
        if not sep:
            # Tolerate bare LF line ends; some stacks send them.
            head, sep, body = self.raw.partition(b"\n\n")
        self.body = body
        text = head.decode("utf-8", errors="surrogateescape")
        lines = re.split(r"\r?\n", text)
        if not lines or not lines[0].strip():
            raise MalformedMessage("empty start line")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise MalformedMessage(f"start line has {len(parts)} parts, expected 3")
        self.method, self.ruri, self.version = parts
        self.headers = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t"):
                if not self.headers:
                    raise MalformedMessage("continuation line before any header")
                name, value = self.headers[-1]
                self.headers[-1] = (name, f"{value} {line.strip()}")
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise MalformedMessage(f"header line without a name and colon: {line[:60]!r}")
            self.headers.append((canonical_header_name(name), value.strip()))

    @cached_property
    def _values_by_name(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for hname, value in self.headers:
            index.setdefault(hname, []).append(value)
        return index

    def header_values(self, name: str) -> list[str]:
        return list(self._values_by_name.get(canonical_header_name(name), ()))

    def header(self, name: str) -> str | None:
        values = self._values_by_name.get(canonical_header_name(name))
        return values[0] if values else None

    @cached_property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    @cached_property
    def from_user(self) -> str:
        return user_of(uri_of(self.header("from") or ""))

    @cached_property
    def from_tag(self) -> str:
        return tag_of(self.header("from") or "")

    @cached_property
    def to_user(self) -> str:
        return user_of(uri_of(self.header("to") or ""))

    @cached_property
    def to_tag(self) -> str:
        return tag_of(self.header("to") or "")

    @cached_property
    def user_agent(self) -> str:
        return self.header("user-agent") or ""
