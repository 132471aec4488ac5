"""Topology hiding on a cluster: a dialog set up through node A is ended through node B.

topos keeps what it strips in the Redis the nodes share (topos_redis), so
node B restores the route set of a dialog that node A hid.  The cluster is
the one of test_two_nodes_dialogs (node B answers for node A's address, the
shared Record-Route), with topology hiding on: the callee sees no Record-Route
and only topos's Contact, yet both ends can end the call through either node,
and dialog_guard's tokens (inside the hidden Record-Route) still refuse a
forged BYE.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sipshield.edge.topology_hiding import ENDED_DIALOG_LIFETIME_S
from sipshield.lab.sip_probe import send_request
from sipshield.lab.sip_ua import UserAgent, sdp
from tests.integration.lab_fixture import RunningLab
from tests.integration.test_two_nodes_dialogs import (
    ATTACKER,
    call_through,
    forged_bye,
    pbx_received,
)
from tests.integration.two_nodes import Node, two_node_lab

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
topology_hiding: {enabled: true}
modules:
  - {name: validation}
  - {name: dialog_guard}
  - {name: cancel_guard}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, Node]]:
    directory = tmp_path_factory.mktemp("two-nodes-hiding")
    with two_node_lab(directory, POLICY, shared_address=True) as cluster:
        yield cluster


def inside_seen(lab: RunningLab, *received: list[bytes]) -> list[bytes]:
    host, _, port = lab.info["pbx"]["udp"].rpartition(":")
    markers = (host.encode(), f":{port}".encode(), b"kamailio")
    return [
        line
        for data in received
        for chunk in data
        for line in chunk.splitlines()
        if any(m in line.lower() for m in markers)
    ]


def test_a_hidden_dialog_set_up_through_node_a_is_ended_through_node_b(cluster):
    lab, b = cluster
    alice, bob, call, answering = call_through(lab, lab.sip(), "bob")
    try:
        assert answering.invite is not None
        assert answering.invite.all("Record-Route") == []
        assert "tpsh-" in answering.invite.header("Contact")
        alice.sbc = ("127.0.0.1", b.port)
        assert call.bye() == 200
        assert answering.done.wait(5) and answering.error is None, answering.error
        assert pbx_received(lab, "BYE", call.call_id, b)
        assert inside_seen(lab, alice.received, bob.received) == []
    finally:
        alice.close()
        bob.close()


def test_the_callee_ends_a_hidden_dialog_through_node_b(cluster):
    lab, b = cluster
    alice, bob, call, answering = call_through(lab, lab.sip(), "carol")
    try:
        bob.sbc = ("127.0.0.1", b.port)
        bob.send(answering.bye())
        bye = alice.next_request()
        assert bye.method == "BYE" and bye.header("Call-ID") == call.call_id, bye.start
        assert inside_seen(lab, alice.received, bob.received) == []
    finally:
        alice.close()
        bob.close()


def test_a_forged_bye_is_still_refused_on_either_node_with_hiding_on(cluster):
    lab, b = cluster
    alice, bob, call, answering = call_through(lab, lab.sip(), "dave")
    try:
        for node, cseq in ((lab.sip(), 50), (("127.0.0.1", b.port), 51)):
            assert send_request(node, forged_bye(call, cseq), source_ip=ATTACKER) == 403, node
        assert not answering.done.wait(0.5), "the forged BYE reached the callee"
        alice.sbc = ("127.0.0.1", b.port)
        assert call.bye() == 200
        assert answering.done.wait(5) and answering.error is None, answering.error
    finally:
        alice.close()
        bob.close()


def test_a_failed_call_leaves_no_record_for_the_dialog_lifetime_without_media(cluster):
    # No media section here: topology hiding arms the failure route itself.
    lab, _ = cluster
    bob, alice = UserAgent(lab, "u1020"), UserAgent(lab, "u1021")
    try:
        assert bob.register() == 200
        answering = bob.answer_in_background(sdp(40000), status=486)
        call = alice.call("u1020", sdp(40002))
        assert call.reply is not None and call.reply.status == 486, call.reply
        answering.done.wait(5)
    finally:
        alice.close()
        bob.close()
    dialogs = [
        key
        for key in lab.redis.scan_iter("d:z:*")
        if lab.redis.hget(key, "a_callid") == call.call_id
    ]
    assert len(dialogs) == 3, dialogs
    assert all(0 < lab.redis.ttl(key) <= ENDED_DIALOG_LIFETIME_S for key in dialogs)
