"""Media anchoring through the real SBC, PBX and rtpengine: SDP, RTP, SRTP policy, teardown.

Calls are made by :mod:`sipshield.lab.sip_ua` (chosen SDP, the far end's
SDP visible); RTP is sent with plain UDP sockets to the ports rtpengine
announced.  The PBX is a proxy, so a call between two users crosses the SBC
twice: rtpengine holds the legs as ``Call-ID`` and ``Call-ID~out``.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator

import pylibsrtp
import pytest

from sipshield.lab.sip_ua import RtpPeer, UserAgent, media_address, media_port, sdp, talk
from sipshield.rtpengine import RtpengineClient
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up
from tests.support.srtp_suites import WEAK_SUITES

pytestmark = pytest.mark.integration

TRUNK_IP = "127.0.0.30"
INJECTOR_IP = "127.0.0.9"
CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
WEAK_CRYPTO = "a=crypto:1 NULL_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
ZRTP_HASH = "a=zrtp-hash:1.10 " + "ab" * 32
FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(["5A"] * 32)
FINGERPRINT_LINE = re.compile(
    r"^a=fingerprint:sha-(?:1|256|384|512) ((?:[0-9A-F]{2}:)+[0-9A-F]{2})\s*$",
    re.MULTILINE | re.IGNORECASE,
)

POLICY = f"""\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
  trunks:
    - {{name: carrier, target: "{TRUNK_IP}:5060", sources: [{TRUNK_IP}/32]}}
media:
  rtpengine: {{ng: NG}}
  on_failure: ON_FAILURE
  users: {{srtp: USERS_SRTP}}
  trunks:
    carrier: {{srtp: mandatory}}
"""


def _policy(
    tmp_path, users_srtp: str = "optional", on_failure: str = "reject", rtpengines: int = 1
):
    path = tmp_path / f"media-{users_srtp}-{on_failure}-{rtpengines}.yaml"
    # The lab replaces these addresses with its own rtpengines, one per entry.
    ng = str([f"127.0.0.1:{2223 + i}" for i in range(rtpengines)]).replace("'", '"')
    path.write_text(
        POLICY.replace("USERS_SRTP", users_srtp).replace("ON_FAILURE", on_failure).replace("NG", ng)
    )
    return path


@pytest.fixture(scope="module")
def media_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("media-lab")
    running = lab_up(_policy(directory), directory / "lab")
    yield running
    lab_down(running)


def _rtpengine(lab: RunningLab) -> RtpengineClient:
    host, _, port = lab.info["rtpengine_ng"].rpartition(":")
    return RtpengineClient([(host, int(port))], timeout=1.0)


def _legs_left(lab: RunningLab, call_id: str) -> list[str]:
    client = _rtpengine(lab)
    try:
        return [c for c in client.list_calls() if c.startswith(call_id)]
    finally:
        client.close()


def _legs_become(
    lab: RunningLab, call_id: str, expected: set[str], timeout: float = 5.0
) -> set[str]:
    """The call's legs in rtpengine once they are ``expected`` (or at the deadline)."""
    deadline = time.monotonic() + timeout
    while (legs := set(_legs_left(lab, call_id))) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return legs


def _offers(lab: RunningLab) -> int:
    """How many offers the lab's rtpengine has handled (its own ng statistics)."""
    client = _rtpengine(lab)
    try:
        return int(client.statistics()["controlstatistics"]["totaloffercount"])  # type: ignore[index,arg-type]
    finally:
        client.close()


def _in_rtp_range(lab: RunningLab, port: int) -> bool:
    low, high = lab.info["rtp_ports"]
    return low <= port <= high


def _register(lab: RunningLab, user: str, transport: str = "udp", ip: str = "127.0.0.1"):
    ua = UserAgent(lab, user, transport, ip)
    assert ua.register() == 200
    return ua


