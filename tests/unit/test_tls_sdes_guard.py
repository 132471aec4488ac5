"""SDES keys only over TLS: detection, stripping in favour of DTLS-SRTP, the module's verdicts."""

from __future__ import annotations

import pytest

from sipshield.checks.sdes_guard import SdesGuard, plain_hop_outcome
from sipshield.checks.tls_policy import TlsPolicy
from sipshield.core.hop import Hop
from sipshield.core.policy import parse_policy
from sipshield.core.site import Site
from sipshield.core.verdict import CONTINUE, Reject, Rewrite
from sipshield.sip.message import RawSipMessage
from sipshield.sip.sdp import has_sdes, strip_sdes

CRYPTO = b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
FINGERPRINT = b"a=fingerprint:sha-256 " + b":".join([b"AB"] * 32)
HEAD = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def sdp(*media: list[bytes], session: list[bytes] = ()) -> bytes:
    body = HEAD + b"".join(line + b"\r\n" for line in session)
    for index, lines in enumerate(media):
        body += f"m=audio {40000 + 2 * index} RTP/SAVP 0\r\n".encode()
        body += b"".join(line + b"\r\n" for line in lines)
    return body


SITE = Site.from_policy(
    parse_policy("domain: example.net\npeers:\n  pbx: {address: 10.0.0.2:5060}\n")
)


