"""internet_limits: who counts as a stranger, and the limits per domain and per source.

Counting runs on the node counters in this process's memory; the merge into
Redis is flood's, lab-tested (tests/integration/test_window_counts.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sipshield.checks.internet_limits import InternetLimits, InternetLimitsConfig
from sipshield.core.node_counters import ProcessCounters
from sipshield.core.policy import parse_policy
from sipshield.core.site import Site
from sipshield.core.verdict import CONTINUE, Reject
from sipshield.core.window_counts import WindowCounts
from sipshield.sip.message import RawSipMessage

SITE = Site.from_policy(
    parse_policy(
        "domain: example.net\npeers:\n  pbx: {address: 10.0.0.2:5060}\n"
        "  trunks:\n    - {name: carrier, target: 198.51.100.1:5060,\n"
        "       sources: [198.51.100.0/24]}\n"
    )
)


def invite(from_domain: str, src_ip: str = "192.0.2.9", to_tag: str = "", method: str = "INVITE"):
    raw = (
        f"{method} sip:bob@example.net SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {src_ip};branch=z9hG4bK1\r\n"
        f"From: <sip:eve@{from_domain}>;tag=1\r\n"
        f"To: <sip:bob@example.net>{to_tag}\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return RawSipMessage(raw, src_ip=src_ip, transport="tls", site=SITE)


def limits(**settings) -> tuple[InternetLimits, SimpleNamespace]:
    module = InternetLimits(InternetLimitsConfig(**settings))
    module.bind(SITE)
    # Only the node counters are read on a request; nothing here reaches Redis.
    return module, SimpleNamespace(node=ProcessCounters())


@pytest.mark.parametrize(
    ("message", "stranger"),
    [
        (invite("other.org"), "other.org"),
        (invite("Example.NET"), None),  # our own users: the PBX authenticates them
        (invite("other.org", src_ip="198.51.100.7"), None),  # a trunk
        (invite("other.org", src_ip="10.0.0.2"), None),  # the PBX
        (invite("other.org", to_tag=";tag=2"), None),  # inside a dialog
        (invite("other.org", method="REGISTER"), None),
    ],
)
def test_who_is_a_stranger(message, stranger):
    module, _ = limits()
    assert module.stranger_domain(message) == stranger


def test_per_domain_limit_refuses_that_domain_only():
    module, state = limits(per_domain=2, window_s=60)
    assert [module.check(invite("spam.org"), state) for _ in range(2)] == [CONTINUE] * 2
    refused = module.check(invite("spam.org"), state)
    assert isinstance(refused, Reject) and refused.code == 503
    assert refused.reason == "3 internet requests from domain spam.org in 60s (limit 2)"
    assert ("Retry-After", "60") in refused.headers
    assert module.check(invite("friend.org", src_ip="192.0.2.10"), state) is CONTINUE


def test_per_source_limit_catches_made_up_domains():
    module, state = limits(per_domain=5, per_source=3)
    outcomes = [module.check(invite(f"d{n}.org"), state) for n in range(4)]
    assert outcomes[:3] == [CONTINUE] * 3
    assert outcomes[3].reason == "4 internet requests from 192.0.2.9 in 60s (limit 3)"


def test_our_users_are_never_counted():
    module, state = limits(per_domain=1, per_source=1)
    assert [module.check(invite("example.net"), state) for _ in range(5)] == [CONTINUE] * 5


def test_window_counts_of_another_kind_leave_flood_counts_alone():
    node = ProcessCounters()
    flood = WindowCounts(node, "flood", 60, clock=lambda: 120.0)
    internet = WindowCounts(node, "inet", 60, clock=lambda: 120.0, kinds="i")
    flood.count("invite:192.0.2.9")
    internet.count("source:192.0.2.9")
    assert sorted(node.items()) == [("c|2|invite:192.0.2.9", 1), ("ic|2|source:192.0.2.9", 1)]
