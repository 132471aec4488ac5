"""SDP inside multipart bodies (SIP-I/SIP-T: SDP + ISUP) through the real SBC, PBX and rtpengine.

A multipart body is anchored like a single SDP: the media policy judges its
SDP part, rtpengine rewrites it, and every other part (a binary ISUP message,
NUL bytes included) reaches the far end byte for byte.  A multipart body whose
SDP cannot be located safely is refused, never relayed unanchored.

``sip_ua`` speaks ``application/sdp`` only and reads bodies as text, so the
multipart messages here are built and read as bytes on the user agents' sockets.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sipshield.lab.sip_ua import (
    Call,
    RtpPeer,
    SipMessage,
    UserAgent,
    media_address,
    media_port,
    parse,
    sdp,
)
from sipshield.rtpengine import RtpengineClient
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up

pytestmark = pytest.mark.integration

BOUNDARY = "sip-i-7f3a"
MULTIPART = f'multipart/mixed;boundary="{BOUNDARY}"'
# ISUP messages as SIP-I carries them: binary, with NUL bytes and bytes that are not UTF-8.
ISUP_IAM = bytes.fromhex("0100200a0002000a0883908908200153ff0f000a07031306543210")
ISUP_ANM = bytes.fromhex("090100c0ff00")
ISUP_HEADERS = (
    b"Content-Type: application/ISUP;version=itu-t92+;base=itu-t92+\r\n"
    b"Content-Disposition: signal;handling=optional\r\n"
)
SDP_HEADERS = b"Content-Type: application/sdp\r\n"
CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(["5A"] * 32)

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
media:
  rtpengine: {ng: ["127.0.0.1:2223"]}
  users: {srtp: USERS_SRTP}
"""


@dataclass(frozen=True)
class Multipart:
    """A multipart/mixed body as bytes: ``head`` + SDP + ``tail``."""

    head: bytes
    sdp: bytes
    tail: bytes

    @property
    def body(self) -> bytes:
        return self.head + self.sdp + self.tail

    def sdp_of(self, received: bytes) -> str:
        """The SDP in ``received``, asserting every byte around it arrived unchanged."""
        assert received.startswith(self.head), received
        assert received.endswith(self.tail), received
        return received[len(self.head) : len(received) - len(self.tail)].decode()


def sdp_then_isup(offer: str, isup: bytes = ISUP_IAM) -> Multipart:
    delimiter = f"--{BOUNDARY}\r\n".encode()
    return Multipart(
        b"preamble, ignored\r\n" + delimiter + SDP_HEADERS + b"\r\n",
        offer.encode(),
        b"\r\n" + delimiter + ISUP_HEADERS + b"\r\n" + isup + f"\r\n--{BOUNDARY}--\r\n".encode(),
    )


def isup_then_sdp(answer: str, isup: bytes = ISUP_ANM) -> Multipart:
    delimiter = f"--{BOUNDARY}\r\n".encode()
    return Multipart(
        delimiter + ISUP_HEADERS + b"\r\n" + isup + b"\r\n" + delimiter + SDP_HEADERS + b"\r\n",
        answer.encode(),
        f"\r\n--{BOUNDARY}--\r\n".encode(),
    )


def wire(message: SipMessage, content_type: str, body: bytes) -> bytes:
    """``message`` with a body of any type, as bytes (sip_ua sends application/sdp only)."""
    lines = [message.start] + [
        f"{k}: {v}"
        for k, v in message.headers
        if k.lower() not in ("content-length", "content-type")
    ]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def raw_body(data: bytes) -> bytes:
    """The body of a received message, whose Content-Length must still be right."""
    body = data.partition(b"\r\n\r\n")[2]
    assert int(parse(data).header("Content-Length")) == len(body), data
    return body


def receive_raw(ua: UserAgent, timeout: float = 5.0) -> bytes:
    ua.sock.settimeout(timeout)
    while True:
        data = ua.sock.recv(65535)
        if data.strip():
            return data


def final_response(ua: UserAgent, timeout: float = 10.0) -> bytes:
    while True:
        data = receive_raw(ua, timeout)
        if parse(data).status >= 200:
            return data


def invite(caller: UserAgent, callee: str, content_type: str, body: bytes) -> tuple[Call, bytes]:
    """INVITE ``callee`` with any body, answering the PBX's 407; the call and its final response."""
    ruri = f"sip:{callee}@{caller.lab.domain}"
    call = Call(caller, secrets.token_hex(10), ruri)
    request = caller.request("INVITE", ruri, f"<{ruri}>", call.call_id)
    caller.sock.sendto(wire(request, content_type, body), caller.sbc)
    data = final_response(caller)
    challenge = parse(data)
    if challenge.status == 407:
        caller._ack_failure(request, challenge)
        caller.cseq += 1
        auth = caller._credentials(challenge.header("Proxy-Authenticate"), "INVITE", ruri)
        request = caller.request(
            "INVITE", ruri, f"<{ruri}>", call.call_id, extra=[("Proxy-Authorization", auth)]
        )
        caller.sock.sendto(wire(request, content_type, body), caller.sbc)
        data = final_response(caller)
    reply = parse(data)
    call.invite, call.reply = request, reply
    if reply.status >= 300:
        caller._ack_failure(request, reply)
    elif reply.status == 200:
        call.ack()
    return call, data


