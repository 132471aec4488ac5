"""The KEMI handler: what Kamailio's app_python3 calls.

It stays thin on purpose.  ``mod_init`` loads and validates the policy and
builds the pipeline once (a bad policy stops Kamailio from starting);
``child_init`` drops what a fork must not share; each request is wrapped in a
lazy view, run through the pipeline, and the decision applied in one place.
"""

from __future__ import annotations

import logging
from typing import Any

from sipshield import remediation
from sipshield.cert_names import pem_certificates
from sipshield.edge_routing import EdgeRouter
from sipshield.events import Event, EventSink
from sipshield.kamailio_log import send_logging_to_kamailio
from sipshield.ksr_message import KsrMessage
from sipshield.pipeline import Pipeline
from sipshield.policy import Policy, PolicyError, load_policy, never_banned
from sipshield.reply import ReplyFacts
from sipshield.state import SharedState
from sipshield.tls_policy import OutboundTlsCheck

log = logging.getLogger("sipshield.kemi")

# Names Kamailio calls on the handler object; kamailio.cfg names the same ones
# (kemi.*_callback), and a test checks each resolves to a method.
KEMI_CALLBACKS = (
    "child_init",
    "ksr_request_route",
    "ksr_reply_route",
    "ksr_tls_event",
    ONREPLY_ROUTE := "ksr_onreply_route",
)
# The tls module's event for a connection Kamailio opened (to a trunk).
TLS_CONNECTION_OUT = "tls:connection-out"


class KemiHandler:
    def __init__(self, ksr: Any, policy: Policy, source: str) -> None:
        self.ksr = ksr
        self.state = SharedState(policy.redis, bans=policy.bans, never_ban=never_banned(policy))
        self.events = EventSink(policy.events, self.state, policy.node)
        self.pipeline = Pipeline.build(policy, self.state, self.events, source)
        pbx = policy.peers.pbx
        # Requests from the inside PBX skip the modules unless the policy says inspect.
        self.trusted_pbx = (
            None
            if pbx.inspect
            else (pbx.address.rpartition(":")[0], int(pbx.address.rpartition(":")[2]))
        )
        self.router = EdgeRouter(policy, ksr, self.events)
        self.outbound_tls = OutboundTlsCheck(policy)

    def child_init(self, rank: int) -> int:
        # Each worker needs its own Redis connection and file descriptor.
        self.state.reset()
        self.events.reopen()
        return 0

    def protect(self, view: KsrMessage | None = None) -> bool:
        """Run the pipeline on the current request; True when it was stopped."""
        try:
            self.events.flush_pending()
            view = view or KsrMessage(self.ksr)
            if (view.src_ip, view.src_port) == self.trusted_pbx:
                return False
            decision = self.pipeline.run(view)
            if remediation.apply(decision, self.ksr):
                return True
            if self.pipeline.observes_replies and not view.in_dialog:
                # Failed-auth and sweep counting read the final reply.
                self.ksr.tm.t_on_reply(ONREPLY_ROUTE)
            return False
        except Exception:
            # Only a bug in sipshield's core reaches here (module errors are
            # handled by the pipeline); never take Kamailio down for it.
            log.exception("sipshield core error; request served unchecked")
            return False

    def ksr_request_route(self, msg: Any) -> int:
        view = KsrMessage(self.ksr)
        if not self.protect(view):
            self.router.route(view)
        return 1

    def ksr_reply_route(self, msg: Any) -> int:
        return 1

    def ksr_onreply_route(self, msg: Any) -> int:
        """Replies of transactions armed in protect(); final ones go to the observers."""
        try:
            status = int(self.ksr.pv.get("$rs") or 0)
            if status >= 200:
                self.pipeline.observe(ReplyFacts.from_ksr(self.ksr))
        except Exception:
            log.exception("sipshield core error while observing a reply")
        return 1

    def ksr_tls_event(self, event_name: str) -> int:
        """A TLS connection Kamailio opened: drop it unless the server is the trunk meant.

        Kamailio verified the chain (client profile), not the name; this runs
        after the handshake and before any data is sent on the connection.
        """
        if event_name != TLS_CONNECTION_OUT:
            return 1
        try:
            pv = self.ksr.pv
            ip, port = str(pv.get("$sndto(ip)") or ""), int(pv.get("$sndto(port)") or 0)
            certificates = pem_certificates(str(pv.get("$tls_peer_raw_cert") or ""))
            problem = self.outbound_tls.problem(
                ip,
                port,
                str(pv.get("$tls_peer_verified") or "") == "1",
                certificates[0] if certificates else b"",
            )
            if problem is None:
                return 1
            self.ksr.x.drop()
            self.events.emit(
                Event(module="tls_policy", action="drop", src=f"{ip}:{port}", reason=problem)
            )
        except Exception:
            log.exception("sipshield: outbound TLS check failed; connection dropped")
            self.ksr.x.drop()
        return 1


def load_handler(ksr: Any, policy_path: str) -> KemiHandler | None:
    """Build the handler, or log why not and return None (Kamailio then refuses to start)."""
    send_logging_to_kamailio(ksr)
    try:
        policy = load_policy(policy_path)
        handler = KemiHandler(ksr, policy, policy_path)
    except PolicyError as exc:
        for line in exc.errors:
            ksr.err(f"sipshield: invalid policy: {line}\n")
        ksr.err(f"sipshield: refusing to start with policy {policy_path}\n")
        return None
    log.info("sipshield loaded policy %s (node %s)", policy_path, policy.node)
    return handler
