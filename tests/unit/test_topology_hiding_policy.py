"""The topology_hiding section: what it accepts, what it refuses, and topos's Redis."""

import pytest

from sipshield.core.policy import PolicyError, parse_policy
from sipshield.edge.topology_hiding import hide_address, topos_redis_server

BASE = """\
domain: example.net
peers:
  pbx: {address: 10.0.0.5:5060}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(BASE + text, "p.yaml")
    return caught.value.errors


def test_hiding_is_off_by_default_and_strips_the_inside_software_headers_when_on():
    assert parse_policy(BASE).topology_hiding.enabled is False
    policy = parse_policy(BASE + "topology_hiding: {enabled: true}\n")
    assert policy.topology_hiding.enabled is True
    assert policy.topology_hiding.strip_headers == [
        "Server",
        "User-Agent",
        "Warning",
        "Organization",
    ]


def test_a_header_sip_needs_cannot_be_stripped():
    errors = errors_of("topology_hiding: {strip_headers: [Server, Call-ID]}\n")
    assert errors == [
        "p.yaml:4: topology_hiding.strip_headers[1]: Value error, "
        "Call-ID is needed by SIP itself and cannot be stripped"
    ]


def test_a_header_name_must_be_a_token():
    errors = errors_of("topology_hiding: {strip_headers: ['X-A: b']}\n")
    assert errors == [
        "p.yaml:4: topology_hiding.strip_headers[0]: Value error, 'X-A: b' is not a SIP header name"
    ]


def test_an_unknown_key_is_refused():
    errors = errors_of("topology_hiding: {enabled: true, mask_callid: true}\n")
    assert errors == ["p.yaml:4: topology_hiding.mask_callid: Extra inputs are not permitted"]


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("redis://127.0.0.1:6390/2", "name=topos;addr=127.0.0.1;port=6390;db=2"),
        ("redis://10.0.0.9", "name=topos;addr=10.0.0.9;port=6379;db=0"),
        ("redis://:s3cret@10.0.0.9:6379/0", "name=topos;addr=10.0.0.9;port=6379;db=0;pass=s3cret"),
    ],
)
def test_topos_uses_the_policy_redis(url: str, server: str):
    assert topos_redis_server(url) == server


@pytest.mark.parametrize(
    ("value", "hidden"),
    [
        ("<sip:alice@10.0.0.5:5060>", "<sip:alice@example.net>"),
        ("<sip:alice@10.0.0.5>;party=calling", "<sip:alice@example.net>;party=calling"),
        (
            '"Reception" <sips:200@10.0.0.5:5061;user=phone>',
            '"Reception" <sips:200@example.net;user=phone>',
        ),
        ("<sip:10.0.0.5;lr>, <tel:+15551234>", "<sip:example.net;lr>, <tel:+15551234>"),
        # Not the PBX: a longer address, or the address inside an escaped Replaces.
        ("<sip:bob@10.0.0.50>", "<sip:bob@10.0.0.50>"),
        (
            "<sip:c@example.net?Replaces=abc%4010.0.0.5>",
            "<sip:c@example.net?Replaces=abc%4010.0.0.5>",
        ),
    ],
)
def test_the_pbx_address_in_an_identity_or_target_becomes_the_domain(value: str, hidden: str):
    assert hide_address(value, "10.0.0.5", "example.net") == hidden


def test_rewritten_headers_may_be_any_header_but_must_be_names():
    policy = parse_policy(BASE + "topology_hiding: {rewrite_headers: [Refer-To, X-Origin]}\n")
    assert policy.topology_hiding.rewrite_headers == ["Refer-To", "X-Origin"]
    errors = errors_of("topology_hiding: {rewrite_headers: ['Refer-To:']}\n")
    assert errors == [
        "p.yaml:4: topology_hiding.rewrite_headers[0]: Value error, "
        "'Refer-To:' is not a SIP header name"
    ]
