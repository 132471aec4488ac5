"""The KEMI handler: what Kamailio's app_python3 calls.

It stays thin on purpose.  ``mod_init`` loads and validates the policy and
builds the pipeline once (a bad policy stops Kamailio from starting);
``child_init`` drops what a fork must not share; each request is wrapped in a
lazy view, run through the pipeline, and the decision applied in one place.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from sipshield.checks.dialog_guard import DIALOG_FORMING, DialogGuard, DialogTokens
from sipshield.core import remediation
from sipshield.core.bans import BanStore
from sipshield.core.call_event import DIALOG_EVENTS, CallEvent
from sipshield.core.events import EventSink
from sipshield.core.hop import Hop
from sipshield.core.metrics import NO_METRICS, Metrics
from sipshield.core.node_gauges import NodeGauges
from sipshield.core.pipeline import Pipeline
from sipshield.core.policy import Policy, PolicyError, load_policy, never_banned
from sipshield.core.site import Site
from sipshield.core.state import SharedState, StateUnavailable
from sipshield.core.verdict import PASS, Decision
from sipshield.edge.edge_routing import EdgeRouter
from sipshield.edge.htable_counters import TABLE, HtableCounters, table_declared
from sipshield.edge.kamailio_log import send_logging_to_kamailio
from sipshield.edge.media import MediaAnchor
from sipshield.edge.prom_metrics import (
    XhttpPromBackend,
    on_metrics_listener,
    prom_loaded,
    serve_scrape,
)
from sipshield.edge.server_identity import ServerIdentityCheck
from sipshield.edge.topology_hiding import TopologyHiding
from sipshield.sip.dialog_tokens import BRANCH_PARAM
from sipshield.sip.ksr_message import KsrMessage
from sipshield.sip.message import SipRequest
from sipshield.sip.reply import ReplyFacts, RoutedRequest

log = logging.getLogger("sipshield.edge.kemi")

# Names Kamailio calls on the handler object; kamailio.cfg names the same ones
# (kemi.*_callback), and a test checks each resolves to a method.
KEMI_CALLBACKS = (
    "child_init",
    "ksr_request_route",
    "ksr_reply_route",
    ONREPLY_ROUTE := "ksr_onreply_route",
    FAILURE_ROUTE := "ksr_failure_route",
    "ksr_timer",
    "ksr_xhttp_event",
    "ksr_dialog_event",
)
# Transaction flag: the replies go to the observing modules.  The reply route
# is armed for media anchoring too, on transactions they must not count.
OBSERVED_FLAG = 9
# Methods a native configuration calls with python_exec() (the drop-in,
# kamailio-cfg/sipshield-dropin.cfg, names the same ones; a test checks both).
DROPIN_ENTRY_POINTS = (
    "sipshield_request",
    "sipshield_reply",
    "sipshield_local_reply",
    "sipshield_record_route",
    "sipshield_branch",
    "sipshield_timer",
)
# What python_exec("sipshield_request") returns, as the route's $rc.  -1 is
# left to Kamailio, which returns it when the Python call itself fails: the
# request then goes on unchecked, as after any sipshield core error.
ROUTE_PASSED = 1
ROUTE_BLOCKED = -2


@dataclass(frozen=True)
class Screening:
    """sipshield's answer for one request, applied already (replied to or dropped)."""

    blocked: bool
    decision: Decision = PASS

    @property
    def module(self) -> str:
        return self.decision.module

    @property
    def action(self) -> str:
        return self.decision.verdict.action if self.decision.verdict else "continue"

    @property
    def reason(self) -> str:
        return self.decision.verdict.reason if self.decision.verdict else ""


