"""Topology hiding on internet calls: the other domain learns nothing of the inside.

The lab with its foreign domain (``lab up --internet``: a DNS server and the
foreign proxy, over TLS) and topology hiding on.  A call out to a foreign
user and a call in from one both go through, with SRTP as the internet
policy wants, and neither the foreign user nor the lab user receives the
PBX's address, its port or its software.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sipshield.lab.sip_ua import RtpPeer, UserAgent, sdp
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up
from tests.integration.test_internet_calling import (
    CRYPTO,
    POLICY,
    _answer_sdes,
    _foreign_received,
    _foreign_user,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    directory: Path = tmp_path_factory.mktemp("internet-hidden")
    policy = POLICY.replace("MODE", "both").replace("REQUIRE_TLS", "true")
    (directory / "policy.yaml").write_text(policy + "topology_hiding: {enabled: true}\n")
    running = lab_up(directory / "policy.yaml", directory / "lab", None, "--internet")
    yield running
    lab_down(running)


def foreign_user(lab: RunningLab) -> UserAgent:
    """bob at the foreign domain, registered there (its answers are the foreign proxy's)."""
    bob = _foreign_user(lab)
    bob.received.clear()
    return bob


def inside_seen(lab: RunningLab, alice: UserAgent, bob: UserAgent) -> list[bytes]:
    """What alice and bob received that names our PBX.

    The foreign proxy is a Kamailio too, and its own 100 Trying to bob says
    so in its Server header: hop by hop, it never crossed the SBC.
    """
    host, _, port = lab.info["pbx"]["udp"].rpartition(":")
    markers = (host.encode(), f":{port}".encode(), b"kamailio")
    chunks = [*alice.received, *(c for c in bob.received if not c.startswith(b"SIP/2.0 100 "))]
    lines = (line for chunk in chunks for line in chunk.splitlines())
    return [line for line in lines if any(m in line.lower() for m in markers)]


def test_a_call_out_to_another_domain_shows_it_nothing_of_the_inside(lab: RunningLab):
    alice, bob = UserAgent(lab, "alice"), foreign_user(lab)
    try:
        assert alice.register() == 200
        answering = bob.answer_in_background(_answer_sdes)
        call = alice.call("bob@foreign.test", sdp(RtpPeer().port))
        assert call.reply is not None and call.reply.status == 200, call.reply
        (invite,) = _foreign_received(lab, "INVITE", call.call_id)
        assert "proto=tls" in invite, invite
        assert call.bye() == 200
        answering.wait()
        assert inside_seen(lab, alice, bob) == []
    finally:
        alice.close()
        bob.close()


def test_a_call_in_from_another_domain_shows_it_nothing_of_the_inside(lab: RunningLab):
    alice, bob = UserAgent(lab, "alice", transport="tls"), foreign_user(lab)
    try:
        assert alice.register() == 200
        answering = alice.answer_in_background(sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
        call = bob.call("alice@sipshield.lab", sdp(RtpPeer().port, "RTP/SAVP", "127.0.0.1", CRYPTO))
        assert call.reply is not None and call.reply.status == 200, call.reply
        assert call.bye() == 200
        answering.wait()
        assert inside_seen(lab, alice, bob) == []
    finally:
        alice.close()
        bob.close()
