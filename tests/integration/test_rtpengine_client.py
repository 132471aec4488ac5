"""RtpengineClient against a real rtpengine daemon, userspace-only, on 127.0.0.1."""

from __future__ import annotations

import logging
import random
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipshield.rtpengine import (
    MediaOptions,
    NgError,
    NgErrorReply,
    Offer,
    RtpengineClient,
    encode_request,
    make_cookie,
    rendezvous_order,
)

pytestmark = pytest.mark.integration

RTPENGINE = shutil.which("rtpengine") or "/usr/bin/rtpengine"

SDP_CALLER = (
    "v=0\r\n"
    "o=- 1545997027 1 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 8\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
)
SDP_CALLEE = SDP_CALLER.replace("4000", "5000").replace("1545997027", "1545997028")


@dataclass(frozen=True)
class Daemon:
    address: tuple[str, int]
    port_min: int
    port_max: int
    log: Path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not Path(RTPENGINE).exists():
        pytest.skip("rtpengine is not installed")
    workdir = tmp_path_factory.mktemp("rtpengine")
    ng_port = free_udp_port()
    # A random 100-port media range keeps parallel runs (and the lab's own rtpengine) apart.
    port_min = random.randrange(30000, 39900, 2)
    port_max = port_min + 99
    log = workdir / "rtpengine.log"
    command = [
        RTPENGINE,
        "--config-file=none",  # ignore /etc/rtpengine/rtpengine.conf
        "--table=-1",  # no kernel forwarding: no root, no kernel module
        "--interface=127.0.0.1",
        f"--listen-ng=127.0.0.1:{ng_port}",
        f"--port-min={port_min}",
        f"--port-max={port_max}",
        "--foreground",
        "--log-stderr",
        "--log-level=7",  # debug: the log then holds every ng request and reply dump
        f"--pidfile={workdir / 'rtpengine.pid'}",
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    daemon = Daemon(("127.0.0.1", ng_port), port_min, port_max, log)
    try:
        wait_until_ready(process, daemon)
        yield daemon
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode is not None


def wait_until_ready(process: subprocess.Popen[bytes], daemon: Daemon) -> None:
    probe = RtpengineClient([daemon.address], timeout=0.2, retries=0, dead_retry_interval=0)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"rtpengine exited early:\n{daemon.log.read_text()}")
            try:
                probe.ping()
                return
            except NgError:
                time.sleep(0.1)
        pytest.fail(f"rtpengine did not answer ping:\n{daemon.log.read_text()}")
    finally:
        probe.close()


@pytest.fixture
def client(rtpengine: Daemon) -> Iterator[RtpengineClient]:
    client = RtpengineClient([rtpengine.address], timeout=1.0, retries=1)
    yield client
    client.close()


def new_call_id() -> str:
    return f"{uuid.uuid4()}@sipshield.test"


def media_port(sdp: str) -> int:
    match = re.search(r"^m=audio (\d+) ", sdp, re.MULTILINE)
    assert match, sdp
    return int(match.group(1))


def test_ping(client: RtpengineClient, rtpengine: Daemon) -> None:
    reply = client.ping()
    assert reply.result == "pong"
    assert reply.instance == rtpengine.address


def test_plain_rtp_offer_answer_query_delete(client: RtpengineClient, rtpengine: Daemon) -> None:
    call_id = new_call_id()
    offer = client.offer(SDP_CALLER, call_id, "from-1", MediaOptions(replace=("origin",)))
    assert offer.reply.warning is None
    assert rtpengine.port_min <= media_port(offer.sdp) <= rtpengine.port_max
    assert "c=IN IP4 127.0.0.1" in offer.sdp
    assert "m=audio" in offer.sdp and "RTP/AVP 0 8" in offer.sdp
    assert "a=crypto" not in offer.sdp

    answer = client.answer(SDP_CALLEE, call_id, "from-1", "to-1")
    assert rtpengine.port_min <= media_port(answer.sdp) <= rtpengine.port_max
    assert media_port(answer.sdp) != media_port(offer.sdp)

    state = client.query(call_id)
    tags = state.data.get("tags")
    assert isinstance(tags, dict) and {"from-1", "to-1"} <= tags.keys()
    assert call_id in client.list_calls()

    deleted = client.delete(call_id, "from-1")
    assert deleted.result == "ok" and deleted.warning is None


def test_rtp_to_srtp_offer_with_sdes(client: RtpengineClient) -> None:
    call_id = new_call_id()
    options = MediaOptions(
        transport_protocol="RTP/SAVP",
        dtls="off",  # otherwise rtpengine 10.5 also offers DTLS-SRTP (a=fingerprint)
        sdes=("no-NULL_HMAC_SHA1_80", "no-NULL_HMAC_SHA1_32"),
    )
    offer = client.offer(SDP_CALLER, call_id, "from-1", options)
    assert re.search(r"^m=audio \d+ RTP/SAVP 0 8\r$", offer.sdp, re.MULTILINE), offer.sdp
    assert "a=crypto:1 " in offer.sdp
    assert "AES_CM_128_HMAC_SHA1_80" in offer.sdp
    assert "NULL_HMAC_SHA1" not in offer.sdp
    assert "a=fingerprint" not in offer.sdp
    client.delete(call_id)


def test_answer_for_unknown_call_is_an_error_reply(client: RtpengineClient) -> None:
    with pytest.raises(NgErrorReply) as info:
        client.answer(SDP_CALLEE, new_call_id(), "from-x", "to-x")
    assert info.value.command == "answer"
    assert info.value.reason == "Unknown call-id"


def test_delete_of_unknown_call_is_ok_with_warning(
    client: RtpengineClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sipshield.rtpengine"):
        reply = client.delete(new_call_id(), "from-x")
    assert reply.result == "ok"
    assert reply.warning and "not found" in reply.warning
    assert "'delete'" in caplog.text


def test_statistics(client: RtpengineClient) -> None:
    stats = client.statistics()
    assert isinstance(stats.get("currentstatistics"), dict)


def test_failover_from_dead_instance(rtpengine: Daemon) -> None:
    dead = ("127.0.0.1", free_udp_port())
    client = RtpengineClient([dead, rtpengine.address], timeout=0.5, retries=1)
    try:
        assert client.ping().instance == rtpengine.address
        assert client.transport.is_dead(dead)
        # A Call-ID that hashes to the dead instance first still gets served by the live one.
        call_id = next(
            cid
            for cid in (new_call_id() for _ in range(1000))
            if rendezvous_order(cid, [dead, rtpengine.address])[0] == dead
        )
        offer = client.offer(SDP_CALLER, call_id, "from-1")
        assert offer.reply.instance == rtpengine.address
        client.delete(call_id)
    finally:
        client.close()


def test_retransmitted_cookie_is_answered_from_cache(client: RtpengineClient) -> None:
    # Why the transport reuses the cookie: rtpengine replays its cached reply instead of
    # running the offer again, so a retransmitted offer does not allocate new ports.
    call_id = new_call_id()
    cookie = make_cookie()
    datagram = encode_request(cookie, Offer(SDP_CALLER, call_id, "from-1").to_ng())
    _, first = client.transport.exchange("offer", cookie, datagram, call_id)
    _, again = client.transport.exchange("offer", cookie, datagram, call_id)
    assert first == again
    client.delete(call_id)
