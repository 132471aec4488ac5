"""registration_guard's allowances, each next to the refusal it is an exception to.

The lab PBX challenges every REGISTER it receives (401), so a 401 means the
guard let the request through and a 403 means the guard refused it.
"""

from __future__ import annotations

import secrets
import socket
import time

import pytest

from tests.integration.lab_fixture import RunningLab, lab_with_policy

pytestmark = pytest.mark.integration

MOVE_WINDOW_S = 2
POLICY = f"""\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
modules:
  - name: registration_guard
    on_move: deny
    move_window_s: {MOVE_WINDOW_S}
    third_party_allowed: [frontdesk]
    contact_mismatch: deny
"""


def register(
    lab: RunningLab, aor: str, from_user: str, source: str, contact_host: str | None = None
) -> bytes:
    """A REGISTER sent from ``source`` (Via = source: no NAT in between)."""
    tag = secrets.token_hex(4)
    return (
        f"REGISTER sip:{lab.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:5060;branch=z9hG4bK{tag}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{from_user}@{lab.domain}>;tag={tag}\r\n"
        f"To: <sip:{aor}@{lab.domain}>\r\n"
        f"Call-ID: {tag}@{source}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{aor}@{contact_host or source}:5060>\r\n"
        "Expires: 300\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def send_from(lab: RunningLab, raw: bytes, source: str) -> int | None:
    """Sent from ``source``:5060, as the Via says (so no NAT is seen)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 5060))
        sock.settimeout(2.0)
        sock.sendto(raw, lab.sip())
        return int(sock.recv(65535).split(b" ", 2)[1])


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    with lab_with_policy(tmp_path_factory.mktemp("regguard"), POLICY) as running:
        yield running


def test_only_the_listed_account_may_be_registered_by_another_user(guarded: RunningLab):
    source = "127.0.0.81"
    assert send_from(guarded, register(guarded, "frontdesk", "operator", source), source) == 401
    assert send_from(guarded, register(guarded, "alice", "operator", source), source) == 403
    event = guarded.wait_for_event(module="registration_guard", action="reject")
    assert event["reason"] == "third-party registration of 'alice' by 'operator'"


def test_a_contact_elsewhere_is_refused_when_no_nat_is_seen(guarded: RunningLab):
    source = "127.0.0.82"
    assert send_from(guarded, register(guarded, "bob", "bob", source), source) == 401
    elsewhere = register(guarded, "bob", "bob", source, contact_host="127.0.0.99")
    assert send_from(guarded, elsewhere, source) == 403
    assert any(
        e["reason"] == "Contact 127.0.0.99:5060 of 'bob' is not the source 127.0.0.82:5060, "
        "and no NAT is seen"
        for e in guarded.events()
        if e["module"] == "registration_guard"
    )


def test_a_binding_may_move_once_the_move_window_has_passed(guarded: RunningLab):
    registered = guarded.register("carol", local_ip="127.0.0.83")
    assert registered.ok, registered.explain()
    fingerprint = guarded.redis.hgetall("sipshield:regfp:carol")
    assert fingerprint["ip"] == "127.0.0.83"
    # Within the window, from elsewhere: refused (on_move: deny).
    moved = register(guarded, "carol", "carol", "127.0.0.84")
    assert send_from(guarded, moved, "127.0.0.84") == 403
    # Past the window the same move is an ordinary registration.
    while time.time() - float(fingerprint["ts"]) <= MOVE_WINDOW_S + 1:
        time.sleep(0.1)
    assert (
        send_from(guarded, register(guarded, "carol", "carol", "127.0.0.84"), "127.0.0.84") == 401
    )
