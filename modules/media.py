"""Media anchoring: every call's SDP goes through rtpengine, per the media policy.

The router calls :meth:`MediaAnchor.on_request` just before it relays a
request, and Kamailio's reply route calls :meth:`MediaAnchor.on_reply` for
the replies of the transactions armed here.  Offers and answers are rewritten
with rtpengine's ng ``offer``/``answer``; BYE, CANCEL and failed INVITEs
``delete`` the call.  What rtpengine is told comes from
:mod:`sipshield.media_policy`; this class only moves SDP between Kamailio and
rtpengine.

A call between two outside parties crosses the SBC twice when the PBX is a
proxy (outside -> PBX, then PBX -> outside), with the same Call-ID.  Each
crossing is a *leg* with its own rtpengine call: the leg towards the PBX uses
the Call-ID, the leg from the PBX ``Call-ID~out``.  The SBC's Record-Route on
the second crossing carries ``sml=o`` so in-dialog requests find their leg.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipshield.events import Event, EventSink
from sipshield.ksr_message import read_pv
from sipshield.media_policy import (
    UNAVAILABLE,
    MediaSettings,
    Refusal,
    SdpFacts,
    Side,
    answer_options,
    fails_closed,
    media_problem,
    offer_problem,
    plan_offer,
    reject_media_types,
)
from sipshield.rtpengine import NgError, RtpengineClient

if TYPE_CHECKING:
    from sipshield.message import SipRequest
    from sipshield.policy import Policy

log = logging.getLogger("sipshield.media")

LEG_AVP = "$avp(sipshield_media)"
OUT_LEG_PARAM = "sml=o"
OUT_LEG_SUFFIX = "~out"
OFFER_METHODS = ("INVITE", "UPDATE")
ANSWER_METHODS = ("ACK", "PRACK")
TEARDOWN_METHODS = ("BYE", "CANCEL")
MEDIA_METHODS = OFFER_METHODS + ANSWER_METHODS + TEARDOWN_METHODS


@dataclass(frozen=True)
class Leg:
    """One crossing of the SBC: the rtpengine call and who is on its outside end."""

    key: str  # the rtpengine Call-ID
    peer: str  # the outside party's class: "users" or "trunk:NAME"
    to_inside: bool  # the request being handled goes towards the PBX
    outside_tls: bool  # the signalling hop to the outside party is TLS

    def encode(self, method: str, offered: bool, initial: bool) -> str:
        """The transaction's memo for the reply route (an AVP string)."""
        bits = f"{int(self.to_inside)}{int(self.outside_tls)}{int(offered)}{int(initial)}"
        return "|".join((bits, method, self.peer, self.key))

    @staticmethod
    def decode(memo: str) -> tuple[Leg, str, bool, bool]:
        bits, method, peer, key = memo.split("|", 3)
        return (
            Leg(key, peer, bits[0] == "1", bits[1] == "1"),
            method,
            bits[2] == "1",
            bits[3] == "1",
        )


@dataclass(frozen=True)
class RequestOutcome:
    refusal: Refusal | None = None
    body: str | None = None  # the SDP to relay instead of the received one


def _sdp(content_type: str | None, body: str) -> str | None:
    """The body when it is a single SDP; multipart bodies are not anchored."""
    if not body or not (content_type or "").lower().startswith("application/sdp"):
        return None
    return body


