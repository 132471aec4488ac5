"""Who is who at the edge, worked out once from the policy."""

from __future__ import annotations

from sipshield.core.policy import parse_policy
from sipshield.core.site import MAX_REMEMBERED_SOURCES, Site

POLICY = """\
domain: Example.NET
peers:
  pbx: {address: "[2001:db8::2]:5060"}
  trunks:
    - {name: east, target: 198.51.100.1:5060, sources: [198.51.100.0/24]}
    - {name: west, target: 198.51.100.2:5060, sources: [198.51.100.0/24, 203.0.113.0/24]}
    - {name: edge, target: 192.0.2.77:5060, sources: [203.0.113.0/24]}
"""
SITE = Site.from_policy(parse_policy(POLICY))


def test_the_pbx_is_matched_by_address_and_port_and_addressed_as_a_uri():
    assert SITE.domain == "example.net"
    assert SITE.is_pbx("2001:db8::2", 5060) and not SITE.is_pbx("2001:db8::2", 5061)
    assert SITE.pbx_uri == "sip:[2001:db8::2]:5060;transport=udp"


def test_trunks_of_one_carrier_may_share_sources():
    assert [t.name for t in SITE.trunks_of("198.51.100.9")] == ["east", "west"]
    assert SITE.trunk_of("198.51.100.9").name == "east"
    assert SITE.trunk_of("192.0.2.1") is None and SITE.trunks_of("not an address") == ()


def test_a_next_hop_finds_its_trunk_by_target_or_source_in_listed_order():
    assert SITE.trunk_at("198.51.100.2").name == "east"  # east's sources hold west's target
    assert SITE.trunk_at("192.0.2.77").name == "edge"
    assert SITE.trunk_at("203.0.113.5").name == "west"
    assert SITE.trunk_at("192.0.2.1") is None


def test_remembered_sources_are_bounded():
    site = Site.from_policy(parse_policy(POLICY))
    for n in range(MAX_REMEMBERED_SOURCES + 10):
        site.trunks_of(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(site._trunks_by_source) <= MAX_REMEMBERED_SOURCES


NUMBERS_POLICY = """\
domain: example.net
peers:
  pbx: {address: 10.0.0.5:5060}
  trunks:
    - {name: uk, target: 192.0.2.1:5060, numbers: ["+44", "0044"]}
    - {name: london, target: 192.0.2.2:5060, numbers: ["+4420"]}
    - {name: world, target: 192.0.2.3:5060, numbers: [""]}
    - {name: also-world, target: 192.0.2.4:5060, numbers: [""]}
"""


def test_a_dialled_number_takes_the_trunk_of_its_longest_prefix():
    site = Site.from_policy(parse_policy(NUMBERS_POLICY))
    assert site.trunk_for_number("+442071234567").name == "london"
    assert site.trunk_for_number("+441612345678").name == "uk"
    assert site.trunk_for_number("00441612345678").name == "uk"
    # "" takes every number; of equal prefixes the first listed wins.
    assert site.trunk_for_number("+33142685300").name == "world"
    assert site.trunk_for_number("09001234567").name == "world"


def test_what_is_no_number_takes_no_trunk():
    site = Site.from_policy(parse_policy(NUMBERS_POLICY))
    for user in ("alice", "", "+", "++44", "44a", "+44 20"):
        assert site.trunk_for_number(user) is None, user
    assert SITE.trunk_for_number("+442071234567") is None  # no trunk takes numbers
