"""Real softphones nobody here wrote, calling each other through the real lab.

baresip 1.0 and linphonec 5.1 (Debian) register through the SBC to the lab
PBX, answer its digest challenges (401 and 407), use the SBC as their
outbound proxy (a preloaded Route on every request) and, for linphone, the
GRUU the PBX grants as their Contact.  For each call the test checks that:

- both phones report the call established (and ended when hung up);
- media flows both ways through rtpengine, on every leg (rtpengine's counters);
- each leg uses the profile the media policy promises (docs/media-offers.md);
- encrypted media is ciphertext on the wire and plain media is audio
  (tests.integration.wire judges the captured bytes, with no key);
- no security event at all is logged while the legitimate phones work.

A call between two users crosses the SBC twice (the PBX is a proxy), so it
has four media flows: two between a phone and rtpengine ("outside"), and two
between rtpengine's legs towards the PBX ("inside").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sipshield.lab.stack import LAB_NUMBERED_USERS
from sipshield.rtpengine import RtpengineClient
from tests.conftest import REPO
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up
from tests.integration.softphones import PHONE_RTP_PORTS, Baresip, Linphone
from tests.integration.wire import (
    Capture,
    capture_udp,
    is_audio,
    is_ciphertext,
    rtp_payloads,
    share,
    wait_until,
)

pytestmark = pytest.mark.integration

EXAMPLE_POLICY = REPO / "kamailio-cfg" / "policy.example.yaml"
PHONES = {"baresip": Baresip, "linphone": Linphone}
SRTP = {"RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"}
# 2 s of 20 ms packets: media that flows, not a stray packet.
FLOWING = 100
# The share of a phone's decoded audio that is the other phone's 440 Hz tone
# (noise from a wrong key scores near 0).
HEARD = 0.5
# Every lab user registers from one phone only: the registration guard
# rightly reports an account that moves to another user agent.
_USERS = itertools.cycle(LAB_NUMBERED_USERS)


def _lab_with(
    tmp_path_factory: pytest.TempPathFactory, srtp: str | None, hiding: bool = False
) -> RunningLab:
    directory = tmp_path_factory.mktemp(f"phones-{srtp or 'example'}{'-hidden' if hiding else ''}")
    policy = directory / "policy.yaml"
    data = yaml.safe_load(EXAMPLE_POLICY.read_text())
    if srtp is not None:
        data["media"]["users"]["srtp"] = srtp
    data["topology_hiding"]["enabled"] = hiding
    policy.write_text(yaml.safe_dump(data))
    return lab_up(policy, directory / "lab")


@pytest.fixture(scope="module")
def example_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    running = _lab_with(tmp_path_factory, None)
    yield running
    lab_down(running)


@pytest.fixture(scope="module")
def mandatory_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    running = _lab_with(tmp_path_factory, "mandatory")
    yield running
    lab_down(running)


@pytest.fixture(scope="module")
def hidden_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """The example policy with topology hiding on (Kamailio's topos)."""
    running = _lab_with(tmp_path_factory, None, hiding=True)
    yield running
    lab_down(running)


@pytest.fixture(scope="module")
def bridge_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    running = _lab_with(tmp_path_factory, "bridge")
    yield running
    lab_down(running)


@pytest.fixture
def phones(tmp_path: Path):
    """Start phones (kind, lab, transport, encryption), each registered as a user of its own."""
    started: list[Baresip | Linphone] = []

    def start(kind: str, lab: RunningLab, transport: str, encryption: str = "none"):
        phone = PHONES[kind](lab, next(_USERS), tmp_path, transport, encryption)
        started.append(phone)
        phone.registered()
        return phone

    yield start
    for phone in started:
        phone.close()


@dataclass(frozen=True)
class Stream:
    """One party's side of one rtpengine leg: where its media comes from, what it uses."""

    leg: str
    protocol: str
    flags: tuple[str, ...]
    endpoint: int  # the party's media port
    local: int  # rtpengine's port facing it
    packets: int  # received from the party

    @property
    def outside(self) -> bool:
        return PHONE_RTP_PORTS[0] <= self.endpoint <= PHONE_RTP_PORTS[1]


def _streams(lab: RunningLab, keys: list[str]) -> list[Stream]:
    host, _, port = lab.info["rtpengine_ng"].rpartition(":")
    client = RtpengineClient([(host, int(port))], timeout=1.0)
    try:
        streams = []
        for key in keys:
            for tag in client.query(key).data["tags"].values():  # type: ignore[union-attr]
                for media in tag["medias"]:  # type: ignore[index]
                    first = media["streams"][0]
                    streams.append(
                        Stream(
                            key,
                            media["protocol"],
                            tuple(media.get("flags", ())),
                            first["endpoint"]["port"],
                            first["local port"],
                            first["stats"]["packets"],
                        )
                    )
        return streams
    finally:
        client.close()


def _calls(lab: RunningLab) -> set[str]:
    host, _, port = lab.info["rtpengine_ng"].rpartition(":")
    client = RtpengineClient([(host, int(port))], timeout=1.0)
    try:
        return set(client.list_calls())
    finally:
        client.close()


@dataclass
class Answered:
    streams: list[Stream]
    wire: Capture

    def outside(self) -> list[Stream]:
        return [s for s in self.streams if s.outside]

    def inside(self) -> list[Stream]:
        return [s for s in self.streams if not s.outside]

    def payloads(self, stream: Stream) -> list[bytes]:
        return rtp_payloads(self.wire.between(stream.endpoint, stream.local))


def connect(caller, callee) -> tuple[int, int]:
    """Dial and answer; the marks on both phones from before the call."""
    caller_mark, callee_mark = caller.mark(), callee.mark()
    caller.dial(callee.user)
    callee.wait_incoming(callee_mark)
    callee.answer()
    caller.wait_established(caller_mark)
    callee.wait_established(callee_mark)
    return caller_mark, callee_mark


def call(lab: RunningLab, caller, callee) -> Answered:
    """Call, answer, let media flow, hang up; what rtpengine and the wire saw meanwhile."""
    before = _calls(lab)
    low, high = lab.info["rtp_ports"]
    with capture_udp((min(low, PHONE_RTP_PORTS[0]), max(high, PHONE_RTP_PORTS[1]))) as wire:
        caller_mark, callee_mark = connect(caller, callee)
        keys = sorted(_calls(lab) - before)
        assert len(keys) == 2, f"expected the two crossings in rtpengine, found {keys}"

        def flowing() -> bool:
            return all(s.packets >= FLOWING for s in _streams(lab, keys))

        assert wait_until(flowing, timeout=15), _streams(lab, keys)
        streams = _streams(lab, keys)
    caller.hangup()
    callee.wait_closed(callee_mark)
    caller.wait_closed(caller_mark)
    assert wait_until(lambda: not (_calls(lab) & set(keys))), "media left in rtpengine"
    # Each phone decoded the other's tone: the keys it was given were right.
    for phone in (caller, callee):
        assert wait_until(lambda p=phone: p.heard() > HEARD, timeout=5), (phone.user, phone.heard())
    return Answered(streams, wire)


def assert_encrypted(answered: Answered, streams: list[Stream]) -> None:
    for stream in streams:
        assert stream.protocol in SRTP or stream.protocol == "RTP/AVP", stream
        payloads = answered.payloads(stream)
        assert len(payloads) >= FLOWING, (stream, len(payloads))
        assert share(payloads, is_ciphertext) >= 0.9, (stream, share(payloads, is_audio))


def assert_plain(answered: Answered, streams: list[Stream]) -> None:
    for stream in streams:
        assert stream.protocol in ("RTP/AVP", "RTP/AVPF"), stream
        payloads = answered.payloads(stream)
        assert len(payloads) >= FLOWING, (stream, len(payloads))
        assert share(payloads, is_audio) >= 0.9, (stream, share(payloads, is_ciphertext))


def assert_no_events(lab: RunningLab, before: int) -> None:
    assert lab.events()[before:] == []


# --- the example policy (users: srtp optional) -----------------------------------


@pytest.mark.parametrize(
    ("caller_kind", "callee_kind", "transport"),
    [
        ("baresip", "baresip", "udp"),
        ("baresip", "baresip", "tcp"),
        ("linphone", "linphone", "tls"),
    ],
)
def test_plain_call(example_lab, phones, caller_kind, callee_kind, transport):
    before = len(example_lab.events())
    caller = phones(caller_kind, example_lab, transport)
    callee = phones(callee_kind, example_lab, transport)
    answered = call(example_lab, caller, callee)
    assert_plain(answered, answered.streams)
    assert_no_events(example_lab, before)


@pytest.mark.parametrize(
    ("caller_kind", "callee_kind"),
    [("baresip", "baresip"), ("linphone", "baresip"), ("baresip", "linphone")],
)
def test_sdes_call_over_tls(example_lab, phones, caller_kind, callee_kind):
    # Each outside leg is SDES with keys of its own; the PBX hop is plain
    # signalling, so the inside legs are DTLS-SRTP, never a=crypto.
    before = len(example_lab.events())
    caller = phones(caller_kind, example_lab, "tls", "sdes")
    callee = phones(callee_kind, example_lab, "tls", "sdes")
    answered = call(example_lab, caller, callee)
    assert {s.protocol for s in answered.outside()} == {"RTP/SAVP"}
    assert all("SDES" in s.flags for s in answered.outside())
    assert {s.protocol for s in answered.inside()} == {"UDP/TLS/RTP/SAVP"}
    assert_encrypted(answered, answered.streams)
    assert_no_events(example_lab, before)


@pytest.mark.parametrize("kind", ["baresip", "linphone"])
def test_dtls_call_over_udp(example_lab, phones, kind):
    before = len(example_lab.events())
    caller = phones(kind, example_lab, "udp", "dtls")
    callee = phones(kind, example_lab, "udp", "dtls")
    answered = call(example_lab, caller, callee)
    assert {s.protocol.removesuffix("F") for s in answered.streams} == {"UDP/TLS/RTP/SAVP"}
    assert all("DTLS-SRTP" in s.flags for s in answered.streams)
    assert_encrypted(answered, answered.streams)
    assert_no_events(example_lab, before)


def test_dtls_phone_over_tls_reaches_a_dtls_phone(example_lab, phones):
    # baresip keys DTLS-SRTP on the RTP/SAVP offer a TLS hop gets (rtpengine
    # puts a=fingerprint beside a=crypto there).
    before = len(example_lab.events())
    caller = phones("baresip", example_lab, "tls", "dtls")
    callee = phones("baresip", example_lab, "tls", "dtls")
    answered = call(example_lab, caller, callee)
    assert all("DTLS-SRTP" in s.flags for s in answered.streams)
    assert_encrypted(answered, answered.streams)
    assert_no_events(example_lab, before)


@pytest.mark.parametrize("transport", ["tls", "udp"])
def test_zrtp_call_is_kept_end_to_end(example_lab, phones, transport):
    # rtpengine relays ZRTP untouched (RTP/AVP on every leg, no keys of its
    # own): both phones derive the same short authentication string, which
    # they could not if anything between them had keyed the media.
    before = len(example_lab.events())
    caller = phones("linphone", example_lab, transport, "zrtp")
    callee = phones("linphone", example_lab, transport, "zrtp")
    caller_mark, callee_mark = caller.mark(), callee.mark()
    answered = call(example_lab, caller, callee)
    assert caller.zrtp_sas(caller_mark) == callee.zrtp_sas(callee_mark)
    assert {s.protocol for s in answered.streams} == {"RTP/AVP"}
    assert_encrypted(answered, answered.streams)
    assert_no_events(example_lab, before)


# --- srtp: mandatory, and bridge towards the PBX -----------------------------------


def test_mandatory_srtp_calls_and_refuses_a_plain_phone(mandatory_lab, phones):
    before = len(mandatory_lab.events())
    caller = phones("linphone", mandatory_lab, "tls", "sdes")
    callee = phones("baresip", mandatory_lab, "tls", "sdes")
    answered = call(mandatory_lab, caller, callee)
    assert {s.protocol for s in answered.outside()} == {"RTP/SAVP"}
    assert_encrypted(answered, answered.streams)
    dtls_caller = phones("baresip", mandatory_lab, "udp", "dtls")
    dtls_callee = phones("linphone", mandatory_lab, "udp", "dtls")
    answered = call(mandatory_lab, dtls_caller, dtls_callee)
    assert_encrypted(answered, answered.streams)
    assert_no_events(mandatory_lab, before)

    # A phone that offers plain RTP is refused before anything rings.
    plain = phones("baresip", mandatory_lab, "udp")
    mark, callee_mark = plain.mark(), callee.mark()
    plain.dial(callee.user)
    assert plain.wait_closed(mark) == "488 plain RTP offer where SRTP is mandatory"
    refused = mandatory_lab.wait_for_event(module="media", action="reject")
    assert refused["reason"] == "plain RTP offer where SRTP is mandatory"
    assert not [e for e in callee.events[callee_mark:] if e.get("type") == "CALL_INCOMING"]


def test_bridge_keeps_srtp_outside_and_plain_rtp_towards_the_pbx(bridge_lab, phones):
    before = len(bridge_lab.events())
    caller = phones("baresip", bridge_lab, "tls", "sdes")
    callee = phones("linphone", bridge_lab, "tls", "sdes")
    answered = call(bridge_lab, caller, callee)
    assert {s.protocol for s in answered.outside()} == {"RTP/SAVP"}
    assert {s.protocol for s in answered.inside()} == {"RTP/AVP"}
    assert_encrypted(answered, answered.outside())
    assert_plain(answered, answered.inside())
    assert_no_events(bridge_lab, before)


# --- what people do during calls ----------------------------------------------------


def test_caller_hangs_up_while_ringing(example_lab, phones):
    # The CANCEL passes cancel_guard (it comes from the INVITE's source).
    before = len(example_lab.events())
    calls_before = _calls(example_lab)
    caller = phones("baresip", example_lab, "tls", "sdes")
    callee = phones("linphone", example_lab, "tls", "sdes")
    caller_mark, callee_mark = caller.mark(), callee.mark()
    caller.dial(callee.user)
    callee.wait_incoming(callee_mark)
    caller.hangup()
    assert callee.wait_closed(callee_mark) == "Not answered"
    caller.wait_closed(caller_mark)
    assert wait_until(lambda: _calls(example_lab) <= calls_before), "media left in rtpengine"
    assert_no_events(example_lab, before)


def test_hold_resume_and_dtmf(example_lab, phones):
    # Hold and resume are re-INVITEs from outside (dialog tokens, media
    # re-anchored); DTMF travels as RFC 4733 events through rtpengine.
    before = len(example_lab.events())
    caller = phones("linphone", example_lab, "tls", "sdes")
    callee = phones("linphone", example_lab, "tls", "sdes")
    _, callee_mark = connect(caller, callee)
    mark = caller.mark()
    caller.type("pause")
    caller.wait_for(r"Call \d+ with .* paused", since=mark)
    callee.wait_for(r"Call \d+ has been paused by", since=callee_mark)
    mark, callee_mark = caller.mark(), callee.mark()
    caller.type("resume")
    caller.wait_for(r"Media streams established", since=mark)
    callee.wait_for(r"Media streams established", since=callee_mark)
    callee_mark = callee.mark()
    caller.type("159#")
    for digit in "159#":
        callee.wait_for(rf"Receiving tone {digit}", since=callee_mark)
    caller.hangup()
    callee.wait_closed(callee_mark)
    assert_no_events(example_lab, before)


def test_blind_transfer_between_real_phones(example_lab, phones):
    # bob transfers alice's call to carol: a REFER inside the dialog
    # (refer_policy: a target of the own domain), then alice calls carol.
    before = len(example_lab.events())
    alice = phones("linphone", example_lab, "tls", "sdes")
    bob = phones("linphone", example_lab, "tls", "sdes")
    carol = phones("baresip", example_lab, "tls", "sdes")
    carol_mark = carol.mark()
    _, bob_mark = connect(alice, bob)
    alice_mark = alice.mark()
    bob.type(f"transfer sip:{carol.user}@{example_lab.domain}")
    carol.wait_incoming(carol_mark)
    carol.answer()
    carol.wait_established(carol_mark)
    alice.wait_for(r"Call \d+ with .*" + carol.user + r".* connected", since=alice_mark)
    bob.wait_closed(bob_mark)
    alice.hangup()
    carol.wait_closed(carol_mark)
    assert_no_events(example_lab, before)


# --- topology hiding on: topos rewrites Via, Record-Route and Contact ------------


@pytest.mark.parametrize(
    ("caller_kind", "callee_kind", "transport", "encryption"),
    [("baresip", "linphone", "udp", "none"), ("linphone", "baresip", "tls", "sdes")],
)
def test_real_phones_call_with_topology_hiding_on(
    hidden_lab, phones, caller_kind, callee_kind, transport, encryption
):
    # The phones see only the SBC's topos Contacts (linphone's GRUU included),
    # and their in-dialog requests (ACK, BYE) still find each other.
    before = len(hidden_lab.events())
    caller = phones(caller_kind, hidden_lab, transport, encryption)
    callee = phones(callee_kind, hidden_lab, transport, encryption)
    answered = call(hidden_lab, caller, callee)
    if encryption == "none":
        assert_plain(answered, answered.streams)
    else:
        assert_encrypted(answered, answered.streams)
    assert_no_events(hidden_lab, before)
