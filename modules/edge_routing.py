"""Reference routing of the edge proxy: everything from outside goes to the PBX.

- Requests from outside (remote users, trunks) go to the inside PBX.  Their
  preloaded Route headers are removed, so nobody outside can use the SBC as an
  open relay.  REGISTERs get a Path header (with the received address) so that
  the PBX reaches the user back through the SBC, NAT included.
- Requests from the PBX follow their Route set (the Path the PBX stored at
  registration) or, when the Request-URI names a trunk's domain, go out
  through that trunk.
- In-dialog requests follow their Record-Route set.
- Before relaying, a ``sips:`` Request-URI must have a TLS next hop, and SDES
  keys must not leave towards the outside over a plain hop
  (:mod:`sipshield.tls_policy`, :mod:`sipshield.sdes_guard`).  The refusal is
  a 403 for SIPS: the next hop is the policy's, so a retry would meet the same
  hop (480 would invite one); SDES gets 488 like an unacceptable offer.

Operators with their own routing keep it and call only the pipeline
(see the drop-in configuration); this class is what the reference
``kamailio.cfg`` uses.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sipshield import cancel_guard, sdes_guard
from sipshield.dialog_guard import DialogTokens
from sipshield.events import Event, EventSink
from sipshield.ksr_message import read_pv
from sipshield.media import MEDIA_METHODS, OUT_LEG_PARAM, Leg, MediaAnchor, put_sdp
from sipshield.message import SipRequest
from sipshield.policy import Policy, PolicyError
from sipshield.sdp_body import SdpPart, find_sdp
from sipshield.tls_policy import next_hop_is_tls, sips_next_hop_problem

log = logging.getLogger("sipshield.edge")

OUTSIDE_DIALOG_FORMING = "IS"  # KSR.is_method_in letters: INVITE, SUBSCRIBE
# Target-refreshing requests whose Contact must reach the party behind NAT
# (KSR.is_method_in letters): INVITE, SUBSCRIBE, UPDATE (U), NOTIFY (N).
TARGET_REFRESH = "ISUN"
# nathelper's nat_uac_test flags: 1 private (RFC 1918/6598) Contact address,
# 2 source address differs from the Via sent-by, 16 source port differs from it.
NAT_TEST_REQUEST = 1 | 2 | 16
# In a reply the topmost Via is ours: only the Contact tells.
NAT_TEST_REPLY = 1
# Requests whose success makes a user wait for requests from us (calls,
# notifications): from behind NAT over UDP, its binding must be kept open.
# TCP and TLS users keep their own connection open.
KEEPALIVE_METHODS = ("REGISTER", "SUBSCRIBE")
# The host of the message's (first) Contact URI, request or reply.
CONTACT_HOST = "$(ct{nameaddr.uri}{uri.host})"


def _sip_uri(host_port: str, transport: str) -> str:
    return f"sip:{host_port};transport={transport}"


class EdgeRouter:
    def __init__(
        self,
        policy: Policy,
        ksr: Any,
        events: EventSink | None = None,
        media: MediaAnchor | None = None,
    ) -> None:
        self.ksr = ksr
        self.events = events
        # Media anchoring in rtpengine (sipshield.media), when the policy has media.
        self.media = media
        self.sdes = sdes_guard.find_config(policy)
        # Signed dialog tokens in our Record-Route (dialog_guard), when enabled.
        self.tokens = DialogTokens.from_policy(policy)
        self.cancel_guard = cancel_guard.find_config(policy)
        # Keepalive OPTIONS to users behind NAT, sent by Kamailio's nat_traversal
        # (loaded by the reference kamailio.cfg; KSR has it only when loaded).
        self.nat_keepalive = hasattr(ksr, "nat_traversal")
        if not self.nat_keepalive:
            log.warning(
                "nat_traversal is not loaded: users registered from behind NAT get no keepalive"
            )
        self.domain = policy.domain.lower()
        self.record_route_address = policy.record_route_address
        if self.record_route_address and ksr.is_myself(f"sip:{self.record_route_address}") <= 0:
            raise PolicyError(
                "record_route_address",
                [
                    f"record_route_address: {self.record_route_address} is not an address of "
                    "this node; alias it in kamailio.cfg (define CLUSTER_ADDRESS)"
                ],
            )
        pbx = policy.peers.pbx
        host, _, port = pbx.address.rpartition(":")
        self.pbx_source = (host, int(port))
        self.pbx_uri = _sip_uri(pbx.address, pbx.transport)
        self.trunk_by_domain = {
            domain.lower(): _sip_uri(trunk.target, trunk.transport)
            for trunk in policy.peers.trunks
            for domain in trunk.domains
        }

    def route(self, msg: SipRequest) -> None:
        k = self.ksr
        if k.maxfwd.process_maxfwd(10) < 0:
            k.sl.send_reply(483, "Too Many Hops")
            return
        if msg.method == "CANCEL":
            if k.tm.t_check_trans() > 0:
                if self._cancel_allowed(msg):
                    self._relay(msg)
            elif self.cancel_guard is not None:
                k.sl.send_reply(481, "Call/Transaction Does Not Exist")
            return
        if msg.in_dialog:
            self._route_in_dialog(msg)
            return
        if msg.method == "ACK":
            # An ACK for a negative reply is absorbed by its transaction.
            if k.tm.t_check_trans() > 0:
                self._relay(msg)
            return
        if msg.method == "OPTIONS" and not k.corex.has_ruri_user() > 0 and k.is_myself_ruri():
            k.sl.send_reply(200, "OK")
            return
        # Retransmissions are absorbed by the transaction they belong to.
        if k.tmx.t_precheck_trans() > 0:
            k.tm.t_check_trans()
            return
        if k.tm.t_check_trans() == 0:
            return
        if (msg.src_ip, msg.src_port) == self.pbx_source:
            self._route_from_pbx(msg)
        else:
            self._route_from_outside(msg)

    def _route_in_dialog(self, msg: SipRequest) -> None:
        k = self.ksr
        if k.rr.loose_route() > 0:
            if not self._is_from_pbx(msg):
                self._mark_nated_contact(NAT_TEST_REQUEST)
                # A refreshed subscription extends its keepalive.
                self._keep_reachable(msg)
            if not read_pv(k.pv, "$du"):
                # No Route left: the next hop is the Request-URI, and a Contact
                # marked with ;alias= (behind NAT, or a GRUU) is reached at its
                # source address instead.
                k.nathelper.handle_ruri_alias()
                if not read_pv(k.pv, "$du") and self._in_own_domain("$rd"):
                    # Our own domain never goes to DNS: its registrar is the PBX.
                    k.setdsturi(self.pbx_uri)
            self._relay(msg)
        elif msg.method == "ACK":
            if k.tm.t_check_trans() > 0:
                self._relay(msg)
        else:
            k.sl.send_reply(404, "Not Here")

    def _route_from_outside(self, msg: SipRequest) -> None:
        k = self.ksr
        k.hdr.remove("Route")
        self._keep_reachable(msg)
        if msg.method == "REGISTER":
            # The registrar (the PBX) keeps the Contact as sent; the Path's
            # "received" brings requests back to the NAT binding.
            k.path.add_path_received()
        elif k.is_method_in(OUTSIDE_DIALOG_FORMING):
            self._mark_nated_contact(NAT_TEST_REQUEST)
            self._record_route()
            if self.tokens is not None:
                self.tokens.sign_leg(k, msg, towards_outside=False)
        k.setdsturi(self.pbx_uri)
        self._relay(msg)

    def _route_from_pbx(self, msg: SipRequest) -> None:
        k = self.ksr
        if k.is_method_in(OUTSIDE_DIALOG_FORMING):
            self._record_route()
            if self.media is not None:
                # In-dialog requests of this crossing find its media leg by this.
                k.rr.add_rr_param(";" + OUT_LEG_PARAM)
        # The PBX preloads the Path it stored at registration; the "received"
        # parameter in it becomes the destination (NAT traversal).
        if k.rr.loose_route_preloaded() > 0:
            self._sign_towards_outside(msg)
            self._relay(msg)
            return
        trunk = self.trunk_by_domain.get((read_pv(k.pv, "$rd") or "").lower())
        if trunk is None:
            k.sl.send_reply(404, "No Route")
            return
        k.setdsturi(trunk)
        self._sign_towards_outside(msg)
        self._relay(msg)

    def _is_from_pbx(self, msg: SipRequest) -> bool:
        return (msg.src_ip, msg.src_port) == self.pbx_source

    def _mark_nated_contact(self, test: int) -> None:
        """A party behind NAT gets ``;alias=source`` on its Contact, for handle_ruri_alias.

        So does a Contact in our own domain: a GRUU (RFC 5627) that the PBX's
        registrar granted, which linphone uses by default.  The domain may not
        resolve (it does not in the lab), and the party is where its request
        or reply came from.
        """
        k = self.ksr
        if k.is_method_in(TARGET_REFRESH) and (
            k.nathelper.nat_uac_test(test) > 0 or self._in_own_domain(CONTACT_HOST)
        ):
            k.nathelper.add_contact_alias()

    def _in_own_domain(self, host_spec: str) -> bool:
        return (read_pv(self.ksr.pv, host_spec) or "").lower() == self.domain

    def _keep_reachable(self, msg: SipRequest) -> None:
        """Keep a UDP user behind NAT reachable while its registration or subscription lasts.

        nat_traversal reads the expiry from the 2xx that comes back and sends
        an OPTIONS to the request's source once per keepalive interval, from
        the socket the request arrived on, until then; a failed request or an
        expiry of 0 ends it.
        """
        if (
            self.nat_keepalive
            and msg.transport == "udp"
            and msg.method in KEEPALIVE_METHODS
            and self.ksr.nathelper.nat_uac_test(NAT_TEST_REQUEST) > 0
        ):
            self.ksr.nat_traversal.nat_keepalive()

    def on_reply(self) -> None:
        """Every reply (Kamailio's core reply route): a callee behind NAT keeps reachable."""
        k = self.ksr
        source = (read_pv(k.pv, "$si") or "", int(k.pv.get("$sp") or 0))
        status = int(k.pv.get("$rs") or 0)
        if source != self.pbx_source and 100 < status < 300:
            self._mark_nated_contact(NAT_TEST_REPLY)

    def _record_route(self) -> None:
        # A cluster names its shared address, so any node takes the next request.
        if self.record_route_address is None:
            self.ksr.rr.record_route()
        else:
            self.ksr.rr.record_route_advertised_address(self.record_route_address)

    def _sign_towards_outside(self, msg: SipRequest) -> None:
        # The callee leg binds the next hop, so the destination must be set first.
        if self.tokens is not None and self.ksr.is_method_in(OUTSIDE_DIALOG_FORMING):
            self.tokens.sign_leg(self.ksr, msg, towards_outside=True)

    def _cancel_allowed(self, msg: SipRequest) -> bool:
        """A CANCEL must come from its INVITE's source (cancel_guard); False when refused."""
        if self.cancel_guard is None:
            return True
        cancel = (msg.src_ip, msg.src_port, msg.transport)
        problem = cancel_guard.cancel_problem(
            self.cancel_guard, cancel, cancel_guard.invite_source(self.ksr)
        )
        if problem is None:
            return True
        if self.cancel_guard.mode == "monitor":
            self._report(msg, "cancel_guard", "reject", problem, "monitor")
            return True
        self._report(msg, "cancel_guard", "reject", problem)
        self.ksr.sl.send_reply(403, "Forbidden")
        return False

    def _relay(self, msg: SipRequest) -> None:
        k = self.ksr
        leg, anchored = None, None
        if self.media is not None and msg.method in MEDIA_METHODS:
            leg = self._media_leg(msg)
            outcome = self.media.on_request(msg, leg)
            if outcome.refusal is not None:
                k.sl.send_reply(outcome.refusal.code, outcome.refusal.reason)
                return
            anchored = outcome.anchored
        # ACK cannot be answered and CANCEL follows its INVITE.
        if msg.method not in ("ACK", "CANCEL") and not self._hop_allowed(
            msg, anchored.sdp if anchored is not None else None
        ):
            if anchored is not None and leg is not None and not msg.in_dialog:
                self.media.drop_branch(msg, leg)  # type: ignore[union-attr]
            return
        if anchored is not None:
            # In a multipart body (SIP-I) only the SDP part changes.
            put_sdp(k, anchored.part, anchored.sdp)
        if leg is not None:
            self.media.arm(msg, leg)  # type: ignore[union-attr]
        if k.tm.t_relay() < 0:
            k.sl.sl_reply_error()
            if anchored is not None and leg is not None and not msg.in_dialog:
                self.media.drop_branch(msg, leg)  # type: ignore[union-attr]

    def _media_leg(self, msg: SipRequest) -> Leg:
        k = self.ksr
        from_pbx = (msg.src_ip, msg.src_port) == self.pbx_source
        # In dialog, our Record-Route (now the consumed Route) says which crossing.
        out_leg = k.rr.check_route_param(OUT_LEG_PARAM) > 0 if msg.in_dialog else from_pbx
        next_hop = (read_pv(k.pv, "$nh(d)") or "", (read_pv(k.pv, "$nh(P)") or "").lower())
        return self.media.leg(msg, from_pbx, out_leg, next_hop)  # type: ignore[union-attr]

    def _hop_allowed(self, msg: SipRequest, anchored: str | None = None) -> bool:
        """Refuse (and report) what must not cross the next hop; False when refused.

        ``anchored`` is the SDP rtpengine made for this hop: it is what leaves,
        so it is what the SDES rule judges.
        """
        k = self.ksr
        ruri = read_pv(k.pv, "$ru") or ""
        next_hop = read_pv(k.pv, "$du") or ruri
        problem = sips_next_hop_problem(ruri, next_hop)
        if problem:
            self._report(msg, "tls_policy", "reject", problem)
            k.sl.send_reply(403, "SIPS Needs TLS Hop")
            return False
        if self.sdes is None:
            return True
        from_pbx = (msg.src_ip, msg.src_port) == self.pbx_source
        plain = (msg.transport != "tls") if not from_pbx else not next_hop_is_tls(next_hop)
        if anchored is not None:
            # Towards the PBX (the inside hop) the media policy never puts SDES.
            body = anchored.encode() if from_pbx and plain else b""
        else:
            body = sdes_guard.sdp_body(msg) if plain else b""
        if not body:
            return True
        action, stripped = sdes_guard.plain_hop_outcome(self.sdes.on_plain_hop, body)
        if action == "pass":
            return True
        if action == "reject" and not from_pbx:
            # The arrival hop: sdes_guard in the pipeline decided (and reported).
            return True
        why = "SDES keys (a=crypto) in SDP " + (
            f"would leave over a plain hop to {next_hop}"
            if from_pbx
            else f"arrived over {msg.transport}"
        )
        if self.sdes.mode == "monitor":
            self._report(msg, "sdes_guard", action, why, "monitor")
            return True
        if action == "strip" and anchored is None:
            # Only a located SDP is rewritten (in a multipart body, that part alone).
            found = find_sdp(msg.header("content-type"), msg.body)
            if isinstance(found, SdpPart):
                self._report(msg, "sdes_guard", "strip", why + "; stripped, DTLS-SRTP offered")
                put_sdp(k, found, stripped.decode("utf-8", errors="replace"))
                return True
        self._report(msg, "sdes_guard", "reject", why)
        k.sl.send_reply(sdes_guard.NOT_ACCEPTABLE, "Not Acceptable Here")
        return False

    def _report(
        self, msg: SipRequest, module: str, action: str, reason: str, mode: str = "enforce"
    ) -> None:
        if self.events is None:
            return
        # A full disk must not turn into a failed call.
        with contextlib.suppress(Exception):
            self.events.emit(Event.of_request(msg, module, action, reason, mode))
