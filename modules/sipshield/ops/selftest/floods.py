"""Floods: INVITE, REGISTER and OPTIONS bursts over the policy's limits; a slow sweep under them.

A burst is sized from the policy: ``ban_after`` times the limit of its method
class and ten more, so that it crosses both the limit and the ban.  It is
stopped when its last ten requests go unanswered (dropped, or refused with
503).  The slow sweep probes made-up extensions at 80% of the flood limit:
flood control cannot see it; the scanner's sweep detection must.
"""

from __future__ import annotations

import math
import re
import secrets
import socket
import time

from sipshield.checks.flood import DEFAULT_LIMITS, FloodConfig
from sipshield.checks.scanner import ScannerConfig
from sipshield.core.policy import Policy
from sipshield.ops.selftest.attack import (
    Attack,
    Expectation,
    NotRunnable,
    Outcome,
    enforced,
    module,
)
from sipshield.ops.selftest.raw_requests import ack_for, request
from sipshield.ops.selftest.target import Context

# The requests at the end of a burst that must all go unanswered.
TAIL = 10
# How far the SBC's clock may be from ours, for the flood windows (wait_for_one_window).
CLOCK_MARGIN_S = 0.5
# How long the last replies of a burst are waited for.
SETTLE_S = 1.5
_CALL_ID = re.compile(rb"^(?:Call-ID|i):\s*(\S+)", re.MULTILINE | re.IGNORECASE)
_FINAL = re.compile(rb"^SIP/2\.0 ([2-6]\d\d) ")


def flood_settings(policy: Policy) -> FloodConfig:
    entry = module(policy, "flood")
    return entry if isinstance(entry, FloodConfig) else FloodConfig()


def burst_size(policy: Policy, method_class: str) -> int:
    settings = flood_settings(policy)
    limit = {**DEFAULT_LIMITS, **settings.limits}[method_class]
    return math.ceil(limit * max(settings.ban_after, 1.0)) + TAIL


def burst_fits(count: int, rate: float, window_s: float) -> bool:
    """Whether ``count`` requests at ``rate`` per second fit in half a flood window."""
    return count / rate <= window_s / 2


def wait_for_one_window(now: float, duration: float, window_s: float) -> float:
    """Seconds to wait so that a burst of ``duration`` seconds lies in one flood window.

    sipshield's flood windows are aligned on the wall clock (``time() //
    window_s``): a burst that straddles a boundary is split between two
    windows, each under the ban threshold, and its tail is answered by the
    second window's allowance.  The margin allows for the SBC's clock and
    ours (NTP) not agreeing exactly.
    """
    margin = min(CLOCK_MARGIN_S, window_s / 8)
    into = now % window_s
    if into < margin:
        return margin - into
    if into + duration + margin > window_s:
        return window_s - into + margin
    return 0.0


def burst(ctx: Context, requests: list[bytes]) -> list[int | None]:
    """Send every request from one socket, as fast as the guard allows; each one's final code.

    A 503 counts as unanswered: it is flood control's refusal.  Failed
    INVITEs are ACKed, as a real flooder's stack would.
    """
    sock = ctx.udp_socket(timeout=0.0)
    ids = [_CALL_ID.search(raw).group(1) for raw in requests]  # type: ignore[union-attr]
    finals: dict[bytes, int] = {}
    try:
        for raw in requests:
            sock.sendto(raw, ctx.target.sip())
            _drain(sock, requests, ids, finals, ctx)
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline and len(finals) < len(requests):
            time.sleep(0.05)
            _drain(sock, requests, ids, finals, ctx)
    finally:
        sock.close()
    return [finals.get(call_id) for call_id in ids]


def _drain(
    sock: socket.socket,
    requests: list[bytes],
    ids: list[bytes],
    finals: dict[bytes, int],
    ctx: Context,
) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, TimeoutError):
            return
        status, call_id = _FINAL.match(data), _CALL_ID.search(data)
        if status is None or call_id is None or call_id.group(1) not in ids:
            continue
        code = int(status.group(1))
        raw = requests[ids.index(call_id.group(1))]
        if raw.startswith(b"INVITE") and code >= 300:
            sock.sendto(ack_for(raw, data), ctx.target.sip())
        if code != 503:
            finals.setdefault(call_id.group(1), code)


def burst_outcome(codes: list[int | None]) -> Outcome:
    answered = [c for c in codes if c is not None]
    tail = codes[-TAIL:]
    stopped = all(c is None for c in tail)
    first_unanswered = next((i + 1 for i, c in enumerate(codes) if c is None), None)
    evidence = f"{len(answered)} of {len(codes)} answered"
    if first_unanswered:
        evidence += f"; first unanswered: #{first_unanswered}"
    if not stopped:
        evidence += f"; {sum(c is not None for c in tail)} of the last {TAIL} answered"
    return Outcome(stopped, evidence)


