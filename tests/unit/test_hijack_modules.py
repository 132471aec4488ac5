"""Pure logic of the CANCEL, registration and REFER guards (Redis paths are lab-tested)."""

from __future__ import annotations

import pytest

from sipshield.checks.cancel_guard import CancelGuard, CancelGuardConfig, cancel_problem
from sipshield.checks.refer_policy import ReferPolicy, ReferPolicyConfig
from sipshield.checks.registration_guard import (
    RegistrationGuard,
    RegistrationGuardConfig,
    host_port,
    is_deregistration,
    user_agent_family,
)
from sipshield.core.hop import Hop
from sipshield.core.policy import parse_policy
from sipshield.core.site import Site
from sipshield.core.verdict import CONTINUE, Alert, Reject
from sipshield.sip.message import RawSipMessage


def test_cancel_must_come_from_the_invites_source():
    strict, lenient = CancelGuardConfig(), CancelGuardConfig(nat_rebinding="port")
    invite = ("192.0.2.10", 5062, "udp")
    assert cancel_problem(strict, invite, invite) is None
    assert "192.0.2.66" in cancel_problem(strict, ("192.0.2.66", 5062, "udp"), invite)
    assert cancel_problem(strict, ("192.0.2.10", 5063, "udp"), invite) is not None
    assert cancel_problem(lenient, ("192.0.2.10", 5063, "udp"), invite) is None
    assert cancel_problem(lenient, ("192.0.2.10", 5062, "tcp"), invite) is not None


def test_the_relay_phase_refuses_a_cancel_from_elsewhere_or_for_nothing():
    guard = CancelGuard(CancelGuardConfig())
    cancel = RawSipMessage(
        b"CANCEL sip:bob@example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.66;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@example.net>;tag=1\r\nTo: <sip:bob@example.net>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        src_ip="192.0.2.66",
        src_port=5062,
    )

    def hop(invite_source):
        return Hop("", "sip:bob@example.net", False, invite_source=invite_source)

    assert guard.check_relay(cancel, hop(("192.0.2.66", 5062, "udp")), None) is CONTINUE
    forged = guard.check_relay(cancel, hop(("192.0.2.10", 5062, "udp")), None)
    assert isinstance(forged, Reject) and forged.code == 403
    assert forged.reason == (
        "CANCEL from 192.0.2.66:5062/udp, but its INVITE came from 192.0.2.10:5062/udp"
    )
    nothing = guard.check_relay(cancel, hop(None), None)
    assert isinstance(nothing, Reject) and nothing.code == 481


