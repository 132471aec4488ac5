"""Media anchoring: every call's SDP goes through rtpengine, per the media policy.

The router calls :meth:`MediaAnchor.on_request` just before it relays a
request, and Kamailio's reply route calls :meth:`MediaAnchor.on_reply` for
the replies of the transactions armed here.  Offers and answers are rewritten
with rtpengine's ng ``offer``/``answer``; BYE, CANCEL and failed INVITEs
``delete`` the call.  What rtpengine is told comes from
:mod:`sipshield.edge.media_policy`; this class only moves SDP between Kamailio and
rtpengine.

The SDP is found by :mod:`sipshield.sip.sdp_body`, in a single ``application/sdp``
body or in the SDP part of a multipart one (SIP-I/SIP-T: SDP + ISUP), and is
anchored the same way in both.  A request whose body may carry SDP that cannot
be located safely is refused (400/415, an event), never relayed unanchored; a
reply cannot be refused, so it goes on unanchored with an event.

A call between two outside parties crosses the SBC twice when the PBX is a
proxy (outside -> PBX, then PBX -> outside), with the same Call-ID.  Each
crossing is a *leg* with its own rtpengine call: the leg towards the PBX uses
the Call-ID, the leg from the PBX ``Call-ID~out``.  The SBC's Record-Route on
the second crossing carries ``sml=o`` so in-dialog requests find their leg.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipshield.core import remediation
from sipshield.core.events import Event, EventSink
from sipshield.core.metrics import NO_METRICS, Metrics
from sipshield.core.site import split_host_port
from sipshield.edge.media_policy import (
    INTERNET,
    UNAVAILABLE,
    MediaSettings,
    Refusal,
    Side,
    answer_options,
    fails_closed,
    media_problem,
    offer_problem,
    plan_offer,
    reject_media_types,
)
from sipshield.rtpengine import NgError, RtpengineClient
from sipshield.sip.ksr_message import read_pv
from sipshield.sip.message import branch_of
from sipshield.sip.sdp import SdpFacts
from sipshield.sip.sdp_body import BAD_REQUEST, BodyProblem, SdpPart, find_sdp

if TYPE_CHECKING:
    from sipshield.core.site import Site
    from sipshield.sip.message import SipRequest

log = logging.getLogger("sipshield.edge.media")

LEG_AVP = "$avp(sipshield_media)"
OUT_LEG_PARAM = "sml=o"
OUT_LEG_SUFFIX = "~out"
OFFER_METHODS = ("INVITE", "UPDATE")
ANSWER_METHODS = ("ACK", "PRACK")
TEARDOWN_METHODS = ("BYE", "CANCEL")
MEDIA_METHODS = OFFER_METHODS + ANSWER_METHODS + TEARDOWN_METHODS
CHALLENGES = ("401", "407")


@dataclass(frozen=True)
class Leg:
    """One crossing of the SBC: the rtpengine call and who is on its outside end."""

    key: str  # the rtpengine Call-ID
    peer: str  # the outside party's class: "users" or "trunk:NAME"
    to_inside: bool  # the request being handled goes towards the PBX
    outside_tls: bool  # the signalling hop to the outside party is TLS

    def encode(self, method: str, offered: bool, initial: bool, via_branch: str) -> str:
        """The transaction's memo for the reply and failure routes (an AVP string)."""
        bits = f"{int(self.to_inside)}{int(self.outside_tls)}{int(offered)}{int(initial)}"
        return "|".join((bits, method, self.peer, via_branch, self.key))

    @staticmethod
    def decode(memo: str) -> Memo:
        bits, method, peer, via_branch, key = memo.split("|", 4)
        return Memo(
            Leg(key, peer, bits[0] == "1", bits[1] == "1"),
            method,
            offered=bits[2] == "1",
            initial=bits[3] == "1",
            via_branch=via_branch,
        )


@dataclass(frozen=True)
class Memo:
    """What the reply and failure routes need of the request they belong to."""

    leg: Leg
    method: str
    offered: bool  # the request carried SDP (else the 2xx's SDP is a late offer)
    initial: bool  # the request is not in a dialog
    via_branch: str  # its top Via branch: with a forking proxy upstream, the branch's media


def request_branch(msg: SipRequest) -> str | None:
    """The via-branch rtpengine keeps an initial request's media apart by; None in dialog.

    A proxy that forks (a PBX calling every device of a user) sends the SBC
    one INVITE per device with the same Call-ID and From tag; each must get
    its own media, and a branch that fails or is CANCELled must not take the
    answered one's media with it.
    """
    return None if msg.in_dialog else branch_of(msg.header("via") or "") or None


