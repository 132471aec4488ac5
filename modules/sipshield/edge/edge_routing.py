"""Reference routing of the edge proxy: everything from outside goes to the PBX.

- Requests from outside (remote users, trunks) go to the inside PBX.  Their
  preloaded Route headers are removed, so nobody outside can use the SBC as an
  open relay.  REGISTERs get a Path header (with the received address) so that
  the PBX reaches the user back through the SBC, NAT included.
- Requests from the PBX follow their Route set (the Path the PBX stored at
  registration) or, when the Request-URI names a trunk's domain or its user
  is a dialled number under one of a trunk's ``numbers`` prefixes, go out
  through that trunk (docs/outbound-calls.md).
- A request from the PBX for another SIP domain is an internet call: when
  the policy's ``internet`` section lets it out, it goes to that domain's
  server as RFC 3263 finds it, over TLS, and the server must prove the domain
  (:mod:`sipshield.edge.server_identity`).  A request from outside (not from
  a trunk) for our domain whose From names another domain is an internet call
  in.  Such a stranger's request for a domain that is not ours is refused: the
  SBC is not an open relay (docs/internet-calling.md).  Our own users' calls
  out go to the PBX, which authenticates them, as before.
- In-dialog requests follow their Record-Route set.
- Just before relaying, the request meets the chain again (the relay phase,
  :meth:`sipshield.core.pipeline.Pipeline.run_relay`): the next hop, the SDP that
  leaves and, for a CANCEL, its INVITE's source are known then.  The router
  only routes: every refusal is a module's verdict, applied by
  :mod:`sipshield.core.remediation` like the request phase's.

Operators with their own routing keep it and call only the pipeline
(see the drop-in configuration); this class is what the reference
``kamailio.cfg`` uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sipshield.checks.dialog_guard import DialogTokens
from sipshield.checks.tls_policy import SIPS_NEEDS_TLS, next_hop_is_tls, sips_next_hop_problem
from sipshield.core import remediation
from sipshield.core.events import Event, EventSink
from sipshield.core.hop import Hop, Source
from sipshield.core.internet import inbound_problem, outbound_problem
from sipshield.core.policy import Policy, PolicyError
from sipshield.core.site import Site, TrunkSite
from sipshield.edge.media import (
    MEDIA_METHODS,
    OUT_LEG_PARAM,
    TEARDOWN_METHODS,
    AnchoredSdp,
    Leg,
    MediaAnchor,
)
from sipshield.edge.server_identity import ServerIdentityCheck
from sipshield.edge.topology_hiding import TOPOS_SKIPS
from sipshield.sip.ksr_message import read_pv
from sipshield.sip.message import SipRequest

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
# Our Record-Route parameter on an internet call: its in-dialog requests are
# internet ones too (media policy, and the replies' server check).
INTERNET_PARAM = "sinet=1"
RELAYING_DENIED = "Relaying Denied"
INTERNET_REFUSED = "Internet Call Refused"


# The relay phase: judge a request about to leave over a hop, and apply the
# decision; True when it was stopped (answered or dropped).
ScreenRelay = Callable[[SipRequest, Hop], bool]


def _invite_source(ksr: Any) -> Source:
    """The source of the INVITE that the current CANCEL matched (after t_check_trans)."""
    pv = ksr.pv
    return (
        read_pv(pv, "$T_inv($si)") or "",
        int(pv.get("$T_inv($sp)") or 0),
        (read_pv(pv, "$T_inv($pr)") or "").lower(),
    )


def _trunk_uri(trunk: TrunkSite) -> str:
    return f"sip:{trunk.config.target};transport={trunk.config.transport}"


class EdgeRouter:
    def __init__(
        self,
        policy: Policy,
        site: Site,
        ksr: Any,
        screen_relay: ScreenRelay | None = None,
        media: MediaAnchor | None = None,
        tokens: DialogTokens | None = None,
        events: EventSink | None = None,
        server_identity: ServerIdentityCheck | None = None,
    ) -> None:
        self.ksr = ksr
        self.events = events
        self.internet = policy.internet
        # Checks that the server of a called domain proves it (needed for calls out).
        self.server_identity = server_identity
        # Whether the request being routed is an internet call (its media leg's class).
        self.internet_call = False
        # None when no module judges the relay phase: no hop to describe.
        self.screen_relay = screen_relay
        # Media anchoring in rtpengine (sipshield.edge.media), when the policy has media.
        self.media = media
        # Signed dialog tokens in our Record-Route (dialog_guard's keys), when enabled.
        self.tokens = tokens
        # Keepalive OPTIONS to users behind NAT, sent by Kamailio's nat_traversal
        # (loaded by the reference kamailio.cfg; KSR has it only when loaded).
        self.nat_keepalive = hasattr(ksr, "nat_traversal")
        # Calls out through trunks are tracked by the dialog module, when loaded.
        self.track_calls = hasattr(ksr, "dialog")
        if not self.nat_keepalive:
            log.warning(
                "nat_traversal is not loaded: users registered from behind NAT get no keepalive"
            )
        self.site = site
        # Topology hiding (Kamailio's topos) changes two things here.  An
        # in-dialog request names the SBC itself in its Request-URI (topos's
        # Contact): for a call that crosses the SBC twice (outside -> PBX ->
        # outside), the one towards the PBX still does after topos restored it,
        # which is not strict routing from a previous hop.  And topos hides
        # only what is record-routed, dialog or not.
        self.hides_topology = policy.topology_hiding.enabled
        self.record_route_address = policy.record_route_address
        if self.record_route_address and ksr.is_myself(f"sip:{self.record_route_address}") <= 0:
            raise PolicyError(
                "record_route_address",
                [
                    f"record_route_address: {self.record_route_address} is not an address of "
                    "this node; alias it in kamailio.cfg (define CLUSTER_ADDRESS)"
                ],
            )
        self.trunk_by_domain = {
            domain.lower(): trunk for trunk in site.trunks for domain in trunk.config.domains
        }

    def route(self, msg: SipRequest) -> None:
        k = self.ksr
        self.internet_call = False
        if k.maxfwd.process_maxfwd(10) < 0:
            remediation.reply(k, 483, "Too Many Hops")
            return
        if msg.method == "CANCEL":
            if k.tm.t_check_trans() > 0:
                self._relay(msg)
            elif self.screen_relay is not None:
                # Nothing to cancel: cancel_guard answers 481; otherwise it is dropped.
                self.screen_relay(msg, self._hop(msg, None, invite_source=None))
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
            remediation.reply(k, 200, "OK")
            return
        # Retransmissions are absorbed by the transaction they belong to.
        if k.tmx.t_precheck_trans() > 0:
            k.tm.t_check_trans()
            return
        if k.tm.t_check_trans() == 0:
            return
        if msg.from_pbx:
            self._route_from_pbx(msg)
        else:
            self._route_from_outside(msg)

    def _route_in_dialog(self, msg: SipRequest) -> None:
        k = self.ksr
        if msg.method == "ACK" and msg.acks_failed_invite:
            # The ACK of a negative reply ends its INVITE transaction here, hop
            # by hop: tm absorbs it.  Routing it would hand its body (which a
            # real one never has) to the media anchoring as an answer.
            k.tm.t_check_trans()
            return
        if self._loose_route() > 0:
            if not msg.from_pbx:
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
                    k.setdsturi(self.site.pbx_uri)
            self._relay(msg)
        elif msg.method == "ACK":
            if k.tm.t_check_trans() > 0:
                self._relay(msg)
        else:
            remediation.reply(k, 404, "Not Here")

    def _loose_route(self) -> int:
        if self.hides_topology:
            return self.ksr.rr.loose_route_mode(1)
        return self.ksr.rr.loose_route()

    def _route_from_outside(self, msg: SipRequest) -> None:
        k = self.ksr
        k.hdr.remove("Route")
        stranger = msg.trunk is None and not self._from_us()
        if stranger and not self._for_our_domain():
            # Our own users call out through the PBX, which authenticates them;
            # nobody else has anything to send us for another domain.
            domain = read_pv(k.pv, "$rd") or ""
            reason = f"request from outside for {domain}, not our domain: never relayed"
            self._refuse(msg, 403, RELAYING_DENIED, reason)
            return
        if stranger and msg.method != "REGISTER":
            problem = inbound_problem(self.internet, read_pv(k.pv, "$fd") or "", msg.transport)
            if problem is not None:
                self._refuse(msg, 403, INTERNET_REFUSED, problem)
                return
            self.internet_call = True
        self._keep_reachable(msg)
        if msg.method == "REGISTER":
            # The registrar (the PBX) keeps the Contact as sent; the Path's
            # "received" brings requests back to the NAT binding.
            k.path.add_path_received()
        elif k.is_method_in(OUTSIDE_DIALOG_FORMING):
            self._mark_nated_contact(NAT_TEST_REQUEST)
            self._record_route()
            if self.internet_call:
                k.rr.add_rr_param(";" + INTERNET_PARAM)
            if self.tokens is not None:
                self.tokens.sign_leg(k, msg, towards_outside=False)
        elif self._hidden_outside_dialog(msg):
            self._record_route()
        k.setdsturi(self.site.pbx_uri)
        self._relay(msg)

    def _route_from_pbx(self, msg: SipRequest) -> None:
        k = self.ksr
        if k.is_method_in(OUTSIDE_DIALOG_FORMING):
            self._record_route()
            if self.media is not None:
                # In-dialog requests of this crossing find its media leg by this.
                k.rr.add_rr_param(";" + OUT_LEG_PARAM)
        elif self._hidden_outside_dialog(msg):
            self._record_route()
        # The PBX preloads the Path it stored at registration; the "received"
        # parameter in it becomes the destination (NAT traversal).
        if k.rr.loose_route_preloaded() > 0:
            self._sign_towards_outside(msg)
            self._relay(msg)
            return
        trunk = self._trunk_for()
        if trunk is not None:
            k.setdsturi(_trunk_uri(trunk))
            if trunk.config.transport == "tls" and self.server_identity is not None:
                # Its server's certificate must name the trunk.
                self.server_identity.arm_trunk(self.site.trunks.index(trunk))
        elif self._for_our_domain():
            remediation.reply(k, 404, "No Route")
            return
        elif not self._to_internet(msg):
            return
        self._sign_towards_outside(msg)
        if self.track_calls and msg.method == "INVITE":
            # Kamailio's dialog module follows the call out: its answer, its
            # end (a BYE, or its timeout, which it ends with BYEs) and its
            # failure reach the modules that count calls (ksr_dialog_event).
            k.dialog.dlg_manage()
        self._relay(msg)

    def _to_internet(self, msg: SipRequest) -> bool:
        """Send a request from the PBX towards another domain; False when it was refused.

        The destination is left to Kamailio's resolver (RFC 3263): with
        ``require_tls`` the transport is TLS, so it looks up the SRV of
        ``_sips._tcp.DOMAIN``, then its A/AAAA; otherwise NAPTR chooses
        (kamailio.cfg prefers TLS).
        """
        k = self.ksr
        domain = (read_pv(k.pv, "$rd") or "").lower()
        problem = outbound_problem(self.internet, domain)
        if problem is None and self.server_identity is None:
            problem = "no server check for internet calls (internal error)"
        if problem is not None:
            self._refuse(msg, 403, INTERNET_REFUSED, problem)
            return False
        self.internet_call = True
        if k.is_method_in(OUTSIDE_DIALOG_FORMING):
            k.rr.add_rr_param(";" + INTERNET_PARAM)
        if self.internet.require_tls:
            k.setdsturi(f"sip:{domain};transport=tls")
        self.server_identity.arm_internet(domain)  # type: ignore[union-attr]
        return True

    def _from_us(self) -> bool:
        """The From names our domain, or this node: phones often write the
        address they register to (the SBC's) as their domain."""
        domain = (read_pv(self.ksr.pv, "$fd") or "").lower()
        if domain == self.site.domain:
            return True
        return bool(domain) and self.ksr.is_myself(f"sip:{domain}") > 0

    def _for_our_domain(self) -> bool:
        """The Request-URI names our domain or this node (its address, an alias)."""
        return self._in_own_domain("$rd") or self.ksr.is_myself_ruri()

    def _refuse(self, msg: SipRequest, code: int, phrase: str, reason: str) -> None:
        """The router's own refusal of an internet or relay request: answered, and an event."""
        log.warning("refusing %s %s: %s", msg.method, msg.call_id, reason)
        if self.events is not None:
            self.events.emit(Event.of_request(msg, "internet", "reject", reason))
        remediation.reply(self.ksr, code, phrase)

    def _trunk_for(self) -> TrunkSite | None:
        """Where a request from the PBX leaves: the trunk of its domain, else of its number."""
        pv = self.ksr.pv
        by_domain = self.trunk_by_domain.get((read_pv(pv, "$rd") or "").lower())
        if by_domain is not None:
            return by_domain
        return self.site.trunk_for_number(read_pv(pv, "$rU") or "")

    def _hidden_outside_dialog(self, msg: SipRequest) -> bool:
        """A request outside a dialog that topos hides (MESSAGE, OPTIONS, NOTIFY...).

        topos leaves REGISTER and PUBLISH alone: they end at the registrar.
        """
        return self.hides_topology and msg.method not in TOPOS_SKIPS

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
        return (read_pv(self.ksr.pv, host_spec) or "").lower() == self.site.domain

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

    def on_reply(self) -> bool:
        """Every reply (Kamailio's core reply route): a callee behind NAT keeps reachable.

        True when the reply comes from the PBX.
        """
        k = self.ksr
        from_pbx = self.site.is_pbx(read_pv(k.pv, "$si") or "", int(k.pv.get("$sp") or 0))
        status = int(k.pv.get("$rs") or 0)
        if not from_pbx and 100 < status < 300:
            self._mark_nated_contact(NAT_TEST_REPLY)
        return from_pbx

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

    def _relay(self, msg: SipRequest) -> None:
        k = self.ksr
        leg, anchored = None, None
        # A BYE or CANCEL frees media: it is judged first, so a forged one
        # that the relay phase refuses takes nothing with it.
        teardown = msg.method in TEARDOWN_METHODS
        if teardown and self._stopped(msg, None):
            return
        if self.media is not None and msg.method in MEDIA_METHODS:
            leg = self._media_leg(msg)
            outcome = self.media.on_request(msg, leg)
            if outcome.refusal is not None:
                remediation.reply(k, outcome.refusal.code, outcome.refusal.reason)
                return
            anchored = outcome.anchored
        if not teardown and (self._stopped(msg, anchored) or self._breaks_sips(msg)):
            if anchored is not None and leg is not None and not msg.in_dialog:
                self.media.drop_branch(msg, leg)  # type: ignore[union-attr]
            return
        if anchored is not None:
            # In a multipart body (SIP-I) only the SDP part changes.
            remediation.rewrite_body(k, anchored.part, anchored.sdp)
        if leg is not None:
            self.media.arm(msg, leg)  # type: ignore[union-attr]
        if k.tm.t_relay() < 0:
            remediation.reply_relay_error(k)
            if anchored is not None and leg is not None and not msg.in_dialog:
                self.media.drop_branch(msg, leg)  # type: ignore[union-attr]

    def _breaks_sips(self, msg: SipRequest) -> bool:
        """A sips: Request-URI never leaves over a plain hop, whatever the policy.

        RFC 3261 26.2.2 makes it a routing rule: tls_policy reports it (and
        refuses it first when it enforces); this refuses it without it.
        """
        if msg.method == "ACK":
            return False
        pv = self.ksr.pv
        ruri = read_pv(pv, "$ru") or ""
        problem = sips_next_hop_problem(ruri, read_pv(pv, "$du") or ruri)
        if problem is None:
            return False
        log.warning("refusing %s %s: %s", msg.method, msg.call_id, problem)
        remediation.reply(self.ksr, 403, SIPS_NEEDS_TLS)
        return True

    def _stopped(self, msg: SipRequest, anchored: AnchoredSdp | None) -> bool:
        """The relay phase: True when a module refused the request (answered or dropped)."""
        if self.screen_relay is None:
            return False
        invite = _invite_source(self.ksr) if msg.method == "CANCEL" else None
        return self.screen_relay(msg, self._hop(msg, anchored, invite))

    def _hop(
        self, msg: SipRequest, anchored: AnchoredSdp | None, invite_source: Source | None
    ) -> Hop:
        pv = self.ksr.pv
        ruri = read_pv(pv, "$ru") or ""
        next_hop = read_pv(pv, "$du") or ruri
        return Hop(
            next_hop=next_hop,
            ruri=ruri,
            tls=next_hop_is_tls(next_hop),
            anchored=anchored.sdp if anchored is not None else None,
            invite_source=invite_source,
        )

    def _media_leg(self, msg: SipRequest) -> Leg:
        k = self.ksr
        from_pbx = msg.from_pbx
        # In dialog, our Record-Route (now the consumed Route) says which crossing.
        out_leg = k.rr.check_route_param(OUT_LEG_PARAM) > 0 if msg.in_dialog else from_pbx
        internet = (
            k.rr.check_route_param(INTERNET_PARAM) > 0 if msg.in_dialog else self.internet_call
        )
        next_hop = (read_pv(k.pv, "$nh(d)") or "", (read_pv(k.pv, "$nh(P)") or "").lower())
        return self.media.leg(msg, from_pbx, out_leg, next_hop, internet)  # type: ignore[union-attr]
