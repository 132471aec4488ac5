"""The lazy :class:`~sipshield.sip.message.SipRequest` view backed by Kamailio's KSR.

Each property asks Kamailio for one pseudo-variable the first time a module
reads it and caches the answer for the rest of the request, so the cost of a
request is only what the enabled modules actually look at.
"""

from __future__ import annotations

import base64
from functools import cached_property
from typing import Any

from sipshield.core.site import Site
from sipshield.sip.cert_names import pem_certificates
from sipshield.sip.message import DerivedFacts

# KSR hands strings to Python as UTF-8, so a value that is not (a binary
# SIP-I body, a Latin-1 display name) is fetched base64-encoded instead; a
# transformation's 64 kB buffer holds that for values up to this size.
MAX_NON_UTF8_MESSAGE = 49149


class MessageUnreadable(ValueError):
    """Kamailio cannot hand this part of the message to Python."""


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def read_pv(pv: Any, spec: str) -> str | None:
    """A pseudo-variable's value; bytes that are not UTF-8 come as surrogates.

    Every value a peer controls must be read through this: KSR hands strings to
    Python as UTF-8 and raises on anything else.
    """
    try:
        value = pv.get(spec)
    except UnicodeDecodeError:
        inner = spec[2:-1] if spec.startswith("$(") else spec[1:]
        encoded = pv.get(f"$({inner}{{s.encode.base64}})")
        if encoded is None:
            raise MessageUnreadable(
                f"{spec} is not UTF-8 and longer than {MAX_NON_UTF8_MESSAGE} bytes"
            ) from None
        return base64.b64decode(str(encoded)).decode("utf-8", errors="surrogateescape")
    return None if value is None else str(value)


class KsrMessage(DerivedFacts):
    """A request as Kamailio parsed it; ``ksr`` is the ``KSR`` module object."""

    def __init__(self, ksr: Any, site: Site | None = None) -> None:
        self._ksr = ksr
        self._pv = ksr.pv
        self.site = site

    def _text(self, spec: str) -> str | None:
        return read_pv(self._pv, spec)

    def _get(self, spec: str) -> str:
        return _str(self._text(spec))

    @cached_property
    def method(self) -> str:
        return self._get("$rm")

    @cached_property
    def ruri(self) -> str:
        return self._get("$ru")

    @cached_property
    def src_ip(self) -> str:
        return self._get("$si")

    @cached_property
    def src_port(self) -> int:
        return int(self._pv.get("$sp") or 0)

    @cached_property
    def transport(self) -> str:
        return self._get("$pr").lower()

    @cached_property
    def call_id(self) -> str:
        return self._get("$ci")

    @cached_property
    def from_user(self) -> str:
        return self._get("$fU")

    @cached_property
    def from_tag(self) -> str:
        return self._get("$ft")

    @cached_property
    def to_user(self) -> str:
        return self._get("$tU")

    @cached_property
    def to_tag(self) -> str:
        return self._get("$tt")

    @cached_property
    def user_agent(self) -> str:
        return self._get("$ua")

    @cached_property
    def raw(self) -> bytes:
        # $mb is the message buffer as received, before any change by the config.
        return self._get("$mb").encode("utf-8", errors="surrogateescape")

    @cached_property
    def body(self) -> bytes:
        return self._get("$rb").encode("utf-8", errors="surrogateescape")

    # $tls_* variables exist only on a TLS connection; Kamailio logs an error
    # when they are read on another, so they are read only over TLS.
    def _tls(self, spec: str) -> str:
        return self._get(spec) if self.transport == "tls" else ""

    @cached_property
    def tls_version(self) -> str:
        return self._tls("$tls_version")

    @cached_property
    def tls_peer_verified(self) -> bool:
        return self._tls("$tls_peer_verified") == "1"

    @cached_property
    def tls_peer_certificate(self) -> bytes:
        certificates = pem_certificates(self._tls("$tls_peer_raw_cert"))
        return certificates[0] if certificates else b""

    def header(self, name: str) -> str | None:
        return self._text(f"$hdr({name})")

    def header_values(self, name: str) -> list[str]:
        count = int(self._pv.get(f"$hdrc({name})") or 0)
        return [self._get(f"$(hdr({name})[{index}])") for index in range(count)]

    @cached_property
    def acks_failed_invite(self) -> bool:
        # tm matches an ACK to its INVITE transaction by the Via branch only
        # when it acknowledges a negative reply; the ACK of a 2xx (a new
        # branch, end to end) does not match here.
        return self.method == "ACK" and self._ksr.tm.t_lookup_request() > 0
