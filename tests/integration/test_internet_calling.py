"""Internet calls through the real SBC: a foreign domain found by DNS, reached over TLS.

The lab runs with ``--internet``: a DNS server (dnsmasq) serves foreign.test
(NAPTR, SRV, A) and impostor.test (an SRV to the same server, which cannot
prove that name); foreign.test's proxy is a second Kamailio with its own
certificate, and its users register there.  The SBC resolves through that DNS
server in its own mount namespace.  Each refusal is tested beside a call that
must still pass.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipshield.lab.sip_ua import Answering, Call, RtpPeer, UserAgent, sdp
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up

pytestmark = pytest.mark.integration

CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
SDES_OFFER = re.compile(r"^m=audio \d+ RTP/SAVP .*\r?\n(?:.*\r?\n)*a=crypto:", re.MULTILINE)
PLAIN_AUDIO = re.compile(r"^m=audio \d+ RTP/AVP ", re.MULTILINE)

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
internet:
  mode: MODE
  deny_domains: [denied.test]
  require_tls: REQUIRE_TLS
modules:
  - {name: internet_limits, per_domain: 10}
media:
  rtpengine: {ng: ["127.0.0.1:2223"]}
"""


@dataclass
class ForeignDomain:
    """Another company's SIP domain as its users see it: they talk to its proxy.

    A :class:`~sipshield.lab.sip_ua.SipService` for :class:`UserAgent`: its
    users' requests go to the foreign proxy and carry its domain; the proxy
    asks for no password.
    """

    lab: RunningLab
    domain: str

    @property
    def tls_ca(self) -> str:
        return self.lab.tls_ca

    def sip(self, transport: str = "udp") -> tuple[str, int]:
        host, _, port = self.lab.info["internet"]["proxy_udp"].rpartition(":")
        return host, int(port)

    def password(self, user: str) -> str:
        return ""


def _start(tmp: Path, mode: str, require_tls: bool = True) -> RunningLab:
    policy = tmp / f"internet-{mode}.yaml"
    text = POLICY.replace("MODE", mode).replace("REQUIRE_TLS", str(require_tls).lower())
    policy.write_text(text)
    return lab_up(policy, tmp / f"lab-{mode}", None, "--internet")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[RunningLab]:
    running = _start(tmp_path_factory.mktemp("internet"), "both")
    yield running
    lab_down(running)


@pytest.fixture(scope="module")
def lab_off(tmp_path_factory) -> Iterator[RunningLab]:
    running = _start(tmp_path_factory.mktemp("internet-off"), "off")
    yield running
    lab_down(running)


@pytest.fixture(scope="module")
def lab_naptr(tmp_path_factory) -> Iterator[RunningLab]:
    """TLS not required: DNS (NAPTR) chooses the transport."""
    running = _start(tmp_path_factory.mktemp("internet-naptr"), "both", require_tls=False)
    yield running
    lab_down(running)


def _foreign_user(lab: RunningLab, user: str = "bob", domain: str = "foreign.test") -> UserAgent:
    ua = UserAgent(ForeignDomain(lab, domain), user)
    assert ua.register() == 200
    return ua


def _answer_sdes(offer: str) -> str:
    """bob's phone: answers an SRTP offer in kind (its media port, its key)."""
    assert SDES_OFFER.search(offer), offer
    return sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO)


def _foreign_received(lab: RunningLab, method: str, call_id: str) -> list[str]:
    return [
        line
        for line in lab.log("foreign").splitlines()
        if f"foreign: received {method} " in line and f"call-id={call_id}" in line
    ]


def _local_call_passes(lab: RunningLab) -> None:
    """Two users of the lab's own domain still call each other."""
    alice, carol = UserAgent(lab, "alice"), UserAgent(lab, "carol")
    try:
        assert carol.register() == 200
        assert alice.register() == 200
        answering = carol.answer_in_background(sdp(RtpPeer().port))
        call = alice.call("carol", sdp(RtpPeer().port))
        assert call.reply is not None and call.reply.status == 200, call.reply
        assert call.bye() == 200
        answering.wait()
    finally:
        alice.close()
        carol.close()


@contextmanager
def _calling_out(lab: RunningLab, callee: str) -> Iterator[tuple[Call, Answering]]:
    """alice (a lab user, plain RTP) calls ``callee`` at another domain; bob answers there."""
    alice, bob = UserAgent(lab, "alice"), _foreign_user(lab)
    try:
        assert alice.register() == 200
        answering = bob.answer_in_background(_answer_sdes)
        yield alice.call(callee, sdp(RtpPeer().port)), answering
    finally:
        alice.close()
        bob.close()


def _call_out_passes(lab: RunningLab) -> None:
    with _calling_out(lab, "bob@foreign.test") as (call, answering):
        assert call.reply is not None and call.reply.status == 200, call.reply
        assert call.bye() == 200
        answering.wait()