def _expect_flood(policy: Policy, method_class: str) -> Expectation:
    entry, phrase = enforced(policy, "flood")
    if entry is None:
        return Expectation(False, phrase)
    limit = {**DEFAULT_LIMITS, **entry.limits}[method_class]
    return Expectation(
        True, f"{phrase}: {limit} {method_class} per {entry.window_s}s, then {entry.response}"
    )


class _Flood(Attack):
    method_class: str
    fresh_source = True
    leaves = "a ban on its source (flood, sustained excess) for the policy's bans.base_ttl_s"

    def expect(self, policy: Policy) -> Expectation:
        return _expect_flood(policy, self.method_class)

    def build(self, ctx: Context) -> bytes:
        raise NotImplementedError

    def run(self, ctx: Context) -> Outcome:
        count = burst_size(ctx.policy, self.method_class)
        window_s = flood_settings(ctx.policy).window_s
        if not burst_fits(count, ctx.scope.pacer.rate, window_s):
            raise NotRunnable(
                f"{count} requests at --rate {ctx.scope.pacer.rate:g}/s take longer than half "
                f"the flood window ({window_s}s): they would never cross the limit"
            )
        requests = [self.build(ctx) for _ in range(count)]
        time.sleep(wait_for_one_window(time.time(), count / ctx.scope.pacer.rate, window_s))
        return burst_outcome(burst(ctx, requests))


class OptionsFlood(_Flood):
    name = "flood-options"
    summary = "an OPTIONS burst at the SBC, past the limit and the ban threshold"
    method_class = "options"

    def build(self, ctx: Context) -> bytes:
        host, port = ctx.target.sip()
        return request("OPTIONS", f"sip:{host}:{port}", ctx.attacker, ctx.target.domain)


class RegisterFlood(_Flood):
    name = "flood-register"
    summary = "a burst of unauthenticated REGISTERs for made-up users"
    method_class = "register"

    def build(self, ctx: Context) -> bytes:
        domain, user = ctx.target.domain, f"f{secrets.token_hex(3)}"
        return request(
            "REGISTER", f"sip:{domain}", ctx.attacker, domain, from_user=user,
            to=f"sip:{user}@{domain}",
        )  # fmt: skip


class InviteFlood(_Flood):
    name = "flood-invite"
    summary = "a burst of unauthenticated INVITEs (each refusal ACKed)"
    method_class = "invite"

    def build(self, ctx: Context) -> bytes:
        domain = ctx.target.domain
        return request("INVITE", f"sip:f{secrets.token_hex(3)}@{domain}", ctx.attacker, domain)


class SlowSweep(Attack):
    name = "slow-sweep"
    summary = "OPTIONS to made-up extensions at 80% of the flood limit: under flood control's radar"
    fresh_source = True
    leaves = "a ban on its source (scanner) for the policy's bans.base_ttl_s"

    def expect(self, policy: Policy) -> Expectation:
        entry, phrase = enforced(policy, "scanner")
        if entry is None:
            return Expectation(False, phrase)
        return Expectation(
            True,
            f"{phrase}: {entry.max_distinct_failed_users} distinct users in {entry.window_s}s",
        )

    def run(self, ctx: Context) -> Outcome:
        scanner = module(ctx.policy, "scanner")
        settings = scanner if isinstance(scanner, ScannerConfig) else ScannerConfig()
        flood = flood_settings(ctx.policy)
        limit = {**DEFAULT_LIMITS, **flood.limits}["options"]
        interval = flood.window_s / (limit * 0.8)
        count = settings.max_distinct_failed_users + 5
        domain = ctx.target.domain
        codes: list[int | None] = []
        for _ in range(count):
            started = time.monotonic()
            raw = request("OPTIONS", f"sip:s{secrets.token_hex(3)}@{domain}", ctx.attacker, domain)
            replies = ctx.exchange(raw, timeout=min(interval, 1.0))
            match = _FINAL.match(replies[replies.rfind(b"SIP/2.0 ") :]) if replies else None
            codes.append(int(match.group(1)) if match else None)
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
        tail = codes[-3:]
        stopped = all(c is None for c in tail)
        answered = [c for c in codes if c is not None]
        evidence = (
            f"{len(answered)} of {count} probes answered ({interval:.2f}s apart), "
            f"codes {sorted(set(answered))}"
        )
        return Outcome(stopped, evidence)
