"""The media policy as pure functions: policy + SDP + hop -> rtpengine options or refusal."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sipshield.core.policy import PolicyError, parse_policy
from sipshield.edge.media import Leg, Memo, request_branch
from sipshield.edge.media_policy import (
    MediaSettings,
    PeerMedia,
    Side,
    answer_options,
    codecs_to_strip,
    fails_closed,
    media_problem,
    offer_problem,
    plan_offer,
    reject_media_types,
)
from sipshield.sip.message import RawSipMessage
from sipshield.sip.sdp import SdpFacts
from tests.conftest import REPO
from tests.support.srtp_suites import WEAK_SUITES

NG = {"rtpengine": {"ng": ["127.0.0.1:2223"]}}
CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"


def _sdp(proto: str = "RTP/AVP", *extra: str, ip: str = "192.0.2.10") -> SdpFacts:
    lines = ["v=0", f"o=- 1 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0"]
    lines += [f"m=audio 4000 {proto} 0", "a=rtpmap:0 PCMU/8000", *extra]
    return SdpFacts.parse("\r\n".join(lines) + "\r\n")


def _outside(srtp: str = "optional", tls: bool = False, **settings) -> Side:
    return Side(PeerMedia(srtp=srtp, **settings), outside=True, tls=tls)


INSIDE = Side(PeerMedia(), outside=False, tls=False)


# --- the policy ---------------------------------------------------------------------


@pytest.mark.parametrize("suite", WEAK_SUITES)
def test_weak_sdes_suites_are_refused_by_the_policy(suite):
    with pytest.raises(ValidationError, match="weak SDES suites"):
        PeerMedia(sdes_suites=["AES_CM_128_HMAC_SHA1_80", suite])


def test_default_suites_are_strong_and_prefer_gcm():
    suites = PeerMedia().sdes_suites
    assert suites[0].startswith("AEAD_AES") and "AES_CM_128_HMAC_SHA1_80" in suites
    assert not set(suites) & set(WEAK_SUITES)


def test_the_pbx_cannot_be_bridged():
    with pytest.raises(ValidationError, match=r"pbx\.srtp cannot be bridge"):
        MediaSettings(**NG, pbx={"srtp": "bridge"})


def test_ng_address_must_be_an_ip_literal():
    with pytest.raises(ValidationError):
        MediaSettings(rtpengine={"ng": ["rtpengine.example:2223"]})


def test_media_trunks_must_name_a_trunk():
    text = """\
domain: example.net
peers: {pbx: {address: 127.0.0.1:5090}}
media:
  rtpengine: {ng: ["127.0.0.1:2223"]}
  trunks: {nosuch: {srtp: mandatory}}
