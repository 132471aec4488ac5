"""What is known of a request just before it is relayed: the relay phase's facts.

A request meets the chain twice: when it arrives (:meth:`SecurityModule.check`)
and just before it leaves (:meth:`SecurityModule.check_relay`), once the
router has chosen the next hop, the media anchoring has made the SDP that
leaves, and a CANCEL has been matched to its INVITE.
"""

from __future__ import annotations

from dataclasses import dataclass

# (address, port, transport) of a peer, as Kamailio saw it.
Source = tuple[str, int, str]


@dataclass(frozen=True)
class Hop:
    next_hop: str  # the URI the request is sent to ($du, else the Request-URI)
    ruri: str
    tls: bool  # the hop it leaves on is TLS
    # What rtpengine made of the request's SDP (None when the media is not
    # anchored): it is what leaves in place of the request's own.
    anchored: str | None = None
    # A CANCEL: the source of the INVITE it cancels; None when it matched none.
    invite_source: Source | None = None
