"""SDES keys never cross a hop that is not TLS.

SDES (RFC 4568) puts the SRTP master keys in the SDP, in ``a=crypto`` lines:
whoever reads the signalling can decrypt the media.  So an SDP with SDES keys
may travel only over TLS.  Two hops are judged:

- the hop a request arrived on, when it came from outside (:meth:`check`);
- the hop a request from the PBX leaves on towards the outside
  (:meth:`check_relay`, with the SDP the media anchoring made, if any).

The link between the SBC and the PBX is the inside hop and is not judged here:
the policy cannot make it TLS yet, and taking SDES off it is the media
anchoring's job (rtpengine terminates SRTP and re-keys each side).

On a plain hop the SDP is either refused (488), or, with ``on_plain_hop:
strip``, its ``a=crypto`` lines are removed when every media section that has
them also offers DTLS-SRTP (``a=fingerprint``), so the call goes on with
DTLS-SRTP; an offer that would be left with no keying at all is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.verdict import CONTINUE, Outcome, Reject, Rewrite
from sipshield.sip.sdp import has_sdes, strip_sdes
from sipshield.sip.sdp_body import BodyProblem, SdpPart

if TYPE_CHECKING:
    from sipshield.core.hop import Hop
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

NOT_ACCEPTABLE = 488


class SdesGuardConfig(ModuleConfig):
    name: Literal["sdes_guard"] = "sdes_guard"
    # reject: 488 for SDES on a plain hop; strip: remove the a=crypto lines
    # where DTLS-SRTP is offered too (488 where it is not).
    on_plain_hop: Literal["reject", "strip"] = "reject"


def sdp_body(msg: SipRequest) -> bytes:
    """The SDP to judge, single or the SDP part of a multipart body, else b"".

    A body whose SDP cannot be located is judged whole: no a=crypto line
    anywhere in it crosses a plain hop.
    """
    found = msg.sdp
    if found is None:
        return b""
    return msg.body if isinstance(found, BodyProblem) else found.sdp


def plain_hop_outcome(on_plain_hop: str, body: bytes) -> tuple[str, bytes]:
    """What to do with an SDP about to cross a plain hop: ("pass"|"strip"|"reject", body)."""
    if not has_sdes(body):
        return "pass", body
    if on_plain_hop == "strip":
        stripped = strip_sdes(body)
        if stripped is not None:
            return "strip", stripped
    return "reject", body


class SdesGuard(SecurityModule):
    name = "sdes_guard"
    Config = SdesGuardConfig
    checks_relay = True

    def __init__(self, config: SdesGuardConfig) -> None:
        super().__init__(config)
        self.settings = config

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        if msg.transport == "tls" or msg.from_pbx:
            return CONTINUE
        body = sdp_body(msg)
        if not body:
            return CONTINUE
        action, _ = plain_hop_outcome(self.settings.on_plain_hop, body)
        if action == "reject":
            return Reject(
                f"SDES keys (a=crypto) in SDP received over {msg.transport}",
                code=NOT_ACCEPTABLE,
            )
        # "strip" is a rewrite: the relay phase makes it (check_relay).
        return CONTINUE

    def check_relay(self, msg: SipRequest, hop: Hop, state: SharedState) -> Outcome:
        if msg.method in ("ACK", "CANCEL"):
            return CONTINUE  # ACK cannot be answered; CANCEL follows its INVITE
        plain = not hop.tls if msg.from_pbx else msg.transport != "tls"
        if not plain:
            return CONTINUE
        if hop.anchored is not None:
            # What leaves is rtpengine's SDP; towards the PBX (the inside hop)
            # the media policy never puts SDES in it.
            body = hop.anchored.encode() if msg.from_pbx else b""
        else:
            body = sdp_body(msg)
        if not body:
            return CONTINUE
        action, stripped = plain_hop_outcome(self.settings.on_plain_hop, body)
        if action == "pass" or (action == "reject" and not msg.from_pbx):
            # The arrival hop's refusal was check()'s, in the request phase.
            return CONTINUE
        why = "SDES keys (a=crypto) in SDP " + (
            f"would leave over a plain hop to {hop.next_hop}"
            if msg.from_pbx
            else f"arrived over {msg.transport}"
        )
        if action == "strip" and hop.anchored is None and isinstance(msg.sdp, SdpPart):
            # Only a located SDP is rewritten (in a multipart body, that part alone).
            return Rewrite(
                why + "; stripped, DTLS-SRTP offered",
                part=msg.sdp,
                text=stripped.decode("utf-8", errors="replace"),
                verb="strip",
            )
        return Reject(why, code=NOT_ACCEPTABLE)
