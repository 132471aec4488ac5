"""TLS through the real SBC: versions and ciphers, TLS-only peers, mTLS trunks, SIPS, SDES.

SIPp runs over TCP into a TLS client tunnel (see tls_peer: Debian's SIPp has
no TLS); one-shot requests use Python's ssl with or without a client
certificate; handshakes are probed with ``openssl s_client``.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from sipshield.lab.net import free_port
from sipshield.lab.sip_probe import options_request
from sipshield.lab.sipp import run_sipp
from sipshield.lab.tls_material import issue_certificate, make_ca
from tests.integration.lab_fixture import RunningLab
from tests.integration.tls_peer import TlsTunnel, client_context, tls_request

pytestmark = pytest.mark.integration

BASE = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
"""


def _s_client(lab: RunningLab, *flags: str) -> subprocess.CompletedProcess:
    host, port = lab.sip("tls")
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-CAfile", lab.info["tls"]["ca"]]
        + list(flags),
        input="",
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )


def _handshake_ok(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 0 and "Cipher is (NONE)" not in result.stdout


def _context(lab: RunningLab, cert: Path | None = None, key: Path | None = None):
    return client_context(Path(lab.info["tls"]["ca"]), cert, key)


def _request(
    method: str, ruri: str, local: tuple[str, int], transport: str, extra: str = "", body: str = ""
) -> bytes:
    host, port = local
    branch = "z9hG4bK" + secrets.token_hex(6)
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {host}:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        # A user of the lab's domain: a From of another domain is an internet
        # call, which the lab's policy (internet off) refuses before these rules.
        f"From: <sip:tester@sipshield.lab>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{ruri}>\r\n"
        f"Call-ID: {secrets.token_hex(10)}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:tester@{host}:{port};transport={transport}>\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def _sdp(*extra_lines: str) -> str:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 40000 RTP/SAVP 0",
        "a=rtpmap:0 PCMU/8000",
        *extra_lines,
    ]
    return "\r\n".join(lines) + "\r\n"


CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32)


def _invite(local: tuple[str, int], transport: str, *sdp_lines: str) -> bytes:
    return _request(
        "INVITE",
        "sip:bob@sipshield.lab",
        local,
        transport,
        "Content-Type: application/sdp\r\n",
        _sdp(*sdp_lines),
    )


def _udp(lab: RunningLab, build, source_ip: str = "127.0.0.1") -> int | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((source_ip, 0))
        local = probe.getsockname()
    return lab.send(build(local), source_ip=source_ip)


# --- handshakes: versions and ciphers -------------------------------------------


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_old_tls_versions_are_refused(lab: RunningLab, version: str):
    # SECLEVEL=0: the client offers the old version for sure; the SBC must refuse it.
    result = _s_client(lab, version, "-cipher", "DEFAULT@SECLEVEL=0")
    assert not _handshake_ok(result), result.stdout[-500:]


