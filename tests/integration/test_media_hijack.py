"""Forged teardown and forged answers must not reach a call's media in rtpengine.

The lab anchors media and runs the hijack defences.  The attacker at
127.0.0.9 knows what an on-path observer sees of a call (Call-ID, tags, the
INVITE's Via) but sends from its own address.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from sipshield.lab.sip_ua import RtpPeer, SipMessage, UserAgent, parse, sdp
from sipshield.rtpengine import RtpengineClient
from tests.integration.lab_fixture import RunningLab, lab_with_policy

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.9"
POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: validation}
  - {name: dialog_guard}
  - {name: cancel_guard}
media:
  rtpengine: {ng: ["127.0.0.1:2223"]}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with lab_with_policy(tmp_path_factory.mktemp("media-hijack"), POLICY) as running:
        yield running


def _legs(lab: RunningLab, call_id: str) -> set[str]:
    host, _, port = lab.info["rtpengine_ng"].rpartition(":")
    client = RtpengineClient([(host, int(port))], timeout=1.0)
    try:
        return {c for c in client.list_calls() if c.startswith(call_id)}
    finally:
        client.close()


def _ng_commands(lab: RunningLab, call_id: str, command: str) -> int:
    return len(re.findall(rf"\[{re.escape(call_id)}\]: \[control\] Received command '{command}'",
                          lab.log("rtpengine")))  # fmt: skip


def _send_as_attacker(lab: RunningLab, message: SipMessage) -> SipMessage | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ATTACKER, 0))
    sock.settimeout(2)
    try:
        sock.sendto(message.to_bytes(), lab.sip())
        while True:
            reply = parse(sock.recv(65535))
            if reply.status >= 200:
                return reply
    except TimeoutError:
        return None
    finally:
        sock.close()


def test_a_forged_cancel_is_refused_before_it_frees_the_ringing_calls_media(lab):
    callee = UserAgent(lab, "u1001", ip="127.0.0.81")
    assert callee.register() == 200
    ringing = callee.answer_in_background(sdp(RtpPeer().port), status=180)
    caller = UserAgent(lab, "u1002", ip="127.0.0.82")
    ringing_call = caller.ring("u1001", sdp(RtpPeer().port))
    assert ringing_call.reply is not None and ringing_call.reply.status == 180
    call_id, invite = ringing_call.call_id, ringing_call.invite
    assert invite is not None
    assert _legs(lab, call_id) == {call_id, call_id + "~out"}

    # The INVITE's own Via, From, To, Call-ID and CSeq, from another address.
    refused = _send_as_attacker(lab, caller._cancel(invite))
    assert refused is not None and refused.status == 403
    assert _legs(lab, call_id) == {call_id, call_id + "~out"}, "the forged CANCEL freed media"
    event = lab.wait_for_event(module="cancel_guard", call_id=call_id)
    assert event["src"].startswith(ATTACKER + ":") and event["action"] == "reject"

    # The caller's own CANCEL still ends the call and frees its media.
    caller.send(caller._cancel(invite))
    assert caller._final_of(invite, 5).status == 487
    assert ringing.done.wait(5) and ringing.cancelled
    for ua in (caller, callee):
        ua.close()


def test_a_forged_ack_with_sdp_never_answers_for_a_live_call(lab):
    # The attacker gets a transaction of its own with the victim's Call-ID and
    # From tag (an INVITE the PBX challenges), then ACKs that 407 "in the
    # dialog" with the victim's To tag and an SDP pointing media at itself.
    callee = UserAgent(lab, "u1003", ip="127.0.0.83")
    assert callee.register() == 200
    answering = callee.answer_in_background(sdp(RtpPeer().port))
    caller = UserAgent(lab, "u1004", ip="127.0.0.84")
    call = caller.call("u1003", sdp(RtpPeer().port))
    assert call.reply is not None and call.reply.status == 200, call.reply
    answering.wait()
    answers = _ng_commands(lab, call.call_id, "answer")

    attacker = UserAgent(lab, "u1004", ip=ATTACKER)
    attacker.tag = caller.tag
    ruri = f"sip:u1003@{lab.domain}"
    invite = attacker.request("INVITE", ruri, f"<{ruri}>", call.call_id, sdp(4000, ip=ATTACKER))
    attacker.send(invite)
    assert attacker.response().status == 407
    host, port = lab.sip()
    ack = SipMessage(
        invite.start.replace("INVITE", "ACK", 1),
        [
            ("Via", invite.header("Via")),
            ("Max-Forwards", "70"),
            ("From", invite.header("From")),
            ("To", call.reply.header("To")),
            ("Call-ID", call.call_id),
            ("CSeq", f"{invite.header('CSeq').split()[0]} ACK"),
            ("Route", f"<sip:{host}:{port};lr>"),
            ("Content-Type", "application/sdp"),
        ],
        sdp(4000, ip=ATTACKER),
    )
    attacker.send(ack)
    event = lab.wait_for_event(module="dialog_guard", call_id=call.call_id, method="ACK")
    assert event["src"].startswith(ATTACKER + ":")
    assert "carries no dialog token" in event["reason"]
    assert _ng_commands(lab, call.call_id, "answer") == answers
    assert call.bye() == 200
    for ua in (caller, callee, attacker):
        ua.close()