def test_a_lab_user_calls_a_foreign_user_over_tls_with_srtp(lab: RunningLab):
    alice, bob = UserAgent(lab, "alice"), _foreign_user(lab)
    try:
        assert alice.register() == 200
        answering = bob.answer_in_background(_answer_sdes)
        call = alice.call("bob@foreign.test", sdp(RtpPeer().port))
        assert call.reply is not None and call.reply.status == 200, call.reply
        # alice's plain offer left the SBC as SRTP with an SDES key, over TLS,
        # and the answer came back to her as plain RTP.
        assert answering.invite is not None
        assert SDES_OFFER.search(answering.invite.body), answering.invite.body
        assert PLAIN_AUDIO.search(call.reply.body), call.reply.body
        (invite,) = _foreign_received(lab, "INVITE", call.call_id)
        assert "INVITE sip:bob@foreign.test " in invite and "proto=tls" in invite, invite
        assert call.bye() == 200
        answering.wait()
        # The SBC found the server by DNS: with TLS required, the SRV of
        # _sips._tcp (its answer carries the target's A record).
        dns = lab.log("dns")
        assert "query[SRV] _sips._tcp.foreign.test" in dns, dns[-2000:]
    finally:
        alice.close()
        bob.close()


def test_a_foreign_user_calls_a_lab_user_over_tls_with_srtp(lab: RunningLab):
    # alice's phone talks TLS to the SBC, so SRTP reaches her with SDES keys too.
    alice, bob = UserAgent(lab, "alice", transport="tls"), _foreign_user(lab)
    try:
        assert alice.register() == 200
        answering = alice.answer_in_background(sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
        call = bob.call("alice@sipshield.lab", sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
        assert call.reply is not None and call.reply.status == 200, call.reply
        assert SDES_OFFER.search(call.reply.body), call.reply.body
        assert answering.invite is not None
        assert answering.invite.header("From").startswith("<sip:bob@foreign.test>")
        assert call.bye() == 200
        answering.wait()
    finally:
        alice.close()
        bob.close()


def test_a_foreign_users_plain_rtp_offer_is_refused(lab: RunningLab):
    """SRTP is mandatory for internet calls by default: a plain offer gets 488."""
    bob = _foreign_user(lab)
    alice = UserAgent(lab, "alice", transport="tls")
    try:
        assert alice.register() == 200
        call = bob.call("alice@sipshield.lab", sdp(RtpPeer().port))
        assert call.reply is not None and call.reply.status == 488, call.reply
    finally:
        alice.close()
        bob.close()


def test_a_server_whose_certificate_names_another_domain_is_refused(lab: RunningLab):
    # impostor.test's SRV points at foreign.test's server: its certificate
    # names sip:foreign.test, not impostor.test.
    with _calling_out(lab, "bob@impostor.test") as (call, _):
        assert call.reply is not None and call.reply.status == 408, call.reply
    event = lab.wait_for_event(module="internet", call_id=call.call_id)
    assert event["action"] == "drop", event
    assert event["reason"] == (
        "the server for impostor.test presented a certificate for "
        "['foreign.test', 'sip.foreign.test']"
    ), event
    # The same server, called by the name its certificate proves, is taken.
    _call_out_passes(lab)


def _invite_from_outside(lab: RunningLab, ruri: str, sender: str) -> tuple[int | None, str]:
    call_id = secrets.token_hex(10)
    raw = (
        f"INVITE {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK" + secrets.token_hex(6) + ";rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{sender}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{ruri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:mallory@127.0.0.1:5999>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return lab.send(raw), call_id


def test_the_sbc_is_not_an_open_relay(lab: RunningLab):
    status, call_id = _invite_from_outside(lab, "sip:bob@foreign.test", "mallory@foreign.test")
    assert status == 403
    event = lab.wait_for_event(module="internet", call_id=call_id)
    assert event["action"] == "reject" and "never relayed" in event["reason"], event
    assert not lab.pbx_saw(call_id)
    assert not _foreign_received(lab, "INVITE", call_id)
    # Through the foreign domain's own proxy, over TLS, for yet another domain: refused too.
    bob = _foreign_user(lab)
    try:
        call = bob.call("carol@impostor.test", sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
        assert call.reply is not None and call.reply.status == 403, call.reply
    finally:
        bob.close()
    _local_call_passes(lab)


def test_an_internet_call_in_over_udp_is_refused_when_tls_is_required(lab: RunningLab):
    status, call_id = _invite_from_outside(lab, "sip:alice@sipshield.lab", "mallory@foreign.test")
    assert status == 403
    event = lab.wait_for_event(module="internet", call_id=call_id)
    assert event["reason"] == ("internet call from foreign.test over udp: internet.require_tls"), (
        event
    )
    assert not lab.pbx_saw(call_id)
    # The same domain over TLS, through its proxy, is let in (the calls above).
    _local_call_passes(lab)


def test_a_denied_domain_is_refused_both_ways(lab: RunningLab):
    alice = UserAgent(lab, "alice")
    try:
        assert alice.register() == 200
        call = alice.call("bob@denied.test", sdp(RtpPeer().port))
        assert call.reply is not None and call.reply.status == 403, call.reply
        event = lab.wait_for_event(module="internet", call_id=call.call_id)
        assert "denied.test is denied" in event["reason"], event
    finally:
        alice.close()
    # Someone of the denied domain, through the foreign proxy over TLS.
    mallory = UserAgent(ForeignDomain(lab, "denied.test"), "mallory")
    try:
        offer = sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO)
        call = mallory.call("alice@sipshield.lab", offer)
        assert call.reply is not None and call.reply.status == 403, call.reply
        assert not lab.pbx_saw(call.call_id)
    finally:
        mallory.close()
    _call_out_passes(lab)


def test_internet_off_refuses_both_ways(lab_off: RunningLab):
    lab = lab_off
    alice = UserAgent(lab, "alice")
    try:
        assert alice.register() == 200
        call = alice.call("bob@foreign.test", sdp(RtpPeer().port))
        assert call.reply is not None and call.reply.status == 403, call.reply
        event = lab.wait_for_event(module="internet", call_id=call.call_id)
        assert "internet.mode: off" in event["reason"], event
        assert not _foreign_received(lab, "INVITE", call.call_id)
    finally:
        alice.close()
    bob = _foreign_user(lab)
    try:
        offer = sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO)
        call = bob.call("alice@sipshield.lab", offer)
        assert call.reply is not None and call.reply.status == 403, call.reply
        assert not lab.pbx_saw(call.call_id)
    finally:
        bob.close()
    _local_call_passes(lab)
    # A phone that writes the SBC's address as its From domain is one of ours,
    # not an internet call: the PBX gets its call (and answers 404 for nobody).
    sbc_host = lab.sip_target("udp").rpartition(":")[0]
    status, call_id = _invite_from_outside(lab, "sip:nobody@sipshield.lab", f"carol@{sbc_host}")
    assert status == 404
    assert lab.pbx_saw(call_id)


FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(["5A"] * 32)


def test_without_require_tls_naptr_chooses_tls_and_the_server_is_still_checked(
    lab_naptr: RunningLab,
):
    """RFC 3263 in full: NAPTR (SIPS+D2T only, in the lab's zone), SRV, A; TLS chosen,
    so the server must prove the domain as before."""
    lab = lab_naptr
    alice, bob = UserAgent(lab, "alice"), _foreign_user(lab)
    try:
        assert alice.register() == 200
        # The hop's transport is DNS's choice, unknown when the offer is made:
        # SRTP goes as DTLS-SRTP, which needs no TLS to keep its keys.
        answering = bob.answer_in_background(
            sdp(RtpPeer().port, "UDP/TLS/RTP/SAVP", "127.0.0.1", FINGERPRINT, "a=setup:active")
        )
        call = alice.call("bob@foreign.test", sdp(RtpPeer().port))
        assert call.reply is not None and call.reply.status == 200, call.reply
        assert answering.invite is not None
        assert "UDP/TLS/RTP/SAVP" in answering.invite.body, answering.invite.body
        (invite,) = _foreign_received(lab, "INVITE", call.call_id)
        assert "proto=tls" in invite, invite
        dns = lab.log("dns")
        assert "query[NAPTR] foreign.test" in dns, dns[-2000:]
        assert call.bye() == 200
        answering.wait()
    finally:
        alice.close()
        bob.close()
    with _calling_out(lab, "bob@impostor.test") as (call, _):
        assert call.reply is not None and call.reply.status >= 400, call.reply
    event = lab.wait_for_event(module="internet", call_id=call.call_id)
    assert "presented a certificate for" in event["reason"], event


def test_one_domain_calling_too_often_is_limited_and_others_still_call_in(lab: RunningLab):
    """internet_limits: past 10 initial requests a minute from one domain, 503."""
    spammer = UserAgent(ForeignDomain(lab, "flood.test"), "spammer")
    offer = sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO)
    statuses = []
    try:
        # However the minute's boundary falls, 21 requests put 11 in one window.
        for _ in range(21):
            call = spammer.call("nobody@sipshield.lab", offer)
            assert call.reply is not None
            statuses.append(call.reply.status)
            if call.reply.status == 500:
                break
    finally:
        spammer.close()
    # Those let in reached the PBX, which knows no such user.  The SBC's 503
    # reaches the caller as 500: its proxy must not pass a 503 on (RFC 3261 16.7).
    assert statuses[-1] == 500 and set(statuses[:-1]) == {404}, statuses
    assert len(statuses) <= 11, statuses
    event = lab.wait_for_event(module="internet_limits", call_id=call.call_id)
    assert "internet requests from domain flood.test in 60s (limit 10)" in event["reason"]
    # Another domain, through the same server: still let in.
    alice, bob = UserAgent(lab, "alice", transport="tls"), _foreign_user(lab)
    try:
        assert alice.register() == 200
        answering = alice.answer_in_background(sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
        call = bob.call("alice@sipshield.lab", sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
        assert call.reply is not None and call.reply.status == 200, call.reply
        assert call.bye() == 200
        answering.wait()
    finally:
        alice.close()
        bob.close()
