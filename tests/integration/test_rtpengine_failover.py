"""rtpengine redundancy through the real SBC: the rtpengine carrying a call dies, the call goes on.

The lab's pair (``lab up --rtpengine-redundancy``, docs/media-redundancy.md):
each rtpengine writes its calls to its own Redis database; when one stops
answering, the watcher moves its calls into the other's inbox, which restores
them on the same media ports.  The SBC's ng client sends the calls' later
commands to the survivor.  A call between two users crosses the SBC twice,
so it is two rtpengine calls (``Call-ID`` and ``Call-ID~out``); the Call-ID is
chosen so that both land on the rtpengine that is killed.

The last test shows why the partner holds no copy of the calls while both
live (rtpengine's own active-active mode, each subscribed to the other's
database): on one address, the copy takes the media.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sipshield.lab.net import free_port
from sipshield.lab.sip_ua import RtpPeer, UserAgent, media_port, sdp
from sipshield.lab.stack import _port_blocks
from sipshield.rtpengine import MediaOptions, NgError, RtpengineClient, rendezvous_order
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up
from tests.integration.wire import wait_until

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
media:
  rtpengine: {ng: ["127.0.0.1:2223", "127.0.0.1:2224"]}
  on_failure: reject
  users: {srtp: optional}
"""
Engine = dict[str, Any]  # an entry of lab.json's rtpengines


@pytest.fixture(scope="module")
def pair_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory = tmp_path_factory.mktemp("rtpengine-pair")
    policy = directory / "policy.yaml"
    policy.write_text(POLICY)
    running = lab_up(policy, directory / "lab", None, "--rtpengine-redundancy")
    yield running
    lab_down(running)


def _address(engine: Engine) -> tuple[str, int]:
    host, _, port = engine["ng"].rpartition(":")
    return host, int(port)


def _calls_on(engine: Engine) -> set[str]:
    client = RtpengineClient([_address(engine)], timeout=1.0)
    try:
        return set(client.list_calls(1000))
    finally:
        client.close()


def _call_id_landing_on(lab: RunningLab, engine: Engine) -> str:
    """A Call-ID whose two legs both go to ``engine`` first (the SBC's rendezvous order)."""
    instances = [_address(e) for e in lab.info["rtpengines"]]
    while True:
        call_id = secrets.token_hex(10)
        if all(
            rendezvous_order(key, instances)[0] == _address(engine)
            for key in (call_id, call_id + "~out")
        ):
            return call_id


_SEQUENCE = itertools.count()


def _rtp(seq: int, ssrc: int) -> bytes:
    return (
        bytes([0x80, 0])
        + seq.to_bytes(2, "big")
        + (seq * 160).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + b"\xff" * 160
    )


def _talk(
    alice: RtpPeer, to_bob: tuple[str, int], bob: RtpPeer, to_alice: tuple[str, int]
) -> tuple[int, int]:
    """Both send RTP for two seconds; how many of alice's bob received, and of bob's alice.

    Each packet has its own sequence number: the call's two legs are on one
    rtpengine, which drops a run of identical packets as a loop.
    """
    alice.receive(0.01), bob.receive(0.01)  # what arrived before does not count
    received = {0xA11CE: 0, 0xB0B: 0}
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        seq = next(_SEQUENCE) & 0xFFFF
        alice.send(to_bob, 0xA11CE, 1, _rtp(seq, 0xA11CE))
        bob.send(to_alice, 0xB0B, 1, _rtp(seq, 0xB0B))
        time.sleep(0.02)
        for packet in alice.receive(0.001) + bob.receive(0.001):
            ssrc = int.from_bytes(packet[8:12], "big")
            received[ssrc] = received.get(ssrc, 0) + 1
    return received[0xA11CE], received[0xB0B]


