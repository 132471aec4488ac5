"""Content security through the real SBC and PBX to real registered phones.

Every sample in tests/samples/content/ is sent as alice (answering the PBX's
digest challenge) to bob, registered through the SBC: a refused sample gets
its code and never reaches the PBX (its own log is the oracle); a passing,
alerted or sanitised one reaches bob, byte for byte or with only the hidden
characters gone.  Beside the samples: a conversation both ways, device
control from the provisioning source and from anyone else, IM floods and
spam counted in Redis, and presence watchers.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.im_peer import Phone, Sender
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up
from tests.validation_samples import CONTENT_SAMPLES, Sample, load_sample

pytestmark = pytest.mark.integration

PROVISIONING_IP = "127.0.0.7"
STRANGER_IP = "127.0.0.66"
POLICY = f"""\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
modules:
  - {{name: validation}}
  - {{name: content_policy, disallowed_parts: strip}}
  - {{name: xml_bodies}}
  - {{name: device_control, provisioning_sources: [{PROVISIONING_IP}/32]}}
  - {{name: text_safety}}
  - {{name: im_links}}
  - name: spit
    window_s: 3600              # one window for the whole module: no boundary mid-test
    max_messages: 100
    max_recipients: 8
    max_recipients_per_body: 10
    max_first_contacts: 5
  - {{name: presence_privacy, max_presentities: 5, window_s: 3600}}