"""
    with pytest.raises(PolicyError, match=r"media\.trunks names no trunk.*nosuch"):
        parse_policy(text, "p.yaml")


def test_example_policy_anchors_media():
    policy = parse_policy((REPO / "kamailio-cfg" / "policy.example.yaml").read_text())
    assert policy.media is not None and policy.media.users.strict_source


def test_trunk_class_falls_back_to_users():
    settings = MediaSettings(
        **NG, users={"srtp": "bridge"}, trunks={"carrier": {"srtp": "mandatory"}}
    )
    assert settings.for_class("trunk:carrier").srtp == "mandatory"
    assert settings.for_class("trunk:other").srtp == "bridge"
    assert settings.for_class("pbx") is settings.pbx


# --- offers from outside ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mandatory", "bridge"])
def test_plain_offer_is_refused_where_srtp_is_required(mode):
    refusal = offer_problem(_sdp(), _outside(mode))
    assert refusal is not None and refusal.code == 488
    assert offer_problem(_sdp("RTP/SAVP", CRYPTO), _outside(mode)) is None
    assert (
        offer_problem(_sdp("UDP/TLS/RTP/SAVP", "a=fingerprint:sha-256 AB"), _outside(mode)) is None
    )


def test_plain_offer_is_fine_where_srtp_is_optional_and_from_the_pbx():
    assert offer_problem(_sdp(), _outside("optional")) is None
    assert offer_problem(_sdp(), Side(PeerMedia(srtp="mandatory"), False, False)) is None


def test_zrtp_offer_counts_as_encrypted():
    assert offer_problem(_sdp("RTP/AVP", "a=zrtp-hash:1.10 abcd"), _outside("mandatory")) is None


def test_offer_with_only_weak_sdes_suites_is_refused():
    weak = "a=crypto:1 NULL_HMAC_SHA1_32 inline:AAAA"
    refusal = offer_problem(_sdp("RTP/SAVP", weak), _outside())
    assert refusal is not None and "no acceptable SDES suite" in refusal.reason
    assert offer_problem(_sdp("RTP/SAVP", weak, CRYPTO.replace(":1 ", ":2 ")), _outside()) is None


def test_media_address_outside_the_allowed_networks_is_refused():
    side = _outside(media_networks=["198.51.100.0/24"])
    refusal = offer_problem(_sdp(ip="192.0.2.10"), side)
    assert refusal is not None and "192.0.2.10" in refusal.reason
    assert offer_problem(_sdp(ip="198.51.100.7"), side) is None


# --- what rtpengine is told --------------------------------------------------------


def test_defaults_anchor_with_strict_source_and_fixed_addresses():
    options = plan_offer(_sdp(), _outside(), INSIDE).options
    assert options is not None
    assert options.flags == ("strict-source",)
    assert options.replace == ("origin", "session-connection")
    assert options.ice == "remove"
    assert options.transport_protocol is None


def test_handover_latching_and_ice_follow_the_policy():
    side = _outside(strict_source=False, media_handover=True, latching=False, ice="keep")
    options = plan_offer(_sdp(), INSIDE, side).options
    assert options is not None
    assert options.flags == ("media-handover", "asymmetric") and options.ice is None


def test_bridge_makes_the_pbx_leg_plain_and_the_outside_leg_srtp():
    to_pbx = plan_offer(_sdp("RTP/SAVP", CRYPTO), _outside("bridge", tls=True), INSIDE).options
    assert to_pbx is not None and to_pbx.transport_protocol == "RTP/AVP"
    to_user = plan_offer(_sdp(), INSIDE, _outside("bridge", tls=True)).options
    assert to_user is not None and to_user.transport_protocol == "RTP/SAVP"
    assert set(to_user.sdes) == {f"no-{s}" for s in WEAK_SUITES} | {
        "no-AES_192_CM_HMAC_SHA1_80",
        "pad",
    }


def test_feedback_profile_is_kept_when_bridging():
    options = plan_offer(_sdp("RTP/AVPF"), INSIDE, _outside("mandatory", tls=True)).options
    assert options is not None and options.transport_protocol == "RTP/SAVPF"


def test_srtp_towards_a_plain_hop_uses_dtls_never_sdes():
    options = plan_offer(_sdp(), INSIDE, _outside("mandatory", tls=False)).options
    assert options is not None
    assert options.transport_protocol == "UDP/TLS/RTP/SAVP" and options.sdes == ("off",)


def test_sdes_offer_relayed_to_a_plain_hop_turns_into_dtls():
    options = plan_offer(_sdp("RTP/SAVP", CRYPTO), _outside(tls=True), INSIDE).options
    assert options is not None
    assert options.transport_protocol == "UDP/TLS/RTP/SAVP" and options.sdes == ("off",)


def test_zrtp_is_relayed_without_bridging():
    facts = _sdp("RTP/AVP", "a=zrtp-hash:1.10 abcd")
    options = plan_offer(facts, INSIDE, _outside("bridge", tls=True)).options
    assert options is not None and options.transport_protocol is None and options.sdes == ()


def test_passthrough_leaves_the_sdp_alone():
    assert plan_offer(_sdp(), _outside("passthrough"), INSIDE).options is None
    assert answer_options(INSIDE, _outside("passthrough")) is None


def test_answers_towards_outside_keep_the_suite_allowlist():
    options = answer_options(INSIDE, _outside(tls=True))
    assert options is not None and "no-NULL_HMAC_SHA1_80" in options.sdes
    towards_pbx = answer_options(_outside(), INSIDE)
    assert towards_pbx is not None and towards_pbx.sdes == ()


def test_dead_rtpengine_fails_closed_where_srtp_is_required():
    passthrough = MediaSettings(**NG, on_failure="passthrough")
    assert not fails_closed(passthrough, PeerMedia())
    assert fails_closed(passthrough, PeerMedia(srtp="mandatory"))
    assert fails_closed(passthrough, PeerMedia(srtp="bridge"))
    assert fails_closed(MediaSettings(**NG), PeerMedia())


def test_leg_memo_round_trips():
    leg = Leg("abc|def~out", "trunk:carrier", to_inside=False, outside_tls=True)
    memo = leg.encode("INVITE", offered=True, initial=False, via_branch="z9hG4bK.1")
    assert Leg.decode(memo) == Memo(leg, "INVITE", True, False, "z9hG4bK.1")
    # In dialog there is no branch to keep apart.
    assert Leg.decode(leg.encode("UPDATE", False, False, "")).via_branch == ""


def test_request_branch_is_the_top_via_branch_of_initial_requests_only():
    invite = RawSipMessage(
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKpbx2;rport,"
        b" SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKa\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKb\r\n"
        b"From: <sip:alice@example.com>;tag=f\r\nTo: <sip:bob@example.com>\r\n"
        b"Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert request_branch(invite) == "z9hG4bKpbx2"
    reinvite = RawSipMessage(
        invite.raw.replace(b"<sip:bob@example.com>", b"<sip:bob@example.com>;tag=t", 1)
    )
    assert reinvite.in_dialog and request_branch(reinvite) is None


# --- codec and media-type filtering ------------------------------------------------

AUDIO_VIDEO = (
    "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.10",
            "s=-",
            "c=IN IP4 192.0.2.10",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0 8 96 101",
            "a=rtpmap:96 opus/48000/2",
            "a=rtpmap:101 telephone-event/8000",
            "m=video 4002 RTP/AVP 97",
            "a=rtpmap:97 H264/90000",
        ]
    )
    + "\r\n"
)


def test_sections_name_static_and_dynamic_codecs():
    facts = SdpFacts.parse(AUDIO_VIDEO)
    assert [(s.kind, s.codecs) for s in facts.sections] == [
        ("audio", ("PCMU", "PCMA", "OPUS", "TELEPHONE-EVENT")),
        ("video", ("H264",)),
    ]


def test_media_types_not_allowed_are_rejected_with_port_zero_in_place():
    policy = PeerMedia(media_types=["audio"])
    filtered = reject_media_types(AUDIO_VIDEO, policy)
    assert "m=audio 4000 RTP/AVP 0 8 96 101\r\n" in filtered
    assert "m=video 0 RTP/AVP 97\r\n" in filtered  # the answer still lines up
    assert [s.kind for s in SdpFacts.parse(filtered).sections] == ["audio"]
    assert reject_media_types(AUDIO_VIDEO, PeerMedia()) == AUDIO_VIDEO


def test_codecs_not_allowed_are_stripped_by_rtpengine():
    policy = PeerMedia(codecs=["pcmu", "telephone-event"])
    facts = SdpFacts.parse(AUDIO_VIDEO)
    assert codecs_to_strip(facts, policy) == ("H264", "OPUS", "PCMA")
    plan = plan_offer(facts, Side(policy, outside=True, tls=False), INSIDE)
    assert plan.options is not None
    assert plan.options.to_ng()["codec"] == {"strip": ["H264", "OPUS", "PCMA"]}
    # Offers towards the party are filtered by its policy too.
    plan = plan_offer(facts, INSIDE, Side(policy, outside=True, tls=False))
    assert plan.options is not None and plan.options.codec_strip == ("H264", "OPUS", "PCMA")
    assert "codec" not in plan_offer(facts, INSIDE, _outside()).options.to_ng()  # type: ignore[union-attr]


def test_offers_with_nothing_allowed_are_refused():
    facts = SdpFacts.parse(AUDIO_VIDEO)
    assert media_problem(facts, PeerMedia(media_types=["audio"], codecs=["PCMU"])) is None
    no_type = media_problem(facts, PeerMedia(media_types=["image"]))
    assert no_type is not None and no_type.code == 488 and "audio, video" in no_type.reason
    no_codec = media_problem(facts, PeerMedia(media_types=["audio"], codecs=["G729"]))
    assert no_codec is not None and "no allowed codec" in no_codec.reason
    assert "H264" not in no_codec.reason  # video was not allowed anyway


def test_media_filter_policy_fields_are_checked():
    with pytest.raises(ValidationError, match="media_types"):
        PeerMedia(media_types=["hologram"])  # type: ignore[list-item]
    settings = MediaSettings.model_validate(
        {**NG, "trunks": {"carrier": {"media_types": ["audio"], "codecs": ["PCMA"]}}}
    )
    assert settings.for_class("trunk:carrier").media_types == ["audio"]
    assert settings.for_class("users").media_types == []


def test_an_sdp_without_media_lines_has_no_sections():
    # Found by `make fuzz`: a body cut to "v" (Content-Length: 1) crashed the parser.
    from sipshield.sip.sdp import SdpFacts

    for body in ("v", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n", ""):
        assert SdpFacts.parse(body).sections == ()