def invite(body: bytes, transport="udp", src_ip="192.0.2.1", content_type="application/sdp"):
    raw = (
        b"INVITE sip:bob@example.net SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@example.net>;tag=1\r\nTo: <sip:bob@example.net>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\n"
        b"Content-Type: " + content_type.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    return RawSipMessage(raw, src_ip=src_ip, src_port=5060, transport=transport, site=SITE)


def guard(on_plain_hop: str = "reject") -> SdesGuard:
    policy = parse_policy(
        "domain: example.net\npeers:\n  pbx: {address: 10.0.0.2:5060}\n"
        f"modules:\n  - {{name: sdes_guard, on_plain_hop: {on_plain_hop}}}\n"
    )
    built = SdesGuard(policy.modules[0])
    built.bind(Site.from_policy(policy))
    return built


def test_detects_crypto_lines_only_as_attributes():
    assert has_sdes(sdp([CRYPTO]))
    assert not has_sdes(sdp([b"a=rtpmap:0 PCMU/8000"]))
    assert not has_sdes(b"s=a=crypto:not an attribute\r\n")


def test_strip_keeps_dtls_and_removes_every_key():
    body = sdp([CRYPTO, FINGERPRINT, b"a=setup:actpass"], [CRYPTO, FINGERPRINT])
    stripped = strip_sdes(body)
    assert stripped is not None
    assert b"a=crypto" not in stripped
    assert stripped.count(b"a=fingerprint") == 2
    assert stripped == body.replace(CRYPTO + b"\r\n", b"")


def test_session_level_fingerprint_covers_every_section():
    assert strip_sdes(sdp([CRYPTO], session=[FINGERPRINT])) is not None


def test_strip_refuses_when_a_section_would_have_no_keying():
    assert strip_sdes(sdp([CRYPTO, FINGERPRINT], [CRYPTO])) is None


@pytest.mark.parametrize(
    ("mode", "body", "expected"),
    [
        ("reject", sdp([CRYPTO, FINGERPRINT]), "reject"),
        ("strip", sdp([CRYPTO, FINGERPRINT]), "strip"),
        ("strip", sdp([CRYPTO]), "reject"),
        ("reject", sdp([b"a=rtpmap:0 PCMU/8000"]), "pass"),
    ],
)
def test_plain_hop_outcome(mode, body, expected):
    assert plain_hop_outcome(mode, body)[0] == expected


def test_sdes_over_udp_is_rejected_with_488():
    verdict = guard().check(invite(sdp([CRYPTO])), None)
    assert isinstance(verdict, Reject) and verdict.code == 488
    assert verdict.reason == "SDES keys (a=crypto) in SDP received over udp"


def test_sdes_over_tls_and_from_the_pbx_are_allowed():
    assert guard().check(invite(sdp([CRYPTO]), transport="tls"), None) is CONTINUE
    # The PBX link is the inside hop; the router judges where it goes next.
    from_pbx = invite(sdp([CRYPTO]), src_ip="10.0.0.2")
    assert from_pbx.from_pbx
    assert guard().check(from_pbx, None) is CONTINUE


def test_strip_mode_leaves_stripping_to_the_router_and_rejects_what_it_cannot_strip():
    assert guard("strip").check(invite(sdp([CRYPTO, FINGERPRINT])), None) is CONTINUE
    assert isinstance(guard("strip").check(invite(sdp([CRYPTO])), None), Reject)


def test_bodies_that_are_not_sdp_are_not_read():
    assert guard().check(invite(CRYPTO, content_type="text/plain"), None) is CONTINUE


def _leaving(tls: bool, anchored: str | None = None) -> Hop:
    uri = "sip:192.0.2.9:5061;transport=tls" if tls else "sip:192.0.2.9:5060;transport=udp"
    return Hop(next_hop=uri, ruri="sip:bob@example.net", tls=tls, anchored=anchored)


def test_sdes_from_the_pbx_may_leave_over_tls_only():
    from_pbx = invite(sdp([CRYPTO]), src_ip="10.0.0.2")
    assert guard().check_relay(from_pbx, _leaving(tls=True), None) is CONTINUE
    refused = guard().check_relay(from_pbx, _leaving(tls=False), None)
    assert isinstance(refused, Reject) and refused.code == 488
    assert refused.reason == (
        "SDES keys (a=crypto) in SDP would leave over a plain hop to "
        "sip:192.0.2.9:5060;transport=udp"
    )


def test_the_anchored_sdp_is_what_is_judged_when_it_leaves():
    # rtpengine's SDP replaces the PBX's: a key in the PBX's no longer matters.
    from_pbx = invite(sdp([CRYPTO]), src_ip="10.0.0.2")
    anchored = sdp([b"a=rtpmap:0 PCMU/8000"]).decode()
    assert guard().check_relay(from_pbx, _leaving(False, anchored=anchored), None) is CONTINUE
    keyed = sdp([CRYPTO]).decode()
    assert isinstance(guard().check_relay(from_pbx, _leaving(False, anchored=keyed), None), Reject)


def test_strip_is_a_rewrite_of_the_located_sdp_where_dtls_is_offered():
    body = sdp([CRYPTO, FINGERPRINT])
    rewrite = guard("strip").check_relay(invite(body), _leaving(False), None)
    assert isinstance(rewrite, Rewrite) and rewrite.action == "strip"
    assert rewrite.text == body.replace(CRYPTO + b"\r\n", b"").decode()
    assert rewrite.part.sdp == body
    assert rewrite.reason == (
        "SDES keys (a=crypto) in SDP arrived over udp; stripped, DTLS-SRTP offered"
    )


def test_a_refusal_on_arrival_is_the_request_phases_not_the_relay_phases():
    # check() answered it 488 already; the relay phase must not report it twice.
    arrived = invite(sdp([CRYPTO]))
    assert guard().check_relay(arrived, _leaving(False), None) is CONTINUE


def test_a_sips_request_uri_leaves_only_over_tls():
    policy = parse_policy(
        "domain: example.net\npeers:\n  pbx: {address: 10.0.0.2:5060}\n"
        "modules:\n  - {name: tls_policy}\n"
    )
    module = TlsPolicy(policy.modules[0])
    module.bind(Site.from_policy(policy))
    request = invite(b"")
    sips = Hop("sip:192.0.2.9:5060;transport=udp", "sips:bob@example.net", False, True)
    refused = module.check_relay(request, sips, None)
    assert isinstance(refused, Reject) and (refused.code, refused.phrase) == (
        403,
        "SIPS Needs TLS Hop",
    )
    over_tls = Hop("sip:192.0.2.9:5061;transport=tls", "sips:bob@example.net", True, True)
    assert module.check_relay(request, over_tls, None) is CONTINUE