def register(to="alice", frm="alice", src=("192.0.2.10", 5062), expires="300", extra="", via=None):
    via = via or f"{src[0]}:{src[1]}"
    raw = (
        "REGISTER sip:example.net SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK1;rport\r\n"
        f"From: <sip:{frm}@example.net>;tag=1\r\nTo: <sip:{to}@example.net>\r\n"
        f"Call-ID: r1\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{to}@{src[0]}:{src[1]}>\r\nExpires: {expires}\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return RawSipMessage(raw, src_ip=src[0], src_port=src[1])


def test_third_party_registration_is_refused_unless_allowed():
    guard = RegistrationGuard(RegistrationGuardConfig(third_party_allowed=["frontdesk"]))
    refused = guard.check(register(to="alice", frm="mallory"), None)
    assert isinstance(refused, Reject) and "by 'mallory'" in refused.reason
    creds = 'Authorization: Digest username="mallory", realm="example.net"\r\n'
    assert isinstance(guard.check(register(extra=creds), None), Reject)


@pytest.mark.parametrize(
    ("contact", "expires", "expected"),
    [
        ("<sip:a@192.0.2.1>", "0", True),
        ("<sip:a@192.0.2.1>", "300", False),
        ("<sip:a@192.0.2.1>;expires=0", "300", True),
        ("<sip:a@192.0.2.1>;expires=0, <sip:a@192.0.2.2>;expires=60", "", False),
        ("*", "0", True),
    ],
)
def test_deregistration(contact, expires, expected):
    raw = (
        "REGISTER sip:example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        "From: <sip:a@example.net>;tag=1\r\nTo: <sip:a@example.net>\r\nCall-ID: 1\r\n"
        f"CSeq: 1 REGISTER\r\nContact: {contact}\r\n"
        + (f"Expires: {expires}\r\n" if expires else "")
        + "Content-Length: 0\r\n\r\n"
    ).encode()
    assert is_deregistration(RawSipMessage(raw)) is expected


def test_user_agent_families_ignore_versions():
    assert user_agent_family("Zoiper rv2.10.8.2") == user_agent_family("Zoiper 5.4") == "zoiper"
    assert user_agent_family("Linphone/4.2 (belle-sip)") == "linphone"
    assert user_agent_family("sipshield-test") == "sipshield-test"
    assert user_agent_family("") == ""


def test_host_port():
    assert host_port("sip:alice@192.0.2.1:5062;transport=udp") == ("192.0.2.1", 5062)
    assert host_port("sip:[2001:db8::1]:5060") == ("2001:db8::1", 5060)
    assert host_port("sip:example.net") == ("example.net", None)


def test_a_contact_that_is_not_the_source_without_nat_is_flagged():
    guard = RegistrationGuard(RegistrationGuardConfig())
    msg = register(src=("192.0.2.10", 5062))
    moved_contact = RawSipMessage(
        msg.raw.replace(
            b"Contact: <sip:alice@192.0.2.10:5062>", b"Contact: <sip:alice@203.0.113.9>"
        ),
        src_ip="192.0.2.10",
        src_port=5062,
    )
    assert guard._contact_outcome(msg) is CONTINUE
    assert isinstance(guard._contact_outcome(moved_contact), Alert)
    behind_nat = register(src=("192.0.2.10", 5062), via="10.0.0.5:5060")
    assert guard._contact_outcome(behind_nat) is CONTINUE
    deny = RegistrationGuard(RegistrationGuardConfig(contact_mismatch="deny"))
    assert isinstance(deny._contact_outcome(moved_contact), Reject)


def test_binding_move_within_the_window():
    now = 10_000.0
    guard = RegistrationGuard(RegistrationGuardConfig(move_window_s=600), clock=lambda: now)
    print_ = {"ip": "192.0.2.10", "port": "5062", "ua": "zoiper", "ts": str(now - 60)}
    same = register(extra="User-Agent: Zoiper 5\r\n")
    assert guard._move(same, print_) is None
    elsewhere = register(src=("198.51.100.7", 5062), extra="User-Agent: Zoiper 5\r\n")
    assert "192.0.2.10 -> 198.51.100.7" in guard._move(elsewhere, print_)
    other_ua = register(extra="User-Agent: Linphone/4\r\n")
    assert "'zoiper' -> 'linphone'" in guard._move(other_ua, print_)
    stale = {**print_, "ts": str(now - 700)}
    assert guard._move(elsewhere, stale) is None


def refer(target, src="192.0.2.10", refer_to=None):
    """A REFER to ``target``; ``refer_to`` replaces the whole Refer-To line(s)."""
    refer_to = refer_to or f"Refer-To: <{target}>"
    raw = (
        "REFER sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
        "From: <sip:alice@example.net>;tag=1\r\nTo: <sip:bob@example.net>;tag=2\r\n"
        f"Call-ID: c\r\nCSeq: 2 REFER\r\n{refer_to}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return RawSipMessage(raw, src_ip=src, site=REFER_SITE)


REFER_SITE = Site.from_policy(
    parse_policy(
        "domain: example.net\npeers:\n  pbx: {address: 10.0.0.2:5060}\n  trunks:\n"
        "    - {name: carrier, target: 198.51.100.1:5060, sources: [198.51.100.0/24]}\n"
    )
)


def refer_module(**settings):
    module = ReferPolicy(ReferPolicyConfig(**settings))
    module.bind(REFER_SITE)
    return module


def test_refer_targets_default_to_the_own_domain_without_international_numbers():
    module = refer_module()
    assert module.check(refer("sip:carol@example.net"), None) is CONTINUE
    assert isinstance(module.check(refer("sip:carol@evil.example"), None), Reject)
    assert isinstance(module.check(refer("sip:+4490012345@example.net"), None), Reject)
    assert isinstance(module.check(refer("tel:0900123456"), None), Reject)


@pytest.mark.parametrize(
    "refer_to",
    [
        # The number as the far end dials it: percent-escaped, with visual separators.
        "Refer-To: <sip:%2B441632960123@example.net>",
        "Refer-To: <sip:(0900)123456@example.net;user=phone>",
        "Refer-To: <sip:0-900-123456@example.net>",
        "Refer-To: <tel:0.0.44.1632.960123>",
        "Refer-To: <sip:0112025550123@example.net>",
        # A display name holding an allowed URI in front of the real one.
        'Refer-To: "x <sip:carol@example.net>" <sip:+441632960123@example.net>',
        # Two targets: only one could be checked.
        "Refer-To: <sip:carol@example.net>\r\nRefer-To: <sip:+441632960123@example.net>",
        "Refer-To: <sip:carol@example.net>, <sip:+441632960123@example.net>",
        'Refer-To: "unterminated <sip:carol@example.net>',
    ],
)
def test_refer_targets_spelled_to_slip_past_the_patterns_are_refused(refer_to):
    assert isinstance(refer_module().check(refer("", refer_to=refer_to), None), Reject)


def test_refer_targets_that_only_look_odd_still_pass():
    module = refer_module()
    # Commas and quotes inside one value, a Replaces header, a port, case.
    for refer_to in (
        'Refer-To: "Carol, Sales" <sip:carol@example.net>',
        "Refer-To: <sip:dave@EXAMPLE.net:5060?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        "r: <sip:1234@example.net;user=phone>",
    ):
        assert module.check(refer("", refer_to=refer_to), None) is CONTINUE, refer_to


def test_refer_allow_patterns_and_trunks():
    module = refer_module(allow=[r"sip:[0-9]{3,4}@"])
    assert module.check(refer("sip:1234@example.net"), None) is CONTINUE
    assert isinstance(module.check(refer("sip:carol@example.net"), None), Reject)
    from_trunk = module.check(refer("sip:1234@example.net", src="198.51.100.9"), None)
    assert isinstance(from_trunk, Reject) and "trunk carrier" in from_trunk.reason
    assert (
        refer_module(trunks_may_refer=True).check(
            refer("sip:carol@example.net", src="198.51.100.9"), None
        )
        is CONTINUE
    )


def test_bad_refer_pattern_is_refused_by_the_policy():
    with pytest.raises(ValueError, match="bad pattern"):
        ReferPolicyConfig(allow=["("])
