"""Rate limits of internet calls in: per calling domain and per sending address.

An internet call in comes from a stranger: a request from outside, not from
a trunk, whose From names another domain (docs/internet-calling.md).  The
PBX takes it without a challenge, so nothing but a limit stops one domain,
or one server relaying for many made-up domains, from ringing our users all
day.  Each initial request from a stranger counts once for its From domain
and once for its source address, in fixed windows; past a limit it is
refused (503 with Retry-After, or dropped).  Our own users, trunks, the PBX
and requests inside a dialog are never counted.

Counting is flood's (:mod:`sipshield.core.window_counts`): no round trip per
request, the node's counts merged into Redis by the timer process, so a limit
holds cluster-wide within one merge interval.  These counts keep their own
kinds in the node's table, apart from flood's.  Without that table (a drop-in
that does not declare it) each worker counts alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from sipshield.checks.tls_policy import host_of
from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.node_counters import ProcessCounters
from sipshield.core.verdict import CONTINUE, Outcome, Reject
from sipshield.core.window_counts import WindowCounts

if TYPE_CHECKING:
    from sipshield.core.site import Site
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

# The node table's kinds of these counts ("ic|window|name", "io|..."), apart from flood's.
KINDS = "i"


class InternetLimitsConfig(ModuleConfig):
    name: Literal["internet_limits"] = "internet_limits"
    window_s: int = Field(default=60, gt=0, le=3600)
    # Initial requests from strangers allowed per window, per From domain.
    per_domain: PositiveInt = 30
    # The same, per source address (a server relaying for many domains, or one
    # attacker writing a new From domain each time).
    per_source: PositiveInt = 60
    # reject: 503 with Retry-After (servers back off); drop: say nothing.
    response: Literal["drop", "reject"] = "reject"


class InternetLimits(SecurityModule):
    name = "internet_limits"
    Config = InternetLimitsConfig
    response_setting = "response"
    has_timer = True

    def __init__(self, config: InternetLimitsConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.domain = ""
        self._counts: WindowCounts | None = None

    def bind(self, site: Site) -> None:
        self.domain = site.domain

    def counts(self, state: SharedState) -> WindowCounts:
        if self._counts is None:
            node = state.node if state.node is not None else ProcessCounters()
            self._counts = WindowCounts(node, "inet", self.settings.window_s, kinds=KINDS)
        return self._counts

    def stranger_domain(self, msg: SipRequest) -> str | None:
        """The From domain of a stranger's initial request, or None for anyone else."""
        if (
            msg.in_dialog
            or msg.from_pbx
            or msg.trunk is not None
            or msg.method
            in (
                "REGISTER",
                "ACK",
                "CANCEL",
            )
        ):
            return None
        domain = host_of(msg.header("from") or "")
        return None if domain == self.domain else domain

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        domain = self.stranger_domain(msg)
        if domain is None:
            return CONTINUE
        counts = self.counts(state)
        window = self.settings.window_s
        by_domain = counts.count(f"domain:{domain}")
        by_source = counts.count(f"source:{msg.src_ip}")
        if by_domain > self.settings.per_domain:
            return self._refuse(
                f"{by_domain} internet requests from domain {domain} in {window}s "
                f"(limit {self.settings.per_domain})"
            )
        if by_source > self.settings.per_source:
            return self._refuse(
                f"{by_source} internet requests from {msg.src_ip} in {window}s "
                f"(limit {self.settings.per_source})"
            )
        return CONTINUE

    def _refuse(self, reason: str) -> Outcome:
        retry = (("Retry-After", str(self.settings.window_s)),)
        return Reject(reason, code=503, headers=retry, droppable=True)

    def on_timer(self, state: SharedState) -> None:
        """Merge the node's counts into Redis (the timer process)."""
        self.counts(state).merge(state)