def test_call_media_is_anchored_flows_resists_injection_and_is_torn_down(media_lab):
    lab = media_lab
    callee = _register(lab, "bob")
    caller = UserAgent(lab, "alice")
    alice_media, bob_media, injector = RtpPeer(), RtpPeer(), RtpPeer(INJECTOR_IP)
    # Alice is behind NAT: her SDP names a private address, her media comes from 127.0.0.1.
    answering = callee.answer_in_background(sdp(bob_media.port))
    call = caller.call("bob", sdp(alice_media.port, ip="10.0.0.5"))
    seen_by_bob = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    seen_by_alice = call.reply.body

    # Both ends see rtpengine, never each other (nor the private address).
    for body in (seen_by_bob, seen_by_alice):
        assert media_address(body) == "127.0.0.1"
        assert _in_rtp_range(lab, media_port(body)), (media_port(body), lab.info["rtp_ports"])
        assert "10.0.0.5" not in body
    assert media_port(seen_by_bob) != alice_media.port
    assert media_port(seen_by_alice) != bob_media.port
    assert set(_legs_left(lab, call.call_id)) == {call.call_id, call.call_id + "~out"}

    # RTP flows both ways through the relay (latched despite the private SDP address).
    to_bob = ("127.0.0.1", media_port(seen_by_alice))
    to_alice = ("127.0.0.1", media_port(seen_by_bob))
    talk((alice_media, to_bob, 0xA11CE), (bob_media, to_alice, 0xB0B))
    assert bob_media.receive(), "no RTP from alice reached bob"
    assert alice_media.receive(), "no RTP from bob reached alice"

    # Injection from a third address to the port alice sends to is not forwarded;
    # alice's own media still is.
    injector.send(to_bob, ssrc=0xBAD, count=20)
    alice_media.send(to_bob, ssrc=0xA11CE, count=5)
    arrived = bob_media.receive()
    ssrcs = {int.from_bytes(p[8:12], "big") for p in arrived}
    assert 0xBAD not in ssrcs
    assert 0xA11CE in ssrcs

    assert call.bye() == 200
    answering.done.wait(5)
    assert _legs_left(lab, call.call_id) == []
    for sock in (alice_media, bob_media, injector, caller, callee):
        sock.close()


def test_failed_call_leaves_no_media_behind(media_lab):
    lab = media_lab
    callee = _register(lab, "carol")
    caller = UserAgent(lab, "dave")
    answering = callee.answer_in_background("", status=486)
    call = caller.call("carol", sdp(RtpPeer().port))
    # Anchored first: the callee was offered rtpengine's port.
    assert _in_rtp_range(lab, media_port(answering.wait().body))
    assert call.reply is not None and call.reply.status == 486
    assert _legs_become(lab, call.call_id, set()) == set()
    caller.close()
    callee.close()


def test_a_forked_call_keeps_the_media_of_the_branch_that_answered(media_lab):
    # The lab PBX is a proxy: a user registered from two devices is called on both
    # at once, each INVITE crossing the SBC with the same Call-ID and From tag.
    # The device that did not answer is CANCELled; that must not free the media
    # of the one that did.
    lab = media_lab
    desk = _register(lab, "u1020", ip="127.0.0.61")
    softphone = _register(lab, "u1020", ip="127.0.0.62")
    caller = UserAgent(lab, "u1021", ip="127.0.0.63")
    caller_media, desk_media = RtpPeer(), RtpPeer()
    answering = desk.answer_in_background(sdp(desk_media.port))
    ringing = softphone.answer_in_background(sdp(RtpPeer().port), status=180)
    call = caller.call("u1020", sdp(caller_media.port))
    assert call.reply is not None and call.reply.status == 200, call.reply
    seen_by_desk = answering.wait().body
    assert ringing.done.wait(5) and ringing.cancelled, "the other device was not CANCELled"
    both = {call.call_id, call.call_id + "~out"}
    assert _legs_become(lab, call.call_id, both) == both

    to_desk = ("127.0.0.1", media_port(call.reply.body))
    to_caller = ("127.0.0.1", media_port(seen_by_desk))
    talk((caller_media, to_desk, 0xCA11), (desk_media, to_caller, 0xDE5C))
    assert desk_media.receive(), "no RTP from the caller reached the device that answered"
    assert caller_media.receive(), "no RTP from the device that answered reached the caller"
    assert call.bye() == 200
    answering.done.wait(5)
    assert _legs_become(lab, call.call_id, set()) == set()
    for ua in (desk, softphone, caller, caller_media, desk_media):
        ua.close()


