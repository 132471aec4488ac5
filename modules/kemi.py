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
from sipshield.edge_routing import EdgeRouter
from sipshield.events import EventSink
from sipshield.kamailio_log import send_logging_to_kamailio
from sipshield.ksr_message import KsrMessage
from sipshield.pipeline import Pipeline
from sipshield.policy import Policy, PolicyError, load_policy
from sipshield.state import SharedState

log = logging.getLogger("sipshield.kemi")

# Names Kamailio calls on the handler object; kamailio.cfg names the same ones
# (kemi.*_callback), and a test checks each resolves to a method.
KEMI_CALLBACKS = ("child_init", "ksr_request_route", "ksr_reply_route")


class KemiHandler:
    def __init__(self, ksr: Any, policy: Policy, source: str) -> None:
        self.ksr = ksr
        self.state = SharedState(policy.redis)
        self.events = EventSink(policy.events, self.state, policy.node)
        self.pipeline = Pipeline.build(policy, self.state, self.events, source)
        self.router = EdgeRouter(policy, ksr)

    def child_init(self, rank: int) -> int:
        # Each worker needs its own Redis connection and file descriptor.
        self.state.reset()
        self.events.reopen()
        return 0

    def protect(self, view: KsrMessage | None = None) -> bool:
        """Run the pipeline on the current request; True when it was stopped."""
        try:
            self.events.flush_pending()
            decision = self.pipeline.run(view or KsrMessage(self.ksr))
            return remediation.apply(decision, self.ksr)
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
