"""toll_fraud: limits on the calls each account sends out to trunks and the internet.

Judged in the relay phase, where the next hop is known: an INVITE from the
PBX that leaves the site (to a trunk, or with no Route to a foreign domain)
is classified (:mod:`.destinations`), checked against its class's limits for
the account, and counted in Redis (:mod:`.ledger`) in one atomic step that
holds for the whole cluster.  A BYE relayed by any node, and the dialog
module's events (answer, failure, cancel, timeout: :meth:`on_call`), end
the call's count.  Ending a short call may block the range it probed
(velocity); the block is an event and refuses the account's next calls to it.

What passing a limit does is the policy's ``action``: an ``alert`` event,
``refuse`` (403 or 503 with the policy's reason phrase), or ``block`` (refuse
and ban the account for ``block_ttl_s``: ``sipshield bans list`` shows it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sipshield.checks.tls_policy import host_of
from sipshield.checks.toll_fraud.business_hours import within
from sipshield.checks.toll_fraud.destinations import Destination, classify
from sipshield.checks.toll_fraud.high_risk import HighRiskPrefixes
from sipshield.checks.toll_fraud.ledger import Call, CallLedger, Limits, VelocityRule
from sipshield.checks.toll_fraud.rate_deck import RateDeck
from sipshield.checks.toll_fraud.settings import TollFraudConfig
from sipshield.core.bans import scope_key
from sipshield.core.module import SecurityModule
from sipshield.core.site import is_dialled_number
from sipshield.core.state import StateUnavailable
from sipshield.core.verdict import CONTINUE, Alert, Ban, EndCall, Outcome, Reject
from sipshield.sip.message import uri_of
from sipshield.sip.reply import credentials_username

if TYPE_CHECKING:
    from sipshield.core.call_event import CallEvent
    from sipshield.core.hop import Hop
    from sipshield.core.site import Site
    from sipshield.core.state import SharedState
    from sipshield.core.verdict import Verdict
    from sipshield.sip.message import SipRequest

# Ends a worker keeps through a Redis outage at most (the oldest are kept).
MAX_UNENDED = 10000
# How often a node looks for calls to end over the spend ceiling.
SPEND_CHECK_S = 1.0
# A call asked to end that is still counted this much later is asked again.
END_RETRY_S = 30.0
WHY = {
    "banned": "account blocked",
    "blocked": "range {figure} blocked after test calls (velocity)",
    "spend": "spend {figure} this hour reached the ceiling {limit}",
    "concurrent": "{figure} {klass} calls in progress (limit {limit})",
    "per_minute": "{figure} {klass} calls this minute (limit {limit})",
    "destinations": "{figure} distinct {klass} numbers this hour (limit {limit})",
    "after_hours": "{klass} call outside business hours",
}


class TollFraud(SecurityModule):
    name = "toll_fraud"
    Config = TollFraudConfig
    checks_relay = True
    observes_calls = True
    # Ending calls over the spend ceiling (spend.end_calls); once a second.
    has_timer = True

    def __init__(self, config: TollFraudConfig, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config)
        self.settings = config
        self._clock = clock
        self.high_risk = HighRiskPrefixes(config.high_risk_file)
        self.rate_deck = RateDeck(config.spend.rate_deck)
        v = config.velocity
        self.velocity = VelocityRule(
            v.enabled, v.short_call_s, v.distinct_numbers, v.window_s, v.block_ttl_s, v.everyone
        )
        self.domain = ""
        self.node = ""
        self.site: Site | None = None
        self._next_spend_check = 0.0
        # Calls asked to end, and when: asked again only if still there a while later.
        self._ending: dict[str, float] = {}
        # Ends Redis missed (an outage): (Call-ID, when it ended), oldest first,
        # written before anything else once Redis answers again, so that a call
        # that ended in an outage does not hold its place until max_call_s.
        self._unended: list[tuple[str, float]] = []
        self._ledger_of: CallLedger | None = None

    def bind(self, site: Site) -> None:
        self.site = site
        self.domain = site.domain
        self.node = site.node

    def _ledger(self, state: SharedState) -> CallLedger:
        ledger = self._ledger_of
        if ledger is None or ledger.state is not state:
            ledger = self._ledger_of = CallLedger(state, self.settings.max_call_s, self.velocity)
        return ledger

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        return CONTINUE

    def check_relay(self, msg: SipRequest, hop: Hop, state: SharedState) -> Outcome:
        if self._unended:
            self._write_unended(state)
        if msg.method == "BYE" and msg.in_dialog:
            # Wherever the call started: the count is in Redis, by Call-ID.
            return self._ended(msg.call_id, state) or CONTINUE
        if msg.method != "INVITE" or msg.in_dialog or not msg.from_pbx:
            return CONTINUE
        destination = self.destination(msg, hop)
        if destination is None:
            return CONTINUE
        return self._judge(msg, destination, state)

    def destination(self, msg: SipRequest, hop: Hop) -> Destination | None:
        """Where a call from the PBX goes when it leaves the site; None when it does not.

        It leaves through a trunk (the next hop is one), or to the internet: no
        Route (a registered user's Path) and a foreign Request-URI domain.
        """
        to_trunk = self.site is not None and self.site.trunk_at(host_of(hop.next_hop)) is not None
        if not to_trunk and (msg.header("Route") is not None or host_of(hop.ruri) == self.domain):
            return None
        user_host = hop.ruri.split(";", 1)[0].partition(":")[2]
        user = user_host.rpartition("@")[0]
        if is_dialled_number(user):
            return classify(user, self.settings.home_region, self.high_risk.prefixes)
        return Destination("internet", user_host.lower())

    def account(self, msg: SipRequest) -> str:
        """Who pays for the call, as the policy names it (the From URI when that is missing)."""
        how = self.settings.account
        if how == "auth_user":
            authorization = msg.header("Proxy-Authorization") or msg.header("Authorization")
            name = credentials_username(authorization or "")
            if name:
                return name.lower()
        elif how == "asserted_identity":
            asserted = msg.header("P-Asserted-Identity")
            if asserted:
                return _address(asserted)
        return _address(msg.header("From") or "")

    def _judge(self, msg: SipRequest, destination: Destination, state: SharedState) -> Outcome:
        settings = self.settings
        account = self.account(msg)
        klass = destination.klass
        limits = settings.limits_of(account)[klass]
        now = self._clock()
        hours = settings.business_hours
        after_hours = limits.after_hours == "refuse" and not within(
            now, settings.zone_of(account), hours.days, hours.start, hours.end
        )
        if after_hours and not self._only_reported():
            return self._refusal(account, destination, "after_hours", "", None)
        call = Call(
            msg.call_id,
            account,
            klass,
            destination.number,
            # Only ranges of the classes test calls go to are watched for them.
            destination.prefix(settings.velocity.prefix_digits)
            if klass in settings.velocity.classes
            else "",
            self.rate_deck.per_minute(destination.number),
        )
        ceiling = settings.ceiling_of(account)
        admission = self._ledger(state).admit(
            call,
            Limits(limits.concurrent, limits.per_minute, limits.destinations_per_hour, ceiling),
            now,
            state.key("ban", scope_key("", account=account)),
            count_anyway=self._only_reported(),
        )
        if after_hours:  # only reported: the call goes on, counted
            return self._refusal(account, destination, "after_hours", "", None)
        if admission.admitted:
            return CONTINUE
        limit = {
            "concurrent": limits.concurrent,
            "per_minute": limits.per_minute,
            "destinations": limits.destinations_per_hour,
            "spend": ceiling,
        }.get(admission.outcome)
        return self._refusal(account, destination, admission.outcome, admission.figure, limit)

    def _only_reported(self) -> bool:
        """A refusal that is only reported lets the call go on: it must be counted."""
        return self.settings.mode == "monitor" or self.settings.action == "alert"

    def _refusal(
        self,
        account: str,
        destination: Destination,
        outcome: str,
        figure: str,
        limit: int | float | None,
    ) -> Verdict:
        why = WHY[outcome].format(figure=figure, limit=limit, klass=destination.klass)
        reason = f"toll fraud: {account} to {destination.number} ({destination.klass}): {why}"
        settings = self.settings
        if settings.action == "alert":
            return Alert(reason)
        code, phrase = settings.refuse.code, settings.refuse.phrase
        if settings.action == "block" and outcome != "banned":
            return Ban(
                reason,
                scope="account",
                user=account,
                ttl_s=settings.block_ttl_s,
                code=code,
                phrase=phrase,
            )
        return Reject(reason, code=code, phrase=phrase)

    def on_call(self, event: CallEvent, state: SharedState) -> Verdict | None:
        """The dialog module's news of an outbound call: answered, or over (any way)."""
        if event.kind == "answered":
            tags = (event.from_tag, event.to_tag)
            self._ledger(state).answered(event.call_id, self._clock(), self.node, tags)
            return None
        if event.method == "BYE":
            # The BYE meets the relay phase next, on this node, which ends the
            # call there (check_relay), unless a module refuses it as forged.
            return None
        return self._ended(event.call_id, state)

    def on_timer(self, state: SharedState) -> list[EndCall] | None:
        """Calls this node follows whose account passed its spend ceiling: to be ended."""
        if not self.settings.spend.end_calls:
            return None
        now = self._clock()
        if now < self._next_spend_check:
            return None
        self._next_spend_check = now + SPEND_CHECK_S
        ending = []
        self._ending = {c: t for c, t in self._ending.items() if now - t < END_RETRY_S}
        for call in self._ledger(state).spending(self.node, now):
            ceiling = self.settings.ceiling_of(call.account)
            if ceiling is not None and call.spend >= ceiling and call.call_id not in self._ending:
                self._ending[call.call_id] = now
                reason = (
                    f"toll fraud: {call.account} spent {call.spend:.2f} this hour, "
                    f"ceiling {ceiling}: call in progress ended"
                )
                ending.append(EndCall(reason, call.call_id, call.from_tag, call.to_tag))
        return ending

    def _write_unended(self, state: SharedState) -> None:
        ledger = self._ledger(state)
        while self._unended:
            call_id, at = self._unended[0]
            ledger.end(call_id, at)  # StateUnavailable: still down, kept for the next try
            self._unended.pop(0)

    def _ended(self, call_id: str, state: SharedState) -> Alert | None:
        now = self._clock()
        try:
            ended = self._ledger(state).end(call_id, now)
        except StateUnavailable:
            if len(self._unended) < MAX_UNENDED:
                self._unended.append((call_id, now))
            raise
        if ended is None or not ended.blocked_range:
            return None
        who = "every account" if self.velocity.everyone else ended.account
        return Alert(
            f"toll fraud: {ended.account} called {ended.probed} numbers of {ended.blocked_range} "
            f"for less than {self.velocity.short_call_s}s each; range blocked for {who} "
            f"for {self.velocity.block_ttl_s}s (velocity)"
        )


def _address(name_addr: str) -> str:
    """user@host of a From or P-Asserted-Identity value, without scheme or parameters."""
    uri = uri_of(name_addr).split(";", 1)[0]
    return uri.partition(":")[2].lower()