def test_a_device_that_fails_at_once_leaves_the_ringing_device_its_media(media_lab):
    # A device that registered over TLS and went away: the PBX still forks to
    # it, and the SBC's connection to it is refused at once, while the offer
    # for the live device may still be in rtpengine.  Whatever the timing, the
    # live device's call keeps its media (a race that cost 6 calls in 100;
    # without the fix, this test failed one run in three).
    lab = media_lab
    gone = _register(lab, "u1040", "tls", ip="127.0.0.64")
    gone.close()
    live = _register(lab, "u1040", ip="127.0.0.65")
    caller = UserAgent(lab, "u1041", ip="127.0.0.66")
    calls = set()
    for _ in range(20):
        answering = live.answer_in_background(sdp(RtpPeer().port))
        call = caller.call("u1040", sdp(RtpPeer().port))
        calls.add(call.call_id)
        assert call.reply is not None and call.reply.status == 200, call.reply
        assert _in_rtp_range(lab, media_port(answering.wait().body))
        assert set(_legs_left(lab, call.call_id)) == {call.call_id, call.call_id + "~out"}
        assert call.bye() == 200
        answering.done.wait(5)
    # No answer found its call gone from rtpengine ("media not anchored").
    assert not [e for e in lab.events() if e["module"] == "media" and e["call_id"] in calls]
    for ua in (live, caller):
        ua.close()


def test_unanswered_call_leaves_no_media_behind(media_lab):
    # The callee is registered but says nothing, not even 100 Trying: the SBC's
    # branch to it times out (Kamailio's own 408), so no reply ever shows the
    # media anchoring that the call failed.
    lab = media_lab
    callee = _register(lab, "alice", ip="127.0.0.51")
    caller = UserAgent(lab, "bob", ip="127.0.0.52")
    offers = _offers(lab)
    call = caller.call("alice", sdp(RtpPeer().port), timeout=15)
    assert call.reply is not None and call.reply.status == 408, call.reply
    # Anchored first (both crossings offered), then freed.
    assert _offers(lab) - offers >= 2
    assert _legs_become(lab, call.call_id, set()) == set()
    caller.close()
    callee.close()


def test_zrtp_offer_is_relayed_untouched_end_to_end(make_lab, tmp_path):
    # Even where SRTP is mandatory: ZRTP keys the media end to end.
    lab = make_lab(_policy(tmp_path, users_srtp="mandatory").read_text())
    callee = _register(lab, "bob")
    caller = UserAgent(lab, "alice")
    alice_media, bob_media = RtpPeer(), RtpPeer()
    answering = callee.answer_in_background(sdp(bob_media.port, "RTP/AVP", "127.0.0.1", ZRTP_HASH))
    call = caller.call("bob", sdp(alice_media.port, "RTP/AVP", "127.0.0.1", ZRTP_HASH))
    seen_by_bob = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    for body in (seen_by_bob, call.reply.body):
        assert ZRTP_HASH in body
        assert "m=audio" in body and "RTP/AVP" in body and "a=crypto" not in body
        assert _in_rtp_range(lab, media_port(body))
    # A ZRTP Hello (magic cookie "ZRTP") passes byte for byte, both ways.
    hello = bytes([0x10, 0, 0, 1]) + b"ZRTP" + (0x1234).to_bytes(4, "big") + b"\x50\x5a" * 20
    alice_media.send(("127.0.0.1", media_port(call.reply.body)), 0, 1, payload=hello)
    assert hello in bob_media.receive()
    bob_media.send(("127.0.0.1", media_port(seen_by_bob)), 0, 1, payload=hello)
    assert hello in alice_media.receive()
    assert call.bye() == 200


def test_mandatory_srtp_refuses_plain_offers_and_accepts_srtp(media_lab):
    # The trunk's class is mandatory; remote users next to it are not concerned.
    lab = media_lab
    callee = _register(lab, "bob")
    trunk = UserAgent(lab, "alice", ip=TRUNK_IP)
    refused = trunk.call("bob", sdp(RtpPeer(TRUNK_IP).port))
    assert refused.reply is not None and refused.reply.status == 488
    event = lab.wait_for_event(module="media", action="reject", call_id=refused.call_id)
    assert "plain RTP offer where SRTP is mandatory" in event["reason"]
    weak = trunk.call("bob", sdp(RtpPeer(TRUNK_IP).port, "RTP/SAVP", TRUNK_IP, WEAK_CRYPTO))
    assert weak.reply is not None and weak.reply.status == 488
    assert _legs_left(lab, refused.call_id) == [] and _legs_left(lab, weak.call_id) == []

    answering = callee.answer_in_background(sdp(RtpPeer().port))
    call = trunk.call("bob", sdp(RtpPeer(TRUNK_IP).port, "RTP/SAVP", TRUNK_IP, CRYPTO))
    seen_by_bob = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    # The trunk's answer is SRTP keyed by rtpengine, with an allowed suite.
    suites = re.findall(r"^a=crypto:\d+ (\S+)", call.reply.body, re.MULTILINE)
    assert suites == ["AES_CM_128_HMAC_SHA1_80"], call.reply.body
    # SDES keys never leave over a plain hop: nothing on the UDP legs carries a=crypto.
    assert "a=crypto" not in seen_by_bob
    assert call.bye() == 200
    trunk.close()
    callee.close()