class KemiHandler:
    def __init__(self, ksr: Any, policy: Policy, source: str, *, routes: bool = True) -> None:
        self.ksr = ksr
        # Prometheus metrics, in Kamailio's xhttp_prom when the configuration
        # loads it (METRICS defined); otherwise every update costs nothing.
        self.metrics = Metrics(XhttpPromBackend(ksr)) if prom_loaded(ksr) else NO_METRICS
        self.state = SharedState(policy.redis)
        # The decisions (bans) the chain makes and enforces, in Redis.
        bans = BanStore(self.state, policy.bans, never_banned(policy), metrics=self.metrics)
        self.state.decisions = bans
        # Counts the node's workers share (flood), in the htable the configuration declares.
        if table_declared(ksr):
            self.state.node = HtableCounters(ksr)
        else:
            log.warning(
                "htable %r not declared: each worker counts request rates alone "
                "(kamailio.cfg and the drop-in declare it; see docs/architecture.md)",
                TABLE,
            )
        self.events = EventSink(policy.events, self.state, policy.node, self.metrics)
        # Who is who (the PBX, the trunks): worked out once, carried by every view.
        self.site = Site.from_policy(policy)
        self.pipeline = Pipeline.build(policy, self.state, self.events, source, self.site)
        self.media = (
            None
            if policy.media is None
            else MediaAnchor(
                policy.media,
                self.site,
                ksr,
                self.events,
                ONREPLY_ROUTE,
                FAILURE_ROUTE,
                self.metrics,
            )
        )
        self.gauges = NodeGauges(
            self.metrics,
            self.state,
            bans,
            policy_digest(source),
            time.time(),
            tuple(policy.media.rtpengine.ng) if policy.media is not None else (),
        )
        relay_checked = bool(self.pipeline.relay_stages)
        guard = self.pipeline.module("dialog_guard")
        # One key ring: the router signs with the keys dialog_guard verifies with.
        self.tokens = DialogTokens(guard.keys) if isinstance(guard, DialogGuard) else None
        # The TLS servers of internet calls and of trunks must be the ones meant.
        self.server_identity = ServerIdentityCheck(
            policy.internet, list(policy.peers.trunks), ksr, self.events
        )
        # sipshield's own routing, for the reference kamailio.cfg.  A drop-in
        # has none: the operator's configuration routes (and handles NAT) itself.
        self.router = (
            EdgeRouter(
                policy,
                self.site,
                ksr,
                self.screen_relay if relay_checked else None,
                self.media,
                self.tokens,
                self.events,
                self.server_identity,
            )
            if routes
            else None
        )
        self.hiding = TopologyHiding(
            policy.topology_hiding, ksr, policy.redis.on_failure, self.state.node, FAILURE_ROUTE
        )
        self.hiding.name_the_inside(self.site.pbx[0], self.site.domain)

    def view(self) -> KsrMessage:
        """The current request, as the modules read it."""
        return KsrMessage(self.ksr, self.site)

    def trusts(self, view: SipRequest) -> bool:
        """Requests from the inside PBX skip the request phase unless the policy says inspect."""
        return view.from_pbx and not self.site.pbx_inspect

    def child_init(self, rank: int) -> int:
        # Each worker needs its own Redis connection and file descriptor.
        self.state.reset()
        self.events.reopen()
        if self.media is not None:
            self.media.open()
        return 0

    def protect(self, view: KsrMessage | None = None) -> bool:
        """Run the pipeline on the current request; True when it was stopped."""
        return self.screen(view, arm_reply_route=True).blocked

    def screen(self, view: KsrMessage | None = None, *, arm_reply_route: bool) -> Screening:
        """Run the pipeline on the current request and apply the decision.

        ``arm_reply_route`` is for sipshield's own routing only: a
        configuration that keeps its routing has its own reply routes, and
        calls :meth:`observe_reply` from them instead.
        """
        try:
            self.events.flush_pending()
            view = view or self.view()
            if self.trusts(view):
                return Screening(blocked=False)
            started = time.perf_counter()
            decision = self.pipeline.run(view)
            blocked = remediation.apply(decision, self.ksr)
            self.metrics.request_screened(view.method, blocked, time.perf_counter() - started)
            if blocked:
                return Screening(blocked=True, decision=decision)
            if arm_reply_route and self.pipeline.observes_replies and not view.in_dialog:
                # Failed-auth and sweep counting read the final reply.
                self.ksr.setflag(OBSERVED_FLAG)
                self.ksr.tm.t_on_reply(ONREPLY_ROUTE)
            return Screening(blocked=False, decision=decision)
        except Exception:
            # Only a bug in sipshield's core reaches here (module errors are
            # handled by the pipeline); never take Kamailio down for it.
            log.exception("sipshield core error; request served unchecked")
            return Screening(blocked=False)

    def screen_relay(self, view: SipRequest, hop: Hop) -> bool:
        """The relay phase: run the chain on a request about to leave over ``hop``
        and apply the decision; True when the request was stopped."""
        try:
            # Requests from the PBX too: what leaves towards outside is judged here.
            return remediation.apply(self.pipeline.run_relay(view, hop), self.ksr)
        except Exception:
            log.exception("sipshield core error in the relay phase; request relayed unchecked")
            return False

    def observe_reply(self) -> None:
        """Show the current reply, when final, to the modules that observe replies."""
        try:
            status = int(self.ksr.pv.get("$rs") or 0)
            if status >= 200 and self.pipeline.observes_replies:
                self.pipeline.observe(ReplyFacts.from_ksr(self.ksr))
        except Exception:
            log.exception("sipshield core error while observing a reply")

    def on_record_route(self) -> None:
        """Hook: a dialog-forming request was just record-routed by the configuration.

        With dialog_guard on, the dialog token of the party that sent it (the
        caller) goes into the Record-Route.  The configuration's own routing
        record-routes each dialog once, so the same entry also needs the
        callee's token: :meth:`on_branch` adds it per branch.
        """
        tokens = self.tokens
        if tokens is None:
            return
        try:
            view = self.view()
            if not view.in_dialog:
                tokens.sign_leg(self.ksr, view, towards_outside=False)
        except Exception:
            log.exception("sipshield core error while signing the caller leg")

    def on_branch(self) -> None:
        """Hook: a branch of a request is about to be sent (a branch route).

        For a record-routed dialog-forming request, the branch's destination
        is the callee: its token goes into the same Record-Route entry as the
        caller's (:data:`sipshield.sip.dialog_tokens.BRANCH_PARAM`).
        """
        tokens = self.tokens
        if tokens is None:
            return
        try:
            view = self.view()
            if not view.in_dialog and view.method in DIALOG_FORMING:
                tokens.sign_leg(self.ksr, view, towards_outside=True, param=BRANCH_PARAM)
        except Exception:
            log.exception("sipshield core error while signing the callee leg")

    def ksr_request_route(self, msg: Any) -> int:
        view = self.view()
        if self.metrics.enabled and view.transport == "tcp" and on_metrics_listener(self.ksr):
            # SIP sent to the metrics listener is not routed: ending the route drops it.
            log.info("SIP from %s:%s on the metrics listener dropped", view.src_ip, view.src_port)
            return 1
        if not self.protect(view) and self.router is not None:
            if self.hiding.refuses(view):
                remediation.reply(self.ksr, 503, "Service Unavailable")
                return 1
            self.hiding.strip_inside_headers(view.from_pbx)
            self.hiding.arm(view)
            self.router.route(view)
        return 1

    def ksr_reply_route(self, msg: Any) -> int:
        """Every reply, before the transaction layer: one to an internet call or a call
        through a TLS trunk must come from the server meant (else it is dropped here)."""
        try:
            if self.server_identity.refuses_reply():
                return 1
        except Exception:
            # An identity check that cannot run must not let the server through.
            log.exception("sipshield core error while checking a server's identity; reply dropped")
            remediation.drop_reply(self.ksr)
            return 1
        try:
            if self.router is not None:
                from_pbx = self.router.on_reply()
                self.hiding.strip_inside_headers(from_pbx)
        except Exception:
            log.exception("sipshield core error in the reply route")
        return 1

    def ksr_onreply_route(self, msg: Any) -> int:
        """Replies of transactions armed in protect() (final ones go to the observers)
        or by the media anchoring (their SDP goes through rtpengine)."""
        if self.ksr.isflagset(OBSERVED_FLAG) > 0:
            self.observe_reply()
        if self.media is not None:
            try:
                self.media.on_reply()
            except Exception:
                log.exception("sipshield core error while anchoring a reply's media")
        return 1

    def ksr_failure_route(self, msg: Any) -> int:
        """A failed INVITE armed by the media anchoring (a timeout frees its media)
        or by topology hiding (its dialog record goes)."""
        if self.media is not None:
            try:
                self.media.on_failure()
            except Exception:
                log.exception("sipshield core error while freeing a failed call's media")
        try:
            self.hiding.on_failed_call(self.state)
        except StateUnavailable:
            pass  # SharedState logs the outage; the record keeps its lifetime
        except Exception:
            log.exception("sipshield core error while ending a failed call's topos record")
        return 1

    # The drop-in's python_exec() entry points: a native configuration keeps
    # its routing and calls these from it (see kamailio-cfg/sipshield-dropin.cfg).

    # The request this worker is routing, for the replies Kamailio sends it
    # itself (sipshield_local_reply); None when those are not observed.
    routed: RoutedRequest | None = None

    def sipshield_request(self, msg: Any) -> int:
        # Cleared first: the reply to a request sipshield rejects is its own
        # verdict, not a failure for the observing modules to count.
        self.routed = None
        view = self.view()
        if self.screen(view, arm_reply_route=False).blocked:
            return ROUTE_BLOCKED
        if self.pipeline.observes_replies and not self.trusts(view):
            try:
                self.routed = RoutedRequest.from_view(view)
            except Exception:
                log.exception("sipshield core error; local replies to this request not observed")
        return ROUTE_PASSED

    def sipshield_reply(self, msg: Any) -> int:
        self.observe_reply()
        return 1

    def sipshield_local_reply(self, msg: Any) -> int:
        """A reply Kamailio sent itself statelessly (event_route[sl:local-response]).

        Such a reply never passes reply_route, and a relayed reply never runs
        this event route, so no reply is observed twice.
        """
        if self.routed is None:
            return 1
        try:
            facts = ReplyFacts.from_local_reply(self.ksr, self.routed)
            if facts is not None:
                self.routed = None  # one final reply per request
                self.pipeline.observe(facts)
        except Exception:
            log.exception("sipshield core error while observing a local reply")
        return 1

    def sipshield_record_route(self, msg: Any) -> int:
        self.on_record_route()
        return 1

    def sipshield_branch(self, msg: Any) -> int:
        self.on_branch()
        return 1

    def ksr_timer(self, msg: Any, timer: str = "") -> int:
        """The node's timer process (rtimer, every 200 ms): the modules' periodic work."""
        try:
            ending = self.pipeline.on_timer()
            if ending:
                remediation.end_calls(self.ksr, ending)
        except Exception:
            log.exception("sipshield core error in the timer process")
        try:
            self.gauges.tick()
        except Exception:
            log.exception("sipshield core error while measuring the node's gauges")
        try:
            self.hiding.on_timer(self.state)
        except Exception:
            log.exception("sipshield core error while checking topology hiding's Redis")
        return 1

    def ksr_xhttp_event(self, msg: Any, event_name: str = "") -> int:
        """An HTTP request (xhttp): a Prometheus scrape on the metrics listener, or 404."""
        try:
            serve_scrape(self.ksr)
        except Exception:
            log.exception("sipshield core error while answering an HTTP request")
        return 1

    def ksr_dialog_event(self, msg: Any, event_name: str) -> int:
        """The dialog module: a call the router tracks was answered, ended or failed."""
        kind = DIALOG_EVENTS.get(event_name)
        if kind is None or not self.pipeline.observes_calls:
            return 1
        try:
            pv = self.ksr.pv
            call_id = str(pv.get("$dlg(callid)") or pv.get("$ci") or "")
            source = (str(pv.get("$si") or ""), int(pv.get("$sp") or 0))
            method = str(pv.get("$rm") or "")
            # On the answer, the current message is the 2xx: its tags are the dialog's.
            tags = (str(pv.get("$ft") or ""), str(pv.get("$tt") or ""))
            self.pipeline.call_event(CallEvent(kind, call_id, *source, method, *tags))
        except Exception:
            log.exception("sipshield core error on the dialog event %s", event_name)
        return 1

    def sipshield_timer(self, msg: Any) -> int:
        return self.ksr_timer(msg)


def policy_digest(path: str) -> str:
    """The policy file's identity in metrics: the start of its SHA-256."""
    try:
        with open(path, "rb") as policy_file:
            return hashlib.sha256(policy_file.read()).hexdigest()[:12]
    except OSError:
        return "unknown"


def load_handler(ksr: Any, policy_path: str, *, routes: bool = True) -> KemiHandler | None:
    """Build the handler, or log why not and return None (Kamailio then refuses to start).

    ``routes`` is False where the configuration keeps its own routing (the
    drop-in, an operator's KEMI script): sipshield only screens there.
    """
    send_logging_to_kamailio(ksr)
    try:
        policy = load_policy(policy_path)
        handler = KemiHandler(ksr, policy, policy_path, routes=routes)
    except PolicyError as exc:
        for line in exc.errors:
            ksr.err(f"sipshield: invalid policy: {line}\n")
        ksr.err(f"sipshield: refusing to start with policy {policy_path}\n")
        return None
    log.info("sipshield loaded policy %s (node %s)", policy_path, policy.node)
    return handler