@dataclass
class RawCallee:
    """Answers one INVITE on ``ua`` with a body of any type; keeps the INVITE as bytes."""

    ua: UserAgent
    content_type: str
    answer: bytes
    invite: bytes = b""
    done: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _reply(self, request: SipMessage, status: str, content_type: str, body: bytes) -> None:
        headers = [(k, v) for k, v in request.headers if k.lower() in ("via", "record-route")]
        to = request.header("To")
        headers += [
            ("From", request.header("From")),
            ("To", to if ";tag=" in to else f"{to};tag={self.ua.tag}"),
            ("Call-ID", request.header("Call-ID")),
            ("CSeq", request.header("CSeq")),
            ("Contact", self.ua.contact),
        ]
        self.ua.sock.sendto(wire(SipMessage(status, headers), content_type, body), self.ua.sbc)

    def _run(self) -> None:
        try:
            while True:
                data = receive_raw(self.ua, timeout=15)
                request = parse(data)
                if request.status:
                    continue
                if request.method == "INVITE":
                    self.invite = data
                    self._reply(request, "SIP/2.0 200 OK", self.content_type, self.answer)
                    self.answered.set()
                elif request.method == "BYE":
                    self._reply(request, "SIP/2.0 200 OK", "", b"")
                    return
        except OSError:
            pass
        finally:
            self.answered.set()
            self.done.set()

    def wait(self) -> bytes:
        self.answered.wait(20)
        assert self.invite, "the callee got no INVITE"
        return self.invite


def _policy(directory, users_srtp: str):
    path = directory / f"multipart-{users_srtp}.yaml"
    path.write_text(POLICY.replace("USERS_SRTP", users_srtp))
    return path


@pytest.fixture(scope="module")
def optional_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("multipart-lab")
    running = lab_up(_policy(directory, "optional"), directory / "lab")
    yield running
    lab_down(running)


def _register(lab: RunningLab, user: str) -> UserAgent:
    ua = UserAgent(lab, user)
    assert ua.register() == 200
    return ua


def _in_rtp_range(lab: RunningLab, port: int) -> bool:
    low, high = lab.info["rtp_ports"]
    return low <= port <= high


def _legs_left(lab: RunningLab, call_id: str) -> list[str]:
    host, _, port = lab.info["rtpengine_ng"].rpartition(":")
    client = RtpengineClient([(host, int(port))], timeout=1.0)
    try:
        return [c for c in client.list_calls() if c.startswith(call_id)]
    finally:
        client.close()


def _assert_anchored(lab: RunningLab, sdp_text: str, not_port: int) -> None:
    assert media_address(sdp_text) == "127.0.0.1", sdp_text
    assert _in_rtp_range(lab, media_port(sdp_text)), (sdp_text, lab.info["rtp_ports"])
    assert media_port(sdp_text) != not_port


def test_multipart_offer_and_answer_are_anchored_and_other_parts_kept_byte_for_byte(
    optional_lab,
):
    lab = optional_lab
    alice_media, bob_media = RtpPeer(), RtpPeer()
    offer = sdp_then_isup(sdp(alice_media.port))
    answer = isup_then_sdp(sdp(bob_media.port))
    bob = _register(lab, "bob")
    callee = RawCallee(bob, MULTIPART, answer.body)
    alice = UserAgent(lab, "alice")
    call, ok = invite(alice, "bob", MULTIPART, offer.body)
    assert call.reply is not None and call.reply.status == 200, ok
    received = callee.wait()

    # The callee gets the caller's multipart body: same type and boundary, the ISUP
    # part (and preamble, delimiters, epilogue) byte for byte, the SDP rtpengine's.
    assert parse(received).header("Content-Type") == MULTIPART
    _assert_anchored(lab, offer.sdp_of(raw_body(received)), alice_media.port)
    # The caller's 200 OK: the same for the answer, whose SDP part comes second.
    assert call.reply.header("Content-Type") == MULTIPART
    _assert_anchored(lab, answer.sdp_of(raw_body(ok)), bob_media.port)
    assert set(_legs_left(lab, call.call_id)) == {call.call_id, call.call_id + "~out"}

    assert call.bye() == 200
    callee.done.wait(5)
    assert _legs_left(lab, call.call_id) == []
    for sock in (alice, bob, alice_media, bob_media):
        sock.close()


