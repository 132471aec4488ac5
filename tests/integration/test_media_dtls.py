"""DTLS-SRTP for real: a handshake with rtpengine on the outside leg of an anchored call.

The caller is a trunk whose class bridges SRTP (``srtp: bridge``): its leg is
DTLS-SRTP, the PBX side of the call is plain RTP, and the callee (a remote
user, ``srtp: optional``, offered plain RTP) answers plain RTP.  So the only
DTLS in the call is between the trunk's media socket and rtpengine, driven by
:mod:`tests.integration.dtls_peer` on the port the trunk's SDP announced.

rtpengine 10.5 checks the certificate the peer presents in the handshake
against the fingerprint of the peer's SDP (``dtls_verify_cert`` in its
daemon/dtls.c, called from OpenSSL's verify callback).  On a mismatch it logs
"DTLS: Peer certificate rejected - fingerprint mismatch" and "DTLS error: 1
(certificate verify failed)", then drops its side of the handshake *without
sending an alert*, sets up no SRTP keys for the leg and does not try again in
that call.  The peer sees its handshake go unanswered, and media towards it
is dropped by rtpengine (no key to encrypt it with).

Each test calls a different user: a user registered by an earlier test (its
socket since closed) would make the PBX fork the call to the stale contact too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pylibsrtp
import pytest

from sipshield.lab.sip_ua import Call, RtpPeer, UserAgent, media_address, media_port, sdp
from sipshield.rtpengine import RtpengineClient
from tests.integration.dtls_peer import SRTP_PROFILE, DtlsPeer, Identity, fingerprint
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up

pytestmark = pytest.mark.integration

TRUNK_IP = "127.0.0.30"
POLICY = f"""\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
  trunks:
    - {{name: carrier, target: "{TRUNK_IP}:5060", sources: [{TRUNK_IP}/32]}}
media:
  rtpengine: {{ng: ["127.0.0.1:2223"]}}
  users: {{srtp: optional}}
  trunks:
    carrier: {{srtp: bridge}}
"""
FINGERPRINT_LINE = re.compile(r"^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$", re.MULTILINE)
SETUP_LINE = re.compile(r"^a=setup:(\S+)\s*$", re.MULTILINE)
VOICE = bytes(range(160))
SRTP_TAG = 10  # bytes: the 80-bit tag of AES_CM_128_HMAC_SHA1_80
TRUNK_SSRC, CALLEE_SSRC = 0x7A1C, 0xCA11


@pytest.fixture(scope="module")
def dtls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("dtls-lab")
    policy = directory / "policy.yaml"
    policy.write_text(POLICY)
    running = lab_up(policy, directory / "lab")
    yield running
    lab_down(running)


@dataclass
class DtlsCall:
    """An answered call from the trunk (DTLS-SRTP) to a user (plain RTP)."""

    call: Call
    answer: str  # the SDP answer the trunk got
    seen_by_callee: str  # the SDP offer the callee got
    trunk_media: RtpPeer
    callee_media: RtpPeer
    uas: tuple[UserAgent, UserAgent]

    @property
    def to_trunk(self) -> tuple[str, int]:
        """Where the callee's media goes: rtpengine's port on the callee's leg."""
        return media_address(self.seen_by_callee), media_port(self.seen_by_callee)

    @property
    def rtpengine(self) -> tuple[str, int]:
        """rtpengine's DTLS-SRTP port on the trunk's leg."""
        return media_address(self.answer), media_port(self.answer)

    def setup(self) -> str:
        found = SETUP_LINE.search(self.answer)
        assert found, self.answer
        return found.group(1)

    def close(self) -> None:
        assert self.call.bye() == 200
        for sock in (*self.uas, self.trunk_media, self.callee_media):
            sock.close()


def _call(lab: RunningLab, callee: str, offered: Identity, setup: str = "actpass") -> DtlsCall:
    user = UserAgent(lab, callee)
    assert user.register() == 200
    trunk = UserAgent(lab, "alice", ip=TRUNK_IP)
    trunk_media, callee_media = RtpPeer(TRUNK_IP), RtpPeer()
    answering = user.answer_in_background(sdp(callee_media.port))
    offer = sdp(
        trunk_media.port,
        "UDP/TLS/RTP/SAVP",
        TRUNK_IP,
        f"a=fingerprint:sha-256 {offered.fingerprint('sha-256')}",
        f"a=setup:{setup}",
    )
    call = trunk.call(callee, offer)
    seen_by_callee = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    # The only DTLS is on the trunk's leg: the callee is offered plain RTP, no keys.
    assert re.search(r"^m=audio \d+ RTP/AVP ", seen_by_callee, re.MULTILINE), seen_by_callee
    assert "a=fingerprint" not in seen_by_callee and "a=crypto" not in seen_by_callee
    answer = call.reply.body
    assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVP ", answer, re.MULTILINE), answer
    return DtlsCall(call, answer, seen_by_callee, trunk_media, callee_media, (trunk, user))


def _rtpengine_log(lab: RunningLab, call_id: str) -> str:
    """rtpengine's log lines about the trunk's leg (its media ports log as "[Call-ID port N]")."""
    return "".join(
        line for line in lab.log("rtpengine").splitlines(True) if f"[{call_id} port " in line
    )


def _srtp(key: bytes, outbound: bool) -> pylibsrtp.Session:
    ssrc = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(
        policy=pylibsrtp.Policy(
            key=key, ssrc_type=ssrc, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        )
    )


def _rtp(seq: int, ssrc: int) -> bytes:
    header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big")
    return header + ssrc.to_bytes(4, "big") + VOICE