@dataclass(frozen=True)
class AnchoredSdp:
    part: SdpPart  # where the received SDP is in the body
    sdp: str  # what rtpengine made of it, to relay instead


@dataclass(frozen=True)
class RequestOutcome:
    refusal: Refusal | None = None
    anchored: AnchoredSdp | None = None


class MediaAnchor:
    def __init__(
        self,
        settings: MediaSettings,
        site: Site,
        ksr: Any,
        events: EventSink | None,
        reply_route: str,
        failure_route: str,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ksr = ksr
        self.events = events
        self.reply_route = reply_route
        self.failure_route = failure_route
        self.site = site
        self.inside = Side(settings.pbx, outside=False, tls=False)
        self.client: RtpengineClient | None = None

    def open(self) -> None:
        """Per worker (child_init): sockets are opened on first use, in this process."""
        if self.client is not None:
            self.client.close()
        ng = self.settings.rtpengine
        self.client = RtpengineClient(
            [split_host_port(address) for address in ng.ng],
            timeout=ng.timeout_ms / 1000,
            retries=ng.retries,
            dead_retry_interval=ng.dead_retry_s,
            observer=self.metrics if self.metrics.enabled else None,
        )

    def _client(self) -> RtpengineClient:
        if self.client is None:
            self.open()
        assert self.client is not None
        return self.client

    # --- legs ---------------------------------------------------------------------

    def classify(self, host: str) -> str:
        """The peer class of an outside address: the trunk it belongs to, else users."""
        trunk = self.site.trunk_at(host)
        return "users" if trunk is None else f"trunk:{trunk.name}"

    def leg(
        self,
        msg: SipRequest,
        from_pbx: bool,
        out_leg: bool,
        next_hop: tuple[str, str],
        internet: bool = False,
    ) -> Leg:
        """The leg of a request; ``out_leg`` when it belongs to the PBX -> outside crossing,
        ``next_hop`` the (host, transport) it is relayed to, ``internet`` when its
        outside party is another SIP domain."""
        if internet:
            peer = INTERNET
            outside_tls = next_hop[1] == "tls" if from_pbx else msg.transport == "tls"
        elif from_pbx:
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
        if msg.method == "BYE":
            self.delete(leg.key)
            return RequestOutcome()
        if msg.method == "CANCEL":
            # This branch only (its Via branch is its INVITE's): another may have answered.
            self.drop_branch(msg, leg)
            if leg.to_inside:
                self._drop_second_crossing(leg.key)
            return RequestOutcome()
        found = msg.sdp
        if found is None:
            return RequestOutcome()
        if isinstance(found, BodyProblem):
            return self._unlocated(msg, found)
        sdp = found.text
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
                # A re-offer goes to the rtpengine that has the call (see offer()).
                result = self._client().offer(
                    sdp,
                    leg.key,
                    msg.from_tag,
                    plan.options,
                    request_branch(msg),
                    existing=msg.in_dialog,
                )
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
        return RequestOutcome(anchored=AnchoredSdp(found, result.sdp))

    def _unlocated(self, msg: SipRequest, problem: BodyProblem) -> RequestOutcome:
        """A body whose SDP cannot be located: it cannot be anchored, so it does not pass."""
        if msg.method == "ACK":
            self._report(msg, "passthrough", f"media not anchored: {problem.reason}")
            return RequestOutcome()
        self._report(msg, "reject", f"SDP cannot be located in the body: {problem.reason}")
        phrase = "Bad Request" if problem.code == BAD_REQUEST else "Unsupported Media Type"
        return RequestOutcome(Refusal(problem.code, phrase))

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
        offered = isinstance(msg.sdp, SdpPart)
        k = self.ksr
        memo = leg.encode(msg.method, offered, not msg.in_dialog, request_branch(msg) or "")
        k.pv.sets(LEG_AVP, memo)
        k.tm.t_on_reply(self.reply_route)
        if msg.method == "INVITE" and not msg.in_dialog:
            # The call's outcome, not each branch's: the failure route frees a failed call.
            k.tm.t_on_failure(self.failure_route)

    def drop_branch(self, msg: SipRequest, leg: Leg) -> None:
        """Free the media of this request's branch (a CANCEL, or an INVITE not sent)."""
        self._drop_failed(leg, msg.from_tag, request_branch(msg))

    def _drop_failed(self, leg: Leg, from_tag: str, via_branch: str | None) -> None:
        """Free a failed or CANCELled branch; the call goes with its last branch.

        A crossing from the PBX (``Call-ID~out``) of a call whose first
        crossing is still anchored is left to that crossing: when the call
        fails it frees both.  Its branches are the devices a forking PBX
        rings, and rtpengine deletes a whole call when a branch delete finds
        no other branch, even one whose offer it is processing at that moment
        (measured on 10.5: a device that refused at once took the ringing
        device's media with it).
        """
        if leg.key.endswith(OUT_LEG_SUFFIX) and self._anchored(leg.key[: -len(OUT_LEG_SUFFIX)]):
            return
        self.delete(leg.key, from_tag, via_branch)

    def _anchored(self, key: str) -> bool:
        try:
            self._client().query(key)
        except NgError:  # unknown to rtpengine (or it is gone): nothing to leave it to
            return False
        return True

    def delete(self, key: str, from_tag: str | None = None, via_branch: str | None = None) -> None:
        """Delete a call, or one branch of it (``from_tag`` and ``via_branch``)."""
        if not via_branch:
            from_tag = None
        try:
            self._client().delete(key, from_tag, delete_delay=0, via_branch=via_branch)
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
        armed = Leg.decode(memo)
        leg, branch = armed.leg, armed.via_branch or None
        status = int(k.pv.get("$rs") or 0)
        # A failed branch is not a failed call (forking: another branch may
        # answer); the failure route sees the call's outcome (on_failure).
        if status <= 100 or status >= 300:
            return
        # Bytes that are not UTF-8 (a binary ISUP part) come back as they were received.
        body = (read_pv(k.pv, "$rb") or "").encode("utf-8", errors="surrogateescape")
        found = find_sdp(read_pv(k.pv, "$hdr(Content-Type)"), body)
        if found is None:
            return
        if isinstance(found, BodyProblem):
            self._report_reply(f"media not anchored in {status} reply: {found.reason}")
            return
        sdp = found.text
        outside = self._outside(leg)
        # The reply travels the other way: from the request's receiver to its sender.
        answerer, receiver = (self.inside, outside) if leg.to_inside else (outside, self.inside)
        from_tag, to_tag = read_pv(k.pv, "$ft") or "", read_pv(k.pv, "$tt") or ""
        try:
            if armed.offered:
                options = answer_options(answerer, receiver)
                if options is None:
                    return
                result = self._client().answer(sdp, leg.key, from_tag, to_tag, options, branch)
            else:
                # A late offer, made by the answering party.
                sdp = reject_media_types(sdp, outside.policy)
                plan = plan_offer(SdpFacts.parse(sdp), answerer, receiver)
                if plan.options is None:
                    return
                result = self._client().offer(
                    sdp, leg.key, to_tag, plan.options, branch, existing=not armed.initial
                )
        except NgError as exc:
            self._report_reply(f"media not anchored in {status} reply: {exc}")
            return
        if remediation.rewrite_body(k, found, result.sdp) and armed.initial and status >= 200:
            self.metrics.call_anchored()

    def on_failure(self) -> None:
        """An initial INVITE armed by :meth:`arm` failed (Kamailio's failure route).

        This runs once the transaction ended unanswered: a negative reply,
        the 407 challenge, or a branch that timed out (Kamailio's own 408,
        which no reply route sees).  Only this transaction's branch is freed:
        with a forking proxy upstream, another branch may have answered.
        When the failed call is the first crossing of one that crosses twice,
        the second crossing's media goes too (it left its branches to this).
        A CANCELled branch was freed when the CANCEL passed.
        """
        k = self.ksr
        memo = read_pv(k.pv, LEG_AVP)
        if not memo or k.tm.t_is_canceled() > 0:
            return
        armed = Leg.decode(memo)
        if k.tm.t_branch_timeout() > 0:
            log.info("sipshield media: %s timed out unanswered", armed.leg.key)
        self._drop_failed(armed.leg, read_pv(k.pv, "$ft") or "", armed.via_branch or None)
        # A challenge (the PBX asking the caller for credentials) never reached a callee.
        if armed.leg.to_inside and str(k.pv.get("$T_reply_code")) not in CHALLENGES:
            self._drop_second_crossing(armed.leg.key)

    def _drop_second_crossing(self, key: str) -> None:
        """The call through the PBX failed or was CANCELled: its crossing back goes too."""
        if self._anchored(key + OUT_LEG_SUFFIX):
            self.delete(key + OUT_LEG_SUFFIX)

    # --- events -------------------------------------------------------------------

    def _report(self, msg: SipRequest, action: str, reason: str) -> None:
        self._emit(Event.of_request(msg, "media", action, reason))

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