"""
SAMPLE_FILES = sorted(CONTENT_SAMPLES.glob("*.sip"))
# The characters the sanitised samples hide (bidi overrides and isolates, ZWSP).
HIDDEN = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("content-lab")
    policy = directory / "policy.yaml"
    policy.write_text(POLICY)
    running = lab_up(policy, directory / "lab")
    yield running
    lab_down(running)


@pytest.fixture(scope="module")
def bob(lab: RunningLab) -> Iterator[Phone]:
    phone = Phone(lab, "bob")
    yield phone
    phone.close()


@pytest.fixture(scope="module")
def alice(lab: RunningLab) -> Iterator[Sender]:
    sender = Sender(lab, "alice")
    yield sender
    sender.close()


def render(lab: RunningLab, sample: Sample) -> tuple[bytes, str]:
    call_id = f"content-{uuid.uuid4().hex}"
    raw = sample.render(
        call_id=call_id,
        branch="z9hG4bK" + secrets.token_hex(6),
        tag=secrets.token_hex(4),
        domain=lab.domain,
    )
    return raw, call_id


def body_text(raw: bytes) -> str:
    return raw.partition(b"\r\n\r\n")[2].decode("utf-8", errors="replace")


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.stem for path in SAMPLE_FILES])
def test_sample_through_the_lab(lab: RunningLab, bob: Phone, alice: Sender, path: Path) -> None:
    sample = load_sample(path)
    raw, call_id = render(lab, sample)
    expected = sample.lab["udp"]
    status = alice.send(raw)
    if expected.action == "reply":
        assert status == expected.code, sample.why
        assert not lab.pbx_saw(call_id), "a refused request reached the PBX"
        if "# lab:" not in path.read_text():
            lab.wait_for_event(module=sample.module, action="reject", call_id=call_id)
        return
    assert expected.action == "forwarded"
    assert status == 200, f"{sample.why}: got {status}"
    assert lab.pbx_saw(call_id)
    if raw.startswith(b"PUBLISH"):
        return  # the PBX keeps presence itself; bob is not the recipient
    delivered = bob.got(call_id)
    assert delivered is not None, "bob never received it"
    sent = body_text(raw)
    if sample.expect.action == "sanitise":
        assert any(char in sent for char in HIDDEN)
        assert delivered.body == "".join(char for char in sent if char not in HIDDEN)
        lab.wait_for_event(module=sample.module, action="sanitise", call_id=call_id)
    else:
        assert delivered.body == sent
    if sample.expect.action == "alert":
        lab.wait_for_event(module=sample.module, action="alert", call_id=call_id)


def message(lab: RunningLab, sender: str, recipient: str, text: str, **extra: str) -> bytes:
    """An out-of-dialog MESSAGE (a fresh Call-ID each time)."""
    headers = "".join(f"{name}: {value}\r\n" for name, value in extra.items())
    body = text.encode()
    return (
        f"MESSAGE sip:{recipient}@{lab.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{sender}@{lab.domain}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{recipient}@{lab.domain}>\r\n"
        f"Call-ID: im-{uuid.uuid4().hex}\r\n"
        "CSeq: 1 MESSAGE\r\n"
        f"{headers}"
        "Content-Type: text/plain;charset=UTF-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def call_id_of(raw: bytes) -> str:
    return raw.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()


def test_a_conversation_both_ways_arrives_unchanged(lab: RunningLab, bob: Phone) -> None:
    carol = Phone(lab, "carol")
    to_bob, to_carol = Sender(lab, "carol"), Sender(lab, "bob")
    try:
        texts = [
            "Hello Bob 👋",
            "مرحبا، كيف حالك؟ 👨\u200d👩\u200d👧",
            "Встреча в 15:00 — 会议室 3",
        ]
        for text in texts:
            raw = message(lab, "carol", "bob", text)
            assert to_bob.send(raw) == 200
            got = bob.got(call_id_of(raw))
            assert got is not None and got.body == text
            reply = message(lab, "bob", "carol", f"re: {text}")
            assert to_carol.send(reply) == 200
            back = carol.got(call_id_of(reply))
            assert back is not None and back.body == f"re: {text}"
    finally:
        for peer in (to_bob, to_carol, carol):
            peer.close()


def notify(lab: RunningLab, event: str, body: str = "") -> bytes:
    return (
        f"NOTIFY sip:bob@{lab.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:provisioning@{lab.domain}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:bob@{lab.domain}>\r\n"
        f"Call-ID: ctl-{uuid.uuid4().hex}\r\n"
        "CSeq: 1 NOTIFY\r\n"
        f"Event: {event}\r\n"
        "Subscription-State: terminated\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def test_only_the_provisioning_source_may_make_phones_resync(lab: RunningLab, bob: Phone) -> None:
    provisioning = Sender(lab, "alice", ip=PROVISIONING_IP)
    stranger = Sender(lab, "alice", ip=STRANGER_IP)
    try:
        allowed = notify(lab, "check-sync;reboot=true")
        assert provisioning.send(allowed) == 200
        assert bob.got(call_id_of(allowed)) is not None
        refused = notify(lab, "check-sync;reboot=true")
        assert stranger.send(refused) == 403
        lab.wait_for_event(module="device_control", action="reject", call_id=call_id_of(refused))
        assert not lab.pbx_saw(call_id_of(refused))
    finally:
        provisioning.close()
        stranger.close()


def test_a_sender_writing_to_too_many_people_is_stopped(lab: RunningLab) -> None:
    # Nine users write to dave first (authenticated, delivered: 200), so his
    # answers are no first contacts.
    writers = [f"u{n}" for n in range(1040, 1049)]
    dave = Phone(lab, "dave", ip="127.0.0.9")
    sender = Sender(lab, "dave")
    try:
        for writer in writers:
            peer = Sender(lab, writer)
            assert peer.send(message(lab, writer, "dave", f"hi dave from {writer}")) == 200
            peer.close()
        statuses = []
        for writer in writers:
            raw = message(lab, "dave", writer, f"hello {writer}, {uuid.uuid4()}")
            statuses.append(sender.send(raw))
        # max_recipients is 8: the ninth recipient in the window is refused.
        assert statuses[:8] == [404] * 8, statuses  # the PBX: nobody registered there
        assert statuses[8] == 403
        event = lab.wait_for_event(module="spit", action="reject", call_id=call_id_of(raw))
        assert "max_recipients" in event["reason"]
    finally:
        sender.close()
        dave.close()


def test_the_same_text_to_many_people_is_stopped(lab: RunningLab) -> None:
    text = f"You won a prize! Call now {uuid.uuid4()}"
    statuses, last = [], b""
    for n in range(11):
        sender = Sender(lab, f"u{1000 + n}")
        last = message(lab, f"u{1000 + n}", f"u{1020 + n}", text)
        statuses.append(sender.send(last))
        sender.close()
    assert statuses[:10] == [404] * 10, statuses
    assert statuses[10] == 403
    event = lab.wait_for_event(module="spit", action="reject", call_id=call_id_of(last))
    assert "max_recipients_per_body" in event["reason"]


def test_a_stranger_writing_to_many_users_is_stopped(lab: RunningLab) -> None:
    sender = Sender(lab, "u1050")
    try:
        statuses, raw = [], b""
        for n in range(6):
            raw = message(lab, "u1050", f"u{1051 + n}", f"hello {uuid.uuid4()}")
            statuses.append(sender.send(raw))
        assert statuses == [404] * 5 + [403], statuses
        event = lab.wait_for_event(module="spit", action="reject", call_id=call_id_of(raw))
        assert "max_first_contacts" in event["reason"]
    finally:
        sender.close()


def test_a_message_rate_over_the_limit_is_stopped_and_others_still_talk(
    lab: RunningLab, bob: Phone
) -> None:
    sender = Sender(lab, "u1059")
    try:
        statuses = [
            sender.send(message(lab, "u1059", "bob", f"{n} {uuid.uuid4()}")) for n in range(101)
        ]
        assert statuses[:100] == [200] * 100, [s for s in statuses if s != 200][:5]
        assert statuses[100] == 403
        other = Sender(lab, "carol")
        raw = message(lab, "carol", "bob", "still here")
        assert other.send(raw) == 200
        assert bob.got(call_id_of(raw)) is not None
        other.close()
    finally:
        sender.close()


def subscribe(lab: RunningLab, watcher: str, presentity: str, event: str = "presence") -> bytes:
    """An out-of-dialog SUBSCRIBE from ``watcher`` (user@domain) to ``presentity`` (a user)."""
    return (
        f"SUBSCRIBE sip:{presentity}@{lab.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{watcher}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{presentity}@{lab.domain}>\r\n"
        f"Call-ID: sub-{uuid.uuid4().hex}\r\n"
        "CSeq: 1 SUBSCRIBE\r\n"
        f"Event: {event}\r\n"
        "Accept: application/pidf+xml\r\n"
        "Expires: 600\r\n"
        f"Contact: <sip:{watcher.split('@')[0]}@127.0.0.1:5999>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_a_registered_watcher_may_watch_and_strangers_may_not(lab: RunningLab, bob: Phone) -> None:
    watcher = Sender(lab, "bob")  # bob is registered from 127.0.0.1
    impostor = Sender(lab, "bob", ip=STRANGER_IP)
    try:
        allowed = subscribe(lab, f"bob@{lab.domain}", "carol")
        assert watcher.send(allowed) != 403
        assert lab.pbx_saw(call_id_of(allowed))

        spoofed = subscribe(lab, f"bob@{lab.domain}", "carol")
        assert impostor.send(spoofed) == 403
        event = lab.wait_for_event(module="presence_privacy", call_id=call_id_of(spoofed))
        assert "require_registered_watcher" in event["reason"]

        foreign = subscribe(lab, "eve@evil.example", "carol", event="dialog")
        assert watcher.send(foreign) == 403
        event = lab.wait_for_event(module="presence_privacy", call_id=call_id_of(foreign))
        assert "may not watch" in event["reason"]
        for refused in (spoofed, foreign):
            assert not lab.pbx_saw(call_id_of(refused))
    finally:
        watcher.close()
        impostor.close()


def test_a_watcher_sweeping_the_directory_is_stopped(lab: RunningLab) -> None:
    sweeper_ip = "127.0.0.8"
    phone = Phone(lab, "dave", ip=sweeper_ip)  # registered: a real user, sweeping
    sweeper = Sender(lab, "dave", ip=sweeper_ip)
    try:
        statuses, raw = [], b""
        for n in range(6):
            raw = subscribe(lab, f"dave@{lab.domain}", f"u{1010 + n}")
            statuses.append(sweeper.send(raw))
        # max_presentities is 5: the sixth distinct presentity is refused.
        assert 403 not in statuses[:5], statuses
        assert statuses[5] == 403
        event = lab.wait_for_event(module="presence_privacy", call_id=call_id_of(raw))
        assert "max_presentities" in event["reason"]
    finally:
        sweeper.close()
        phone.close()


def test_a_disallowed_text_part_is_stripped_and_the_rest_delivered(
    lab: RunningLab, bob: Phone, alice: Sender
) -> None:
    text = b"--b1\r\nContent-Type: text/plain\r\n\r\nsee you at 3\r\n"
    # Allowed site-wide (validation), not in a MESSAGE (content_policy).
    pidf = (
        b"--b1\r\nContent-Type: application/pidf+xml\r\n\r\n"
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@sipshield.lab"/>\r\n'
    )
    body = text + pidf + b"--b1--\r\n"
    call_id = f"strip-{uuid.uuid4().hex}"
    raw = (
        f"MESSAGE sip:bob@{lab.domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{lab.domain}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:bob@{lab.domain}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n"
        "Content-Type: multipart/mixed;boundary=b1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    assert alice.send(raw) == 200
    delivered = bob.got(call_id)
    assert delivered is not None
    assert delivered.body == (text + b"--b1--\r\n").decode()
    assert delivered.header("Content-Length") == str(len(text) + len(b"--b1--\r\n"))
    lab.wait_for_event(module="content_policy", action="strip", call_id=call_id)