def _keys_left(lab: RunningLab) -> dict[int, list[str]]:
    """The calls the pair's Redis still holds, by database (theirs and their inboxes)."""
    databases = sorted({e[k] for e in lab.info["rtpengines"] for k in ("db", "inbox")})
    found = {}
    for db in databases:
        client = redis.Redis.from_url(lab.info["rtpengine_redis"], db=db, decode_responses=True)
        found[db] = client.keys()
    return {db: keys for db, keys in found.items() if keys}


def test_the_rtpengine_carrying_a_call_dies_and_the_call_goes_on_through_the_other(pair_lab):
    lab = pair_lab
    carrier, survivor = lab.info["rtpengines"]
    call_id = _call_id_landing_on(lab, carrier)
    legs = {call_id, call_id + "~out"}
    bob = UserAgent(lab, "bob")
    assert bob.register() == 200
    alice = UserAgent(lab, "alice")
    alice_media, bob_media = RtpPeer(), RtpPeer()
    answering = bob.answer_in_background(sdp(bob_media.port))
    call = alice.call("bob", sdp(alice_media.port), call_id=call_id)
    seen_by_bob = answering.wait().body
    assert call.reply is not None and call.reply.status == 200, call.reply
    to_bob = ("127.0.0.1", media_port(call.reply.body))
    to_alice = ("127.0.0.1", media_port(seen_by_bob))

    # Both legs on the carrier; the survivor holds no copy (a live copy on the same
    # address and port would take the media, see the module docstring of media_takeover).
    assert legs <= _calls_on(carrier)
    assert not legs & _calls_on(survivor)
    assert all(n > 0 for n in _talk(alice_media, to_bob, bob_media, to_alice))

    os.killpg(lab.info["pids"][carrier["name"]], signal.SIGKILL)
    assert wait_until(lambda: legs <= _calls_on(survivor)), _calls_on(survivor)
    handed = f"calls handed to {survivor['name']}"
    assert wait_until(lambda: handed in lab.log("media-takeover")), lab.log("media-takeover")

    # The parties go on sending to the ports they have: the survivor carries both ways.
    bob_heard, alice_heard = _talk(alice_media, to_bob, bob_media, to_alice)
    assert bob_heard > 0, "alice's RTP no longer reaches bob"
    assert alice_heard > 0, "bob's RTP no longer reaches alice"

    # A re-INVITE reaches the survivor (offer and answer, on both legs) and keeps the ports.
    reinvited = call.reinvite(sdp(alice_media.port))
    assert reinvited.status == 200, reinvited
    assert media_port(reinvited.body) == to_bob[1]
    assert all(n > 0 for n in _talk(alice_media, to_bob, bob_media, to_alice))

    # BYE: the delete reaches the survivor; nothing is left, in rtpengine or in Redis.
    assert call.bye() == 200
    answering.done.wait(5)
    assert wait_until(lambda: not legs & _calls_on(survivor)), _calls_on(survivor)
    assert wait_until(lambda: not _keys_left(lab)), _keys_left(lab)
    assert _talk(alice_media, to_bob, bob_media, to_alice) == (0, 0)
    # Every ng command of the call succeeded: no media event (passthrough, reject).
    assert [e for e in lab.events() if e.get("call_id") == call_id] == []

    # A new call is anchored on the survivor at once.
    other_media = RtpPeer()
    answering = bob.answer_in_background(sdp(other_media.port))
    carol = UserAgent(lab, "carol")
    new_call = carol.call("bob", sdp(RtpPeer().port))
    answering.wait()
    assert new_call.reply is not None and new_call.reply.status == 200, new_call.reply
    low, high = survivor["rtp_ports"]
    assert low <= media_port(new_call.reply.body) <= high
    assert new_call.bye() == 200
    for sock in (alice_media, bob_media, other_media, alice, bob, carol):
        sock.close()


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True
        )


def _answering(address: tuple[str, int]) -> bool:
    client = RtpengineClient([address], timeout=0.2, retries=0)
    try:
        client.ping()
    except NgError:
        return False
    finally:
        client.close()
    return True