def test_bridge_srtp_outside_and_rtp_towards_the_pbx(make_lab, tmp_path):
    lab = make_lab(_policy(tmp_path, users_srtp="bridge").read_text())
    callee = _register(lab, "bob", "tls")
    caller = UserAgent(lab, "alice", "tls")
    # Bridge needs SRTP from outside: a plain offer is refused.
    plain = UserAgent(lab, "carol")
    refused = plain.call("bob", sdp(RtpPeer().port))
    assert refused.reply is not None and refused.reply.status == 488

    answering = callee.answer_in_background(sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
    call = caller.call("bob", sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
    seen_by_bob = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    # The callee (over TLS) is offered SDES, strong suites only.
    assert re.search(r"^m=audio \d+ RTP/SAVP ", seen_by_bob, re.MULTILINE), seen_by_bob
    offered = re.findall(r"^a=crypto:\d+ (\S+)", seen_by_bob, re.MULTILINE)
    assert offered and not set(offered) & set(WEAK_SUITES), offered
    # The PBX side of both legs is plain RTP.
    client = _rtpengine(lab)
    for key in (call.call_id, call.call_id + "~out"):
        tags = client.query(key).data["tags"]
        protocols = {t["medias"][0]["protocol"] for t in tags.values()}  # type: ignore[index,union-attr]
        assert protocols == {"RTP/SAVP", "RTP/AVP"}, (key, protocols)
    client.close()
    assert call.bye() == 200
    for ua in (caller, callee, plain):
        ua.close()


def test_dead_rtpengine_fails_per_policy_and_kamailio_keeps_serving(make_lab, tmp_path):
    lab = make_lab(_policy(tmp_path, on_failure="passthrough").read_text())
    callee = _register(lab, "bob")
    os.killpg(lab.info["pids"]["rtpengine"], signal.SIGKILL)
    # Where SRTP is mandatory (the trunk), never unprotected: 503.
    trunk = UserAgent(lab, "alice", ip=TRUNK_IP)
    refused = trunk.call("bob", sdp(RtpPeer(TRUNK_IP).port, "RTP/SAVP", TRUNK_IP, CRYPTO))
    assert refused.reply is not None and refused.reply.status == 503
    event = lab.wait_for_event(module="media", action="reject", call_id=refused.call_id)
    assert "cannot be anchored" in event["reason"]
    # Elsewhere on_failure: passthrough lets the call go on, unanchored, with an event.
    media = RtpPeer()
    answering = callee.answer_in_background(sdp(RtpPeer().port))
    call = UserAgent(lab, "carol").call("bob", sdp(media.port))
    assert call.reply is not None and call.reply.status == 200, call.reply
    assert media_port(answering.wait().body) == media.port
    lab.wait_for_event(module="media", action="passthrough", call_id=call.call_id)
    assert lab.options() == 200


def _sdes_key(body: str) -> tuple[str, bytes]:
    """The first a=crypto line's suite and master key+salt."""
    match = re.search(r"^a=crypto:\d+ (\S+) inline:([A-Za-z0-9+/=]+)", body, re.MULTILINE)
    assert match, body
    return match.group(1), base64.b64decode(match.group(2))


def _srtp_session(key: bytes, outbound: bool) -> pylibsrtp.Session:
    ssrc = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(
        policy=pylibsrtp.Policy(
            key=key, ssrc_type=ssrc, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        )
    )


def _rtp(seq: int, ssrc: int, payload: bytes) -> bytes:
    return (
        bytes([0x80, 0])
        + seq.to_bytes(2, "big")
        + (seq * 160).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


def test_sdes_call_outside_leg_is_srtp_that_decrypts_with_the_negotiated_key(make_lab, tmp_path):
    lab = make_lab(_policy(tmp_path, users_srtp="mandatory").read_text())
    callee = _register(lab, "bob", "tls")
    caller = UserAgent(lab, "alice", "tls")
    alice_media, bob_media = RtpPeer(), RtpPeer()
    # Plain RTP from outside where SRTP is mandatory: refused.
    refused = caller.call("bob", sdp(alice_media.port))
    assert refused.reply is not None and refused.reply.status == 488

    bob_key = secrets.token_bytes(30)
    bob_crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bob_key).decode()
    answering = callee.answer_in_background(
        sdp(bob_media.port, "RTP/SAVP", "127.0.0.1", bob_crypto)
    )
    call = caller.call("bob", sdp(alice_media.port, "RTP/SAVP", "127.0.0.1", CRYPTO, WEAK_CRYPTO))
    seen_by_bob = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    # No NULL or weak suite is ever offered or answered, whatever the caller offered.
    for body in (seen_by_bob, call.reply.body):
        suites = re.findall(r"^a=crypto:\d+ (\S+)", body, re.MULTILINE)
        assert suites and not set(suites) & set(WEAK_SUITES), body
        assert re.search(r"^m=audio \d+ RTP/SAVP ", body, re.MULTILINE), body
    # SDES on the outside ends; the plain hop to the PBX carries DTLS-SRTP, never a=crypto.
    client = _rtpengine(lab)
    for key in (call.call_id, call.call_id + "~out"):
        tags = client.query(key).data["tags"]
        protocols = {t["medias"][0]["protocol"] for t in tags.values()}  # type: ignore[index,union-attr]
        assert protocols == {"RTP/SAVP", "UDP/TLS/RTP/SAVP"}, (key, protocols)
    client.close()
    suite, alice_rx_key = _sdes_key(call.reply.body)
    assert suite == "AES_CM_128_HMAC_SHA1_80"
    assert alice_rx_key != bob_key and alice_rx_key != base64.b64decode(CRYPTO.split(":")[-1])

    # Both ends send SRTP with their own keys; rtpengine latches onto them.
    alice_tx = _srtp_session(base64.b64decode(CRYPTO.split("inline:")[1]), outbound=True)
    bob_tx = _srtp_session(bob_key, outbound=True)
    to_bob = ("127.0.0.1", media_port(call.reply.body))
    to_alice = ("127.0.0.1", media_port(seen_by_bob))
    voice = bytes(range(160))
    seq = 0
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        alice_media.send(to_bob, 0, 1, payload=alice_tx.protect(_rtp(seq, 0xA11CE, voice)))
        bob_media.send(to_alice, 0, 1, payload=bob_tx.protect(_rtp(seq, 0xB0B, voice)))
        seq += 1
        time.sleep(0.02)
    alice_media.receive(0.2)  # what arrived while latching
    sent = [_rtp(seq + n, 0xB0B, voice) for n in range(10)]
    for packet in sent:
        bob_media.send(to_alice, 0, 1, payload=bob_tx.protect(packet))
    arrived = alice_media.receive()
    assert len(arrived) >= 8, f"{len(arrived)} of 10 SRTP packets reached alice"
    alice_rx = _srtp_session(alice_rx_key, outbound=False)
    for packet in arrived:
        assert voice not in packet, "plaintext payload on the outside leg"
        assert len(packet) == 12 + len(voice) + 10, "no 80-bit authentication tag"
        assert alice_rx.unprotect(packet) in sent
    assert call.bye() == 200
    for ua in (caller, callee, alice_media, bob_media):
        ua.close()


def test_dtls_offer_gets_a_dtls_answer_with_fingerprint_and_setup(media_lab):
    lab = media_lab
    callee = _register(lab, "bob")
    caller = UserAgent(lab, "alice")
    offer = sdp(RtpPeer().port, "UDP/TLS/RTP/SAVP", "127.0.0.1", FINGERPRINT, "a=setup:actpass")
    answering = callee.answer_in_background(
        sdp(RtpPeer().port, "UDP/TLS/RTP/SAVP", "127.0.0.1", FINGERPRINT, "a=setup:active")
    )
    call = caller.call("bob", offer)
    seen_by_bob = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    answer = call.reply.body
    # An answer to an actpass offer takes a role; the fingerprint is rtpengine's own.
    assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVP ", answer, re.MULTILINE), answer
    assert re.search(r"^a=setup:(active|passive)\s*$", answer, re.MULTILINE), answer
    prints = FINGERPRINT_LINE.findall(answer)
    assert prints and FINGERPRINT.split()[-1] not in prints, answer
    assert "a=crypto" not in answer
    # The callee gets a valid DTLS offer too, keyed by rtpengine.
    assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVP ", seen_by_bob, re.MULTILINE), seen_by_bob
    assert re.search(r"^a=setup:actpass\s*$", seen_by_bob, re.MULTILINE), seen_by_bob
    assert FINGERPRINT_LINE.findall(seen_by_bob), seen_by_bob
    assert call.bye() == 200
    caller.close()
    callee.close()


def test_cancelled_call_leaves_no_media_behind(media_lab):
    lab = media_lab
    callee = _register(lab, "carol")
    caller = UserAgent(lab, "dave")
    answering = callee.answer_in_background("", status=180)
    call = caller.call("carol", sdp(RtpPeer().port), cancel_on_ringing=True)
    answering.done.wait(10)
    assert answering.cancelled, answering.error
    assert call.reply is not None and call.reply.status == 487, call.reply
    # Anchored first: the callee was offered rtpengine's port.
    assert _in_rtp_range(lab, media_port(answering.wait().body))
    assert _legs_become(lab, call.call_id, set()) == set()
    caller.close()
    callee.close()


def test_dead_rtpengine_second_instance_takes_new_calls_then_503(make_lab, tmp_path):
    lab = make_lab(_policy(tmp_path, rtpengines=2).read_text())
    first, survivor = lab.info["rtpengines"]
    assert first["ng"] != survivor["ng"]
    callee = _register(lab, "bob")
    os.killpg(lab.info["pids"][first["name"]], signal.SIGKILL)
    host, _, port = survivor["ng"].rpartition(":")
    survivor_client = RtpengineClient([(host, int(port))], timeout=1.0)
    low, high = survivor["rtp_ports"]
    # Several Call-IDs: rendezvous hashing sends about half of them to the dead one first.
    for user in ("alice", "carol", "dave"):
        answering = callee.answer_in_background(sdp(RtpPeer().port))
        call = UserAgent(lab, user).call("bob", sdp(RtpPeer().port))
        seen_by_bob = answering.wait().body
        assert call.reply is not None and call.reply.status == 200, (user, call.reply)
        assert low <= media_port(seen_by_bob) <= high
        assert low <= media_port(call.reply.body) <= high
        assert call.call_id in survivor_client.list_calls()
        assert call.bye() == 200
        answering.done.wait(5)
    # No rtpengine left: a clean 503 and an event, and Kamailio keeps serving.
    os.killpg(lab.info["pids"][survivor["name"]], signal.SIGKILL)
    refused = UserAgent(lab, "alice").call("bob", sdp(RtpPeer().port))
    assert refused.reply is not None and refused.reply.status == 503, refused.reply
    event = lab.wait_for_event(module="media", action="reject", call_id=refused.call_id)
    assert "cannot be anchored" in event["reason"]
    assert lab.options() == 200
    survivor_client.close()
    callee.close()


def _audio_video(port: int, ip: str, video_port: int) -> str:
    lines = [
        "v=0",
        f"o=- {secrets.randbelow(10**9)} 1 IN IP4 {ip}",
        "s=-",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 96 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
        f"m=video {video_port} RTP/AVP 97",
        "a=rtpmap:97 H264/90000",
    ]
    return "\r\n".join(lines) + "\r\n"


def test_trunk_gets_no_video_and_only_its_allowed_codecs(make_lab, tmp_path):
    policy = _policy(tmp_path).read_text()
    policy = policy.replace(
        "carrier: {srtp: mandatory}",
        "carrier: {srtp: optional, media_types: [audio], codecs: [PCMU, telephone-event]}",
    )
    lab = make_lab(policy)
    callee = _register(lab, "bob")
    trunk = UserAgent(lab, "alice", ip=TRUNK_IP)
    # Nothing the trunk may use: refused.
    video_only = sdp(RtpPeer(TRUNK_IP).port).replace("m=audio", "m=video")
    refused = trunk.call("bob", video_only)
    assert refused.reply is not None and refused.reply.status == 488, refused.reply
    event = lab.wait_for_event(module="media", action="reject", call_id=refused.call_id)
    assert "media type not allowed" in event["reason"]

    answering = callee.answer_in_background(_audio_video(RtpPeer().port, "127.0.0.1", 0))
    call = trunk.call("bob", _audio_video(RtpPeer(TRUNK_IP).port, TRUNK_IP, 5004))
    seen_by_bob = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    # The PBX side sees the video section rejected and only PCMU and DTMF offered.
    assert re.search(r"^m=video 0 ", seen_by_bob, re.MULTILINE), seen_by_bob
    audio = re.search(r"^m=audio \d+ RTP/AVP ([\d ]+?)\r?$", seen_by_bob, re.MULTILINE)
    assert audio is not None and audio.group(1).split() == ["0", "101"], seen_by_bob
    for codec in ("PCMA", "opus", "H264"):
        assert f" {codec}/" not in seen_by_bob, seen_by_bob
    assert re.search(r"^m=video 0 ", call.reply.body, re.MULTILINE), call.reply.body
    assert call.bye() == 200
    trunk.close()
    callee.close()


def test_users_behind_nat_register_are_called_and_reached_in_dialog(media_lab):
    # Both users' Contacts name a private address; their packets come from 127.0.0.1.
    lab = media_lab
    callee = UserAgent(lab, "carol", contact_ip="10.0.0.6")
    assert callee.register() == 200
    caller = UserAgent(lab, "dave", contact_ip="10.0.0.5")
    # Called through the Path's received address; the caller's BYE reaches the
    # callee at its source (the alias added to its 200's Contact).
    answering = callee.answer_in_background(sdp(RtpPeer().port))
    call = caller.call("carol", sdp(RtpPeer().port, ip="10.0.0.5"))
    assert call.reply is not None and call.reply.status == 200, call.reply
    assert ";alias=" in call.reply.header("Contact"), call.reply.header("Contact")
    assert call.bye() == 200
    answering.done.wait(5)
    # The callee hangs up: its BYE reaches the caller at its source too.
    answering = callee.answer_in_background(sdp(RtpPeer().port))
    call = caller.call("carol", sdp(RtpPeer().port, ip="10.0.0.5"))
    assert call.reply is not None and call.reply.status == 200, call.reply
    invite = answering.wait()
    assert ";alias=" in invite.header("Contact"), invite.header("Contact")
    callee.send(answering.bye())
    bye = caller.receive()
    assert bye.method == "BYE" and bye.header("Call-ID") == call.call_id, bye.start
    assert "10.0.0.5" in bye.start and ";alias=" not in bye.start
    for ua in (caller, callee):
        ua.close()


def test_sdes_call_between_two_tls_users_where_srtp_is_optional(media_lab):
    # The example policy (users: srtp optional).  The call crosses the PBX on a
    # plain hop as DTLS-SRTP; the callee over TLS must get an SDES offer, not
    # that DTLS profile with a=crypto added (baresip and linphone answer 488).
    lab = media_lab
    callee = _register(lab, "u1034", "tls", ip="127.0.0.75")
    caller = UserAgent(lab, "u1035", "tls", ip="127.0.0.76")
    bob_crypto = (
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
        + base64.b64encode(secrets.token_bytes(30)).decode()
    )
    answering = callee.answer_in_background(
        sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", bob_crypto)
    )
    call = caller.call("u1034", sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
    offer = answering.wait().body
    assert re.search(r"^m=audio \d+ RTP/SAVP ", offer, re.MULTILINE), offer
    assert re.findall(r"^a=crypto:\d+ (\S+)", offer, re.MULTILINE) == [
        "AEAD_AES_256_GCM",
        "AEAD_AES_128_GCM",
        "AES_256_CM_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_80",
    ], offer
    # Keys are padded base64 (RFC 4648): 46 bytes of AES_256_CM key and salt.
    key = re.search(r"AES_256_CM_HMAC_SHA1_80 inline:([^|\s]+)", offer).group(1)  # type: ignore[union-attr]
    assert key.endswith("==") and len(base64.b64decode(key)) == 46
    assert call.reply is not None and call.reply.status == 200, call.reply
    assert re.search(r"^m=audio \d+ RTP/SAVP ", call.reply.body, re.MULTILINE)
    client = _rtpengine(lab)
    for key in (call.call_id, call.call_id + "~out"):
        tags = client.query(key).data["tags"]
        protocols = {t["medias"][0]["protocol"] for t in tags.values()}  # type: ignore[index,union-attr]
        assert protocols == {"RTP/SAVP", "UDP/TLS/RTP/SAVP"}, (key, protocols)
    client.close()
    assert call.bye() == 200
    for ua in (callee, caller):
        ua.close()