def test_multipart_plain_offer_is_refused_where_srtp_is_mandatory(make_lab, tmp_path):
    lab = make_lab(_policy(tmp_path, "mandatory").read_text())
    bob = _register(lab, "bob")
    alice = UserAgent(lab, "alice")
    # Plain RTP in a single SDP and in a multipart body: the same 488.
    single = alice.call("bob", sdp(RtpPeer().port))
    assert single.reply is not None and single.reply.status == 488, single.reply
    refused, data = invite(alice, "bob", MULTIPART, sdp_then_isup(sdp(RtpPeer().port)).body)
    assert refused.reply is not None and refused.reply.status == 488, data
    event = lab.wait_for_event(module="media", action="reject", call_id=refused.call_id)
    assert "plain RTP offer where SRTP is mandatory" in event["reason"]
    assert not lab.pbx_saw(refused.call_id)
    assert _legs_left(lab, refused.call_id) == []

    # An SRTP (DTLS) offer in a multipart body is anchored and connects.
    dtls = ("UDP/TLS/RTP/SAVP", "127.0.0.1", FINGERPRINT)
    offer = sdp_then_isup(sdp(RtpPeer().port, *dtls, "a=setup:actpass"))
    answer = sdp_then_isup(sdp(RtpPeer().port, *dtls, "a=setup:active"), ISUP_ANM)
    callee = RawCallee(bob, MULTIPART, answer.body)
    call, ok = invite(alice, "bob", MULTIPART, offer.body)
    assert call.reply is not None and call.reply.status == 200, ok
    seen_by_bob = offer.sdp_of(raw_body(callee.wait()))
    seen_by_alice = answer.sdp_of(raw_body(ok))
    for body in (seen_by_bob, seen_by_alice):
        assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVP ", body, re.MULTILINE), body
        assert _in_rtp_range(lab, media_port(body))
    assert call.bye() == 200
    callee.done.wait(5)
    assert _legs_left(lab, call.call_id) == []
    for ua in (alice, bob):
        ua.close()


def test_multipart_whose_sdp_cannot_be_located_is_refused_and_one_without_sdp_passes(
    optional_lab,
):
    lab = optional_lab
    alice = UserAgent(lab, "alice")
    offer = sdp_then_isup(sdp(RtpPeer().port))
    unterminated = offer.body[: offer.body.rindex(b"--" + BOUNDARY.encode())]
    two_sdps = offer.head + offer.sdp + b"\r\n" + offer.head.split(b"\r\n", 1)[1] + offer.sdp
    two_sdps += offer.tail
    for body, content_type, code, why in (
        (unterminated, MULTIPART, 400, "no closing delimiter"),
        (offer.body, "multipart/mixed", 400, "no boundary"),
        (two_sdps, MULTIPART, 415, "more than one SDP part"),
    ):
        refused, data = invite(alice, "bob", content_type, body)
        assert refused.reply is not None and refused.reply.status == code, data
        event = lab.wait_for_event(module="media", action="reject", call_id=refused.call_id)
        assert why in event["reason"], event
        assert not lab.pbx_saw(refused.call_id)

    # ISUP alone in a multipart body: no SDP to anchor, relayed (the PBX asks for credentials).
    delimiter = f"--{BOUNDARY}\r\n".encode()
    isup_only = delimiter + ISUP_HEADERS + b"\r\n" + ISUP_IAM + f"\r\n--{BOUNDARY}--\r\n".encode()
    ruri = f"sip:bob@{lab.domain}"
    request = alice.request("INVITE", ruri, f"<{ruri}>", secrets.token_hex(8))
    alice.sock.sendto(wire(request, MULTIPART, isup_only), alice.sbc)
    reply = parse(final_response(alice))
    assert reply.status == 407, reply.start
    alice._ack_failure(request, reply)
    alice.close()


def test_sdes_keys_in_a_multipart_body_are_stripped_or_refused_on_a_plain_hop(make_lab):
    policy = """\
        domain: sipshield.lab
        peers:
          pbx: {address: 127.0.0.1:5090}
        modules:
          - {name: sdes_guard, on_plain_hop: strip}
        """
    lab = make_lab(policy)
    bob = _register(lab, "bob")
    alice = UserAgent(lab, "alice")
    # SDES with DTLS-SRTP beside it: the keys are stripped, the ISUP part is untouched.
    offer = sdp_then_isup(sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO, FINGERPRINT))
    callee = RawCallee(bob, MULTIPART, isup_then_sdp(sdp(RtpPeer().port)).body)
    call, ok = invite(alice, "bob", MULTIPART, offer.body)
    assert call.reply is not None and call.reply.status == 200, ok
    seen_by_bob = offer.sdp_of(raw_body(callee.wait()))
    assert "a=crypto" not in seen_by_bob and FINGERPRINT in seen_by_bob, seen_by_bob
    event = lab.wait_for_event(module="sdes_guard", action="strip", call_id=call.call_id)
    assert "stripped" in event["reason"]
    assert call.bye() == 200
    callee.done.wait(5)
    # SDES alone (nothing to fall back on): refused, as for a single SDP.
    sdes_only = sdp_then_isup(sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
    refused, data = invite(alice, "bob", MULTIPART, sdes_only.body)
    assert refused.reply is not None and refused.reply.status == 488, data
    assert not lab.pbx_saw(refused.call_id)
    for ua in (alice, bob):
        ua.close()