@pytest.mark.parametrize(("version", "protocol"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_12_and_13_handshake(lab: RunningLab, version: str, protocol: str):
    result = _s_client(lab, version)
    assert _handshake_ok(result), result.stdout[-500:] + result.stderr[-500:]
    assert f"Protocol  : {protocol}" in result.stdout or f"New, {protocol}" in result.stdout


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
def test_weak_ciphers_are_refused(lab: RunningLab, cipher: str):
    result = _s_client(lab, "-tls1_2", "-cipher", cipher)
    assert not _handshake_ok(result), result.stdout[-500:]


def test_strong_cipher_is_accepted(lab: RunningLab):
    result = _s_client(lab, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _handshake_ok(result), result.stdout[-500:]
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in result.stdout


# --- remote users over TLS ------------------------------------------------------


def _register_over_tls(lab: RunningLab, tunnel: TlsTunnel, user: str):
    return run_sipp(
        "register",
        tunnel.address,
        service=user,
        transport="tcp",
        auth=(user, lab.password(user)),
        keys={"domain": lab.domain},
        timeout_s=10,
    )


def _call_over_tls(lab: RunningLab, tunnel: TlsTunnel, caller: str, callee: str, **options):
    return run_sipp(
        options.pop("scenario", "call_uac"),
        tunnel.address,
        service=callee,
        transport="tcp",
        auth=(caller, lab.password(caller)),
        keys={"domain": lab.domain, "caller": caller},
        timeout_s=15,
        **options,
    )


def test_remote_user_registers_and_calls_over_tls(lab: RunningLab):
    with TlsTunnel(lab.sip("tls"), _context(lab)) as tunnel:
        registered = _register_over_tls(lab, tunnel, "carol")
        assert registered.ok, registered.explain()
        callee = lab.answer_calls("dave", free_port())
        caller = _call_over_tls(lab, tunnel, "carol", "dave")
        answered = callee.finish()
    assert caller.ok, caller.explain()
    assert answered.ok, answered.explain()


def test_realm_that_requires_tls_refuses_udp(make_lab):
    lab = make_lab(BASE + "modules:\n  - {name: tls_policy, require_tls_realms: [sipshield.lab]}\n")
    over_udp = lab.register("alice")
    assert not over_udp.ok
    event = lab.wait_for_event(module="tls_policy", action="reject", method="REGISTER")
    assert "realm sipshield.lab requires TLS" in event["reason"]
    assert "over udp" in event["reason"]
    with TlsTunnel(lab.sip("tls"), _context(lab)) as tunnel:
        over_tls = _register_over_tls(lab, tunnel, "alice")
    assert over_tls.ok, over_tls.explain()
    # A peer of another realm is not concerned.
    assert lab.options() == 200


# --- trunks with mutual TLS -----------------------------------------------------

TRUNK_IP = "127.0.0.20"


@pytest.fixture
def mtls_lab(make_lab, tmp_path: Path):
    pki = tmp_path / "pki"
    ca = make_ca(pki, "trunk-ca", "Carrier Trunk CA")
    rogue = make_ca(pki, "rogue-ca", "Rogue CA")
    certs = {
        "right": issue_certificate(pki, "right", "carrier", ["sip.carrier.test"], ca),
        "wrong_name": issue_certificate(pki, "wrong", "other", ["sip.other.test"], ca),
        "other_ca": issue_certificate(pki, "foreign", "carrier", ["sip.carrier.test"], rogue),
    }
    lab = make_lab(
        f"""\
domain: sipshield.lab
tls:
  ca_list: {ca[0]}
  client_certificates: optional_no_ca
peers:
  pbx: {{address: 127.0.0.1:5090}}
  trunks:
    - name: carrier
      target: {TRUNK_IP}:5061
      sources: [{TRUNK_IP}/32]
      mtls: {{expected_names: [sip.carrier.test]}}
modules:
  - name: tls_policy
"""
    )
    return lab, certs


def _trunk_options(lab: RunningLab, cert=None, source_ip: str = TRUNK_IP) -> int | None:
    context = _context(lab, *(cert or (None, None)))
    target = lab.sip_target("tls")
    return tls_request(
        lab.sip("tls"),
        lambda local: options_request(target, local, "tls"),
        context,
        source_ip=source_ip,
    )


def test_trunk_with_the_right_certificate_is_accepted(mtls_lab):
    lab, certs = mtls_lab
    assert _trunk_options(lab, certs["right"]) == 200


@pytest.mark.parametrize(
    ("which", "why"),
    [
        ("wrong_name", "match none of ['sip.carrier.test']"),
        ("other_ca", "did not verify"),
        (None, "no client certificate"),
    ],
)
def test_trunk_without_the_right_identity_is_rejected(mtls_lab, which, why):
    lab, certs = mtls_lab
    assert _trunk_options(lab, certs[which] if which else None) == 403
    event = lab.wait_for_event(module="tls_policy", action="reject")
    assert "trunk carrier" in event["reason"] and why in event["reason"]
    assert event["src"].startswith(TRUNK_IP + ":")
    # The legitimate trunk and a remote user next to it still get through.
    assert _trunk_options(lab, certs["right"]) == 200
    assert _trunk_options(lab, source_ip="127.0.0.1") == 200


def test_trunk_over_udp_is_rejected(mtls_lab):
    lab, _ = mtls_lab
    assert lab.options(source_ip=TRUNK_IP) == 403
    event = lab.wait_for_event(module="tls_policy", action="reject")
    assert "trunk carrier requires TLS, request came over udp" in event["reason"]
    assert lab.options(source_ip="127.0.0.1") == 200


# --- SIPS -----------------------------------------------------------------------


def test_sips_never_leaves_over_a_plain_hop(make_lab):
    lab = make_lab(BASE + "modules:\n  - {name: tls_policy}\n")
    context = _context(lab)
    sips = tls_request(
        lab.sip("tls"),
        lambda local: _request("OPTIONS", "sips:bob@sipshield.lab", local, "tls"),
        context,
    )
    # The next hop is the PBX, over UDP: refused before it leaves.
    assert sips == 403
    event = lab.wait_for_event(module="tls_policy", action="reject", method="OPTIONS")
    assert "non-TLS hop" in event["reason"]
    # Received over UDP: refused on arrival.
    received_over_udp = _udp(
        lab, lambda local: _request("OPTIONS", "sips:bob@sipshield.lab", local, "udp")
    )
    assert received_over_udp == 403
    lab.wait_for_event(module="tls_policy", reason="sips: Request-URI received over udp")
    # A sip: request over TLS reaches the PBX (bob is not registered there: 404).
    plain = tls_request(
        lab.sip("tls"),
        lambda local: _request("OPTIONS", "sip:bob@sipshield.lab", local, "tls"),
        context,
    )
    assert plain == 404


def test_sips_never_leaves_over_a_plain_hop_even_without_tls_policy(make_lab):
    # RFC 3261 26.2.2 makes it a routing rule: refused, but no module reports it.
    lab = make_lab(BASE)
    sips = tls_request(
        lab.sip("tls"),
        lambda local: _request("OPTIONS", "sips:bob@sipshield.lab", local, "tls"),
        _context(lab),
    )
    assert sips == 403
    assert "sips: Request-URI would leave over a non-TLS hop" in lab.log("sbc")
    assert lab.events() == []


# --- SDES -----------------------------------------------------------------------


def test_sdes_over_a_plain_hop_is_refused_and_allowed_over_tls(make_lab):
    lab = make_lab(BASE + "modules:\n  - {name: sdes_guard}\n")
    assert _udp(lab, lambda local: _invite(local, "udp", CRYPTO)) == 488
    event = lab.wait_for_event(module="sdes_guard", action="reject")
    assert "over udp" in event["reason"]
    # The same offer over TLS reaches the PBX, which asks for credentials.
    over_tls = tls_request(
        lab.sip("tls"), lambda local: _invite(local, "tls", CRYPTO), _context(lab)
    )
    assert over_tls == 407
    # An offer without SDES over UDP is not concerned.
    assert _udp(lab, lambda local: _invite(local, "udp")) == 407


def test_sdes_is_stripped_in_favour_of_dtls_when_the_policy_says_so(make_lab):
    lab = make_lab(BASE + "modules:\n  - {name: sdes_guard, on_plain_hop: strip}\n")
    assert _udp(lab, lambda local: _invite(local, "udp", CRYPTO, FINGERPRINT)) == 407
    event = lab.wait_for_event(module="sdes_guard", action="strip")
    assert "stripped" in event["reason"]
    # Without DTLS-SRTP to fall back on, stripping would leave no keys: refused.
    assert _udp(lab, lambda local: _invite(local, "udp", CRYPTO)) == 488


def test_sdes_never_leaves_towards_a_user_registered_over_udp(make_lab):
    lab = make_lab(BASE + "modules:\n  - {name: sdes_guard}\n")
    callee = lab.answer_calls("bob", free_port())
    with TlsTunnel(lab.sip("tls"), _context(lab)) as tunnel:
        refused = _call_over_tls(lab, tunnel, "alice", "bob", scenario="call_uac_sdes")
        assert not refused.ok
        event = lab.wait_for_event(module="sdes_guard", action="reject", method="INVITE")
        assert "would leave over a plain hop" in event["reason"]
        # The same call without SDES goes through.
        plain = _call_over_tls(lab, tunnel, "alice", "bob")
    answered = callee.finish()
    assert plain.ok, plain.explain()
    assert answered.ok, answered.explain()