MEDIA_TIMEOUT_S = 2  # rtpengine's --timeout (60 s by default)


def test_a_live_copy_on_the_same_address_takes_the_owners_media(tmp_path):
    """rtpengine's active-active mode on one host: B mirrors A's call, takes its media, and
    both lose the call.

    B restores A's call from the keyspace event and binds the same address and
    ports after A did; Linux gives each datagram to the socket bound last.  A
    sees no packet and ends the call at its media timeout, and B's copy goes
    with it (the Redis DEL).
    """
    redis_port = free_port()
    processes = [
        _start(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", ""]
            + ["--appendonly", "no", "--notify-keyspace-events", "K$g", "--dir", str(tmp_path)],
            tmp_path / "redis.log",
        )
    ]
    engines = {}
    try:
        assert wait_until(lambda: redis.Redis(port=redis_port).ping())
        for (name, db, mirrored), (low, high) in zip(
            (("A", 1, 2), ("B", 2, 1)), _port_blocks(2), strict=True
        ):
            engines[name] = ("127.0.0.1", free_port())
            argv = ["rtpengine", "--config-file=none", "--table=-1", "--interface=127.0.0.1"]
            argv += [f"--listen-ng=127.0.0.1:{engines[name][1]}", "--foreground", "--log-stderr"]
            argv += [f"--port-min={low}", f"--port-max={high}", f"--timeout={MEDIA_TIMEOUT_S}"]
            argv += [f"--redis=127.0.0.1:{redis_port}/{db}", f"--subscribe-keyspace={mirrored}"]
            processes.append(_start(argv, tmp_path / f"{name}.log"))
        assert all(wait_until(lambda a=a: _answering(a)) for a in engines.values())
        a, b = (RtpengineClient([engines[n]], timeout=1.0) for n in "AB")
        alice, bob = RtpPeer(), RtpPeer()
        options = MediaOptions(replace=("origin", "session-connection"))
        offer = a.offer(sdp(alice.port), "mirrored", "from", options)
        answer = a.answer(sdp(bob.port), "mirrored", "from", "to", options)

        def copied_answer() -> bool:
            """B's copy is rebuilt (and its ports rebound) at each of A's writes: the
            answer's is the last."""
            try:
                return set(b.query("mirrored").data["tags"]) == {"from", "to"}  # type: ignore[arg-type]
            except NgError:
                return False

        assert wait_until(copied_answer)
        for seq in range(20):
            alice.send(("127.0.0.1", media_port(answer.sdp)), 0xA, 1, _rtp(seq, 0xA))
            bob.send(("127.0.0.1", media_port(offer.sdp)), 0xB, 1, _rtp(seq, 0xB))
        assert wait_until(lambda: len(bob.receive(0.1)) > 0)

        def rtp_packets(client: RtpengineClient) -> int:
            return int(client.query("mirrored").data["totals"]["RTP"]["packets"])  # type: ignore[index,call-overload]

        # The copy carried it (its totals may show it a moment after the packet left)...
        assert wait_until(lambda: rtp_packets(b) > 0)
        assert rtp_packets(a) == 0  # ...and the owner saw none of its call's media

        def gone_while_talking() -> bool:
            for _ in range(5):
                seq = next(_SEQUENCE) & 0xFFFF
                alice.send(("127.0.0.1", media_port(answer.sdp)), 0xA, 1, _rtp(seq, 0xA))
                bob.send(("127.0.0.1", media_port(offer.sdp)), 0xB, 1, _rtp(seq, 0xB))
            return "mirrored" not in a.list_calls() + b.list_calls()

        # Media flows, yet the owner ends the call at its media timeout, and the copy
        # goes with it.
        assert wait_until(gone_while_talking, timeout=10)
        assert "Closing call due to timeout" in (tmp_path / "A.log").read_text()
    finally:
        # The rtpengines before their Redis: rtpengine 10.5 dumps core when the Redis it
        # subscribes to goes away.
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
