"""Which class of peer sent a request from outside: a trunk, or a remote user."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sipshield.sip.message import SipRequest

PeerClass = Literal["users", "trunks"]


def peer_class(msg: SipRequest) -> PeerClass:
    return "trunks" if msg.trunk is not None else "users"
