"""The event packages a request names (RFC 6665's Event header, compact form "o")."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipshield.sip.message import SipRequest


def event_packages(msg: SipRequest) -> list[str]:
    """The package of every Event header and every value of each (lower case,
    parameters dropped): a phone may act on any of them, not only the first."""
    return [
        value.partition(";")[0].strip().lower()
        for line in msg.header_values("event")
        for value in line.split(",")
        if value.strip()
    ]
