"""Every validation sample, over UDP and over TCP, against the real lab.

The samples are sent all at once (each with its own Call-ID and branch) to a
lab that runs only the validation module, then each test checks one sample on
one transport: the reply code, and whether the lab PBX saw the request.  A
sample that passes validation must reach the PBX; one that fails must not.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from sipshield.lab.sip_probe import final_status
from tests.integration.lab_fixture import RunningLab
from tests.integration.validation_lab import render_for_lab, validation_only_lab
from tests.validation_samples import SAMPLES, Sample, load_sample

pytestmark = pytest.mark.integration

TRANSPORTS = ("udp", "tcp")
SAMPLE_FILES = sorted(SAMPLES.glob("*.sip"))
# Long enough for a reply relayed by the PBX; a sample that gets no reply
# costs this much, but all samples wait at the same time.
REPLY_TIMEOUT_S = 2.0
PBX_LOG_SETTLE_S = 5.0


def wait_until_pbx_saw(lab: RunningLab, call_ids: list[str]) -> None:
    """Until the PBX has logged every one of ``call_ids`` (at most PBX_LOG_SETTLE_S)."""
    deadline = time.monotonic() + PBX_LOG_SETTLE_S
    while not all(lab.pbx_saw(call_id) for call_id in call_ids):
        if time.monotonic() > deadline:
            return  # the test's own assertion says which one is missing
        time.sleep(0.05)


@dataclass(frozen=True)
class Sent:
    call_id: str
    reply: int | None
    # Samples expected to get no answer come from an address of their own, so
    # that the SBC's sipdump can show it received each of them.
    source_ip: str = "127.0.0.1"
    # Over TCP: the SBC's listener accepted the connection and took every byte.
    delivered: bool = False


@pytest.fixture(scope="module")
def validation_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with validation_only_lab(tmp_path_factory.mktemp("validation")) as running:
        yield running


@pytest.fixture(scope="module")
def sent(validation_lab: RunningLab) -> dict[tuple[str, str], Sent]:
    """Send every sample on every transport once; results by (sample name, transport)."""
    jobs, must_arrive = [], []
    silent = 0
    for path in SAMPLE_FILES:
        sample = load_sample(path)
        for transport in TRANSPORTS:
            call_id, raw = render_for_lab(sample, validation_lab, transport)
            source = "127.0.0.1"
            if sample.lab[transport].action == "none":
                silent += 1
                source = f"127.0.1.{silent}"
            jobs.append((sample.name, transport, call_id, raw, source))
            if sample.lab[transport].action == "forwarded":
                must_arrive.append(call_id)

    def send(job: tuple[str, str, str, bytes, str]) -> tuple[int | None, bool]:
        _, transport, _, raw, source = job
        if transport == "tcp" and source != "127.0.0.1":
            return send_tcp(validation_lab, raw, source)
        reply = validation_lab.send(
            raw, transport=transport, timeout=REPLY_TIMEOUT_S, source_ip=source
        )
        return reply, False

    with ThreadPoolExecutor(max_workers=32) as pool:
        replies = list(pool.map(send, jobs))
    # The PBX logs what it received: wait until it has logged every sample
    # that must reach it (the others had their reply timeout to show up, wrongly).
    wait_until_pbx_saw(validation_lab, must_arrive)
    return {
        (name, transport): Sent(call_id, reply, source, delivered)
        for (name, transport, call_id, _, source), (reply, delivered) in zip(
            jobs, replies, strict=True
        )
    }


def send_tcp(lab: RunningLab, raw: bytes, source_ip: str) -> tuple[int | None, bool]:
    """Send over a TCP connection of its own: (the final status, whether every byte
    was taken by the SBC's listener: connected, sent, and not reset)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((source_ip, 0))
        sock.settimeout(REPLY_TIMEOUT_S)
        try:
            sock.connect(lab.sip("tcp"))
            sock.sendall(raw)
        except OSError:
            return None, False
        received = b""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline and final_status(received) is None:
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            except OSError:  # reset: the bytes may not all have been taken
                return None, False
            if not data:
                break
            received += data
        return final_status(received), True


def received(lab: RunningLab, source_ip: str) -> bool:
    """Whether the SBC's sipdump shows a message from ``source_ip`` (written by a timer)."""
    deadline = time.monotonic() + PBX_LOG_SETTLE_S
    while not lab.sbc_received_from(source_ip):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.stem for path in SAMPLE_FILES])
def test_sample_in_the_lab(
    path, transport: str, validation_lab: RunningLab, sent: dict[tuple[str, str], Sent]
) -> None:
    sample: Sample = load_sample(path)
    expected = sample.lab[transport]
    result = sent[(sample.name, transport)]
    forwarded = validation_lab.pbx_saw(result.call_id)
    seen = f"reply {result.reply}, {'forwarded' if forwarded else 'not forwarded'}"
    context = f"{sample.name} over {transport} ({sample.why}): {seen}"
    if expected.action == "forwarded":
        assert forwarded, context
    elif expected.action == "reply":
        assert (result.reply, forwarded) == (expected.code, False), context
    else:
        assert (result.reply, forwarded) == (None, False), context
        # Silence is also what a dead SBC gives, or a message lost on the way:
        # the SBC received this one, and still answers.  Its sipdump shows every
        # datagram and every TCP message it framed; a TCP stream it never frames
        # (no end of headers, a body shorter than announced) was accepted on
        # its listener, byte for byte.
        seen = received(validation_lab, result.source_ip)
        assert seen or result.delivered, f"{context}; the SBC never got it"
        assert validation_lab.options(transport) == 200, f"{context}; the SBC no longer answers"


def test_a_rejection_is_an_event_naming_the_problem(
    validation_lab: RunningLab, sent: dict[tuple[str, str], Sent]
) -> None:
    call_id = sent[("invalid-cseq-method-mismatch", "udp")].call_id
    event = validation_lab.wait_for_event(call_id=call_id)
    assert event["module"] == "validation"
    assert event["action"] == "reject"
    assert event["reason"].startswith("CSeq method does not match")


def test_the_example_policy_validates(lab: RunningLab) -> None:
    """The example policy (this file's own lab of it) runs validation in front of the PBX."""
    good_id, good = render_for_lab(load_sample(SAMPLES / "valid-options-to-user.sip"), lab, "udp")
    bad_id, bad = render_for_lab(load_sample(SAMPLES / "invalid-cseq-not-numeric.sip"), lab, "udp")
    assert lab.send(bad) == 400
    # The PBX's answer depends on whether bob is registered (404, or
    # forwarding to his contact): judge by what it saw.
    lab.send(good, timeout=0.5)
    wait_until_pbx_saw(lab, [good_id])
    assert lab.pbx_saw(good_id)
    assert not lab.pbx_saw(bad_id)