def _latch(call: DtlsCall, trunk_tx: pylibsrtp.Session | None) -> int:
    """Send media while rtpengine learns the sources (it commits 3-4 s in, in 10.5).

    Only the callee sends without ``trunk_tx``.  Returns the next RTP sequence number.
    """
    seq = 0
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        call.callee_media.send(call.to_trunk, 0, 1, payload=_rtp(seq, CALLEE_SSRC))
        if trunk_tx is not None:
            packet = trunk_tx.protect(_rtp(seq, TRUNK_SSRC))
            call.trunk_media.send(call.rtpengine, 0, 1, payload=packet)
        seq += 1
        time.sleep(0.02)
    return seq


@pytest.mark.parametrize(
    ("callee", "offered_setup", "answered_setup"),
    [
        # RFC 5763 section 5 lets the answerer to actpass take either role;
        # towards outside rtpengine takes the server's, so the peer connects
        # (a phone behind NAT can; linphone fails when rtpengine connects).
        ("bob", "actpass", "passive"),
        # A peer that can only be the server gets rtpengine as the client.
        ("dave", "passive", "active"),
    ],
)
def test_dtls_handshake_with_rtpengine_keys_the_srtp_of_the_outside_leg(
    dtls_lab, callee, offered_setup, answered_setup
):
    lab = dtls_lab
    identity = Identity.generate()
    call = _call(lab, callee, identity, offered_setup)
    assert call.setup() == answered_setup, call.answer
    rtpengine_is_client = answered_setup == "active"
    peer = DtlsPeer(call.trunk_media.sock, call.rtpengine, identity, client=not rtpengine_is_client)
    peer.handshake()

    # rtpengine's certificate is the one its SDP answer vouched for, by the hash it named.
    prints = FINGERPRINT_LINE.findall(call.answer)
    assert len(prints) == 1, call.answer
    algorithm, announced = prints[0]
    assert fingerprint(peer.peer_certificate(), algorithm) == announced.upper()
    # It checked our certificate against our offer (before sending its Finished).
    said = _rtpengine_log(lab, call.call.call_id)
    assert "DTLS: Peer certificate accepted" in said, said
    keys = peer.srtp_keys()
    assert keys.profile == SRTP_PROFILE
    # Each side sends with the key of its DTLS role (RFC 5764 section 4.2).
    rtpengine_key, trunk_key = (
        (keys.client, keys.server) if rtpengine_is_client else (keys.server, keys.client)
    )
    trunk_tx = _srtp(trunk_key, outbound=True)
    seq = _latch(call, trunk_tx)
    call.trunk_media.receive(0.2)  # what arrived while latching
    call.callee_media.receive(0.2)
    said = _rtpengine_log(lab, call.call.call_id)
    assert "DTLS-SRTP successfully negotiated using AES_CM_128_HMAC_SHA1_80" in said, said

    # The trunk's SRTP, keyed by the handshake, reaches the callee decrypted.
    trunk_sent = [_rtp(seq + n, TRUNK_SSRC) for n in range(10)]
    for packet in trunk_sent:
        call.trunk_media.send(call.rtpengine, 0, 1, payload=trunk_tx.protect(packet))
    at_callee = call.callee_media.receive()
    assert len([p for p in at_callee if p in trunk_sent]) >= 8, f"{len(at_callee)} arrived"

    # The callee's plain RTP reaches the trunk as SRTP under rtpengine's DTLS-derived key.
    callee_sent = [_rtp(seq + n, CALLEE_SSRC) for n in range(10)]
    for packet in callee_sent:
        call.callee_media.send(call.to_trunk, 0, 1, payload=packet)
    arrived = call.trunk_media.receive()
    assert len(arrived) >= 8, f"{len(arrived)} of 10 SRTP packets reached the trunk"
    trunk_rx = _srtp(rtpengine_key, outbound=False)
    for packet in arrived:
        assert VOICE not in packet, "plaintext payload on the outside leg"
        assert len(packet) == 12 + len(VOICE) + SRTP_TAG, "no 80-bit authentication tag"
        assert trunk_rx.unprotect(packet) in callee_sent
    call.close()


def _packets_from_inside(lab: RunningLab, call_id: str) -> int:
    """RTP packets rtpengine received on the PBX side of the trunk's leg (towards the trunk)."""
    host, _, port = lab.info["rtpengine_ng"].rpartition(":")
    client = RtpengineClient([(host, int(port))], timeout=1.0)
    try:
        tags = client.query(call_id).data["tags"]
    finally:
        client.close()
    medias = [t["medias"][0] for t in tags.values()]  # type: ignore[index,union-attr]
    inside = [m for m in medias if m["protocol"] == "RTP/AVP"]  # type: ignore[index]
    assert len(inside) == 1, medias
    return inside[0]["streams"][0]["stats"]["packets"]  # type: ignore[index,no-any-return]


def test_a_certificate_other_than_the_offered_fingerprint_is_refused(dtls_lab):
    lab = dtls_lab
    offered, presented = Identity.generate(), Identity.generate()
    call = _call(lab, "carol", offered)
    peer = DtlsPeer(
        call.trunk_media.sock, call.rtpengine, presented, client=call.setup() == "passive"
    )

    # rtpengine drops the handshake without an alert: ours goes unanswered.
    with pytest.raises(TimeoutError):
        peer.handshake(timeout=6.0)
    said = _rtpengine_log(lab, call.call.call_id)
    assert "DTLS: Peer certificate rejected - fingerprint mismatch" in said, said
    assert "DTLS-SRTP successfully negotiated" not in said, said

    # No keys on the trunk's leg: the callee's media reaches rtpengine, never the trunk
    # (neither while latching nor after).
    _latch(call, None)
    call.callee_media.send(call.to_trunk, CALLEE_SSRC, 10)
    assert call.trunk_media.receive(1.0) == []
    assert _packets_from_inside(lab, call.call.call_id) >= 10
    call.close()