class MediaAnchor:
    def __init__(
        self,
        settings: MediaSettings,
        policy: Policy,
        ksr: Any,
        events: EventSink | None,
        reply_route: str,
    ) -> None:
        self.settings = settings
        self.ksr = ksr
        self.events = events
        self.reply_route = reply_route
        self.trunks = [
            (
                f"trunk:{t.name}",
                [ipaddress.ip_network(n) for n in t.sources],
                t.target.rpartition(":")[0],
            )
            for t in policy.peers.trunks
        ]
        self.inside = Side(settings.pbx, outside=False, tls=False)
        self.client: RtpengineClient | None = None

    def open(self) -> None:
        """Per worker (child_init): sockets are opened on first use, in this process."""
        if self.client is not None:
            self.client.close()
        ng = self.settings.rtpengine
        self.client = RtpengineClient(
            [(a.rpartition(":")[0].strip("[]"), int(a.rpartition(":")[2])) for a in ng.ng],
            timeout=ng.timeout_ms / 1000,
            retries=ng.retries,
            dead_retry_interval=ng.dead_retry_s,
        )

    def _client(self) -> RtpengineClient:
        if self.client is None:
            self.open()
        assert self.client is not None
        return self.client

    # --- legs ---------------------------------------------------------------------

    def classify(self, ip: str) -> str:
        """The peer class of an outside address: the trunk it belongs to, else users."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            address = None
        for name, sources, target in self.trunks:
            if ip == target or (address is not None and any(address in n for n in sources)):
                return name
        return "users"

    def leg(self, msg: SipRequest, from_pbx: bool, out_leg: bool, next_hop: tuple[str, str]) -> Leg:
        """The leg of a request; ``out_leg`` when it belongs to the PBX -> outside crossing,
        ``next_hop`` the (host, transport) it is relayed to."""
        if from_pbx:
            peer, outside_tls = self.classify(next_hop[0].strip("[]")), next_hop[1] == "tls"
        else:
            peer, outside_tls = self.classify(msg.src_ip), msg.transport == "tls"
        key = msg.call_id + (OUT_LEG_SUFFIX if out_leg else "")
        return Leg(key, peer, to_inside=not from_pbx, outside_tls=outside_tls)

    def _outside(self, leg: Leg) -> Side:
        return Side(self.settings.for_class(leg.peer), outside=True, tls=leg.outside_tls)

    # --- requests -----------------------------------------------------------------

    def on_request(self, msg: SipRequest, leg: Leg) -> RequestOutcome:
        outside = self._outside(leg)
        if outside.policy.srtp == "passthrough":
            return RequestOutcome()
        if msg.method in TEARDOWN_METHODS:
            self.delete(leg.key)
            return RequestOutcome()
        sdp = _sdp(msg.header("content-type"), msg.body.decode("utf-8", errors="replace"))
        if sdp is None:
            return RequestOutcome()
        sender, receiver = (outside, self.inside) if leg.to_inside else (self.inside, outside)
        facts = SdpFacts.parse(sdp)
        try:
            if msg.method in OFFER_METHODS:
                refusal = media_problem(facts, outside.policy)
                # Media types the outside party may not use are rejected in the offer.
                sdp = reject_media_types(sdp, outside.policy)
                facts = SdpFacts.parse(sdp)
                refusal = refusal or offer_problem(facts, sender)
                if refusal is not None:
                    self._report(msg, "reject", refusal.reason)
                    return RequestOutcome(refusal)
                plan = plan_offer(facts, sender, receiver)
                if plan.options is None:
                    return RequestOutcome()
                result = self._client().offer(sdp, leg.key, msg.from_tag, plan.options)
            elif msg.method in ANSWER_METHODS:
                # A late offer: the SDP in the 2xx was the offer, this is its answer.
                options = answer_options(sender, receiver)
                if options is None:
                    return RequestOutcome()
                result = self._client().answer(sdp, leg.key, msg.to_tag, msg.from_tag, options)
            else:
                return RequestOutcome()
        except NgError as exc:
            return self._unavailable(msg, outside, exc)
        return RequestOutcome(body=result.sdp)

    def _unavailable(self, msg: SipRequest, outside: Side, exc: NgError) -> RequestOutcome:
        if msg.method == "ACK" or not fails_closed(self.settings, outside.policy):
            self._report(msg, "passthrough", f"media not anchored: {exc}")
            return RequestOutcome()
        self._report(msg, "reject", f"media cannot be anchored: {exc}")
        return RequestOutcome(Refusal(UNAVAILABLE, "Media Relay Unavailable"))

    def arm(self, msg: SipRequest, leg: Leg) -> None:
        """Have the replies of this transaction come to :meth:`on_reply`."""
        if msg.method not in OFFER_METHODS and msg.method != "PRACK":
            return
        if self._outside(leg).policy.srtp == "passthrough":
            return
        offered = _sdp(msg.header("content-type"), msg.body.decode("utf-8", "replace")) is not None
        k = self.ksr
        k.pv.sets(LEG_AVP, leg.encode(msg.method, offered, initial=not msg.in_dialog))
        k.tm.t_on_reply(self.reply_route)

    def delete(self, key: str) -> None:
        try:
            self._client().delete(key, delete_delay=0)
        except NgError as exc:
            # rtpengine times the call out by itself; nothing else can be done.
            log.warning("rtpengine delete of %s failed: %s", key, exc)

    # --- replies ------------------------------------------------------------------

    def on_reply(self) -> None:
        """A reply of a transaction armed by :meth:`arm` (Kamailio's reply route)."""
        k = self.ksr
        memo = read_pv(k.pv, LEG_AVP)
        if not memo:
            return
        leg, method, offered, initial = Leg.decode(memo)
        status = int(k.pv.get("$rs") or 0)
        if status >= 300:
            if initial and method == "INVITE":
                self.delete(leg.key)
            return
        if status <= 100:
            return
        sdp = _sdp(read_pv(k.pv, "$hdr(Content-Type)"), read_pv(k.pv, "$rb") or "")
        if sdp is None:
            return
        outside = self._outside(leg)
        # The reply travels the other way: from the request's receiver to its sender.
        answerer, receiver = (self.inside, outside) if leg.to_inside else (outside, self.inside)
        from_tag, to_tag = read_pv(k.pv, "$ft") or "", read_pv(k.pv, "$tt") or ""
        try:
            if offered:
                options = answer_options(answerer, receiver)
                if options is None:
                    return
                result = self._client().answer(sdp, leg.key, from_tag, to_tag, options)
            else:
                # A late offer, made by the answering party.
                sdp = reject_media_types(sdp, outside.policy)
                plan = plan_offer(SdpFacts.parse(sdp), answerer, receiver)
                if plan.options is None:
                    return
                result = self._client().offer(sdp, leg.key, to_tag, plan.options)
        except NgError as exc:
            self._report_reply(f"media not anchored in {status} reply: {exc}")
            return
        k.textops.set_body(result.sdp, "application/sdp")

    # --- events -------------------------------------------------------------------

    def _report(self, msg: SipRequest, action: str, reason: str) -> None:
        self._emit(
            Event(
                module="media",
                action=action,
                src=f"{msg.src_ip}:{msg.src_port}",
                reason=reason,
                call_id=msg.call_id,
                method=msg.method,
                user=msg.from_user,
            )
        )

    def _report_reply(self, reason: str) -> None:
        pv = self.ksr.pv
        self._emit(
            Event(
                module="media",
                action="passthrough",
                src=f"{read_pv(pv, '$si')}:{pv.get('$sp')}",
                reason=reason,
                call_id=read_pv(pv, "$ci") or "",
                method=read_pv(pv, "$rm") or "",
            )
        )

    def _emit(self, event: Event) -> None:
        log.warning("sipshield media: %s: %s", event.action, event.reason)
        if self.events is None:
            return
        with contextlib.suppress(Exception):
            self.events.emit(event)
