"""Pure logic of the signalling-protection modules (Redis paths are lab-tested)."""

import pytest

from sipshield.checks.ip_controls import IpControls, IpControlsConfig
from sipshield.checks.scanner import ScannerConfig, ScannerDetection
from sipshield.core.bans import BanSettings, escalated_ttl, scope_key
from sipshield.core.pipeline import drops_refusals
from sipshield.core.policy import never_banned, parse_policy
from sipshield.core.site import Site
from sipshield.core.verdict import CONTINUE, Accept, Ban, Drop, Reject, decided_response
from sipshield.sip.message import RawSipMessage
from sipshield.sip.reply import credentials_username

POLICY = parse_policy(
    "domain: example.net\npeers:\n  pbx: {address: 10.0.0.2:5060}\n"
    "  trunks:\n    - {name: carrier, target: 198.51.100.1:5060, transport: tcp,\n"
    "       domains: [carrier.example], sources: [198.51.100.0/24]}\n"
)
SITE = Site.from_policy(POLICY)


def request(src_ip="192.0.2.9", transport="udp", from_domain="example.net", ua="Zoiper"):
    raw = (
        "OPTIONS sip:bob@example.net SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {src_ip};branch=z9hG4bK1\r\n"
        f"From: <sip:alice@{from_domain}>;tag=1\r\nTo: <sip:bob@example.net>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: {ua}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return RawSipMessage(raw, src_ip=src_ip, transport=transport, site=SITE)


def test_ban_ttl_escalates_per_offence_up_to_the_ceiling():
    settings = BanSettings(base_ttl_s=600, escalation_factor=4, max_ttl_s=86400)
    assert [escalated_ttl(settings, n) for n in (1, 2, 3, 4, 5)] == [
        600, 2400, 9600, 38400, 86400,
    ]  # fmt: skip


def test_scopes():
    assert scope_key("192.0.2.1") == "ip:192.0.2.1"
    assert scope_key("2001:db8::1", "alice") == "user:2001:db8::1:alice"


def controls(**settings):
    module = IpControls(IpControlsConfig(**settings))
    module.bind(SITE)
    return module


def test_allow_list_accepts_and_deny_list_drops():
    module = controls(allow=["10.1.0.0/16", "2001:db8::/32"], deny=["203.0.113.0/24"])
    assert isinstance(module.check(request("10.1.2.3"), None), Accept)
    assert isinstance(module.check(request("2001:db8::7"), None), Accept)
    denied = module.check(request("203.0.113.9"), None)
    assert isinstance(decided_response(denied, "OPTIONS", drops_refusals(module)), Drop)
    assert module.check(request("192.0.2.9"), None) is CONTINUE


def test_deny_can_answer_403():
    module = controls(deny=["203.0.113.0/24"], deny_response="reject")
    verdict = decided_response(
        module.check(request("203.0.113.9"), None), "OPTIONS", drops_refusals(module)
    )
    assert isinstance(verdict, Reject) and verdict.code == 403


def test_trunk_must_use_its_transport_and_its_domain_its_sources():
    module = controls()
    assert module.check(request("198.51.100.7", transport="tcp"), None) is CONTINUE
    wrong_transport = module.check(request("198.51.100.7", transport="udp"), None)
    assert isinstance(wrong_transport, Reject)
    assert "must use tcp" in wrong_transport.reason
    impostor = module.check(request("192.0.2.50", from_domain="carrier.example"), None)
    assert isinstance(impostor, Reject)
    assert "not one of its sources" in impostor.reason


def test_allowlisted_and_pbx_are_never_banned():
    policy = parse_policy(
        "domain: x\npeers:\n  pbx: {address: 10.0.0.2:5060}\n"
        "modules:\n  - {name: ip_controls, allow: [10.9.0.0/16]}\n"
    )
    assert never_banned(policy) == ["10.0.0.2", "10.9.0.0/16"]


@pytest.mark.parametrize(
    ("agent", "banned"),
    [
        ("friendly-scanner", True),
        ("sipvicious 0.3.4", True),
        ("SIPVicious", True),
        ("sipcli/v1.8", True),
        ("Zoiper rv2.10", False),
        ("Linphone/5.2", False),
        ("", False),
    ],
)
def test_scanner_user_agents(agent, banned):
    verdict = ScannerDetection(ScannerConfig()).check(request(ua=agent), None)
    assert isinstance(verdict, Ban) is banned


def test_digest_username():
    header = 'Digest username="alice", realm="x", nonce="n", response="r"'
    assert credentials_username(header) == "alice"
    assert credentials_username("") == ""
