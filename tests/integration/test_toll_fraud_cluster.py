"""A call counted by toll_fraud ends correctly whichever node sees its end.

Two SBC nodes answer for one cluster address (the shared Record-Route), so a
call's in-dialog requests may reach either.  A call is admitted by node B; its
BYE is sent to node B, which relays it to the PBX, which sends it on to the
cluster address, node A: both nodes see the end, only one of them admitted the
call.  The count goes to zero once, never below: with one call in progress
allowed, the account's next call is admitted and counted as exactly one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sipshield.lab.sip_ua import UserAgent, sdp
from tests.integration.lab_fixture import RunningLab
from tests.integration.two_nodes import Node, two_node_lab

pytestmark = pytest.mark.integration

ACCOUNT = "alice@sipshield.lab"
POLICY = """\
node: node-a
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - name: toll_fraud
    business_hours: {days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59"}
    limits:
      national: {concurrent: 1}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, Node]]:
    directory = tmp_path_factory.mktemp("toll-fraud-cluster")
    with two_node_lab(directory, POLICY, shared_address=True) as cluster:
        yield cluster


def in_progress(lab: RunningLab) -> int:
    return lab.redis.hlen(f"sipshield:tf:active:{ACCOUNT}")


def test_a_call_admitted_by_one_node_and_ended_through_both_counts_down_once(cluster):
    lab, node = cluster
    first, second = UserAgent(lab, "alice"), UserAgent(lab, "alice")
    first.sbc = second.sbc = ("127.0.0.1", node.port)
    try:
        call = first.call("+442071234567", sdp(40000))
        assert call.reply.status == 200
        # Node B admitted it and sent it to the carrier.
        (invite,) = lab.carrier_received("INVITE", call.call_id)
        assert invite.endswith(f" src=127.0.0.1:{node.port}"), invite
        assert in_progress(lab) == 1
        # Node A refuses the account's second call: the count is the cluster's.
        second.sbc = lab.sip()
        assert second.call("+442071234568", sdp(40002)).reply.status == 403
        assert call.bye() == 200
        deadline = time.monotonic() + 10
        while in_progress(lab):
            assert time.monotonic() < deadline, lab.redis.hgetall(f"sipshield:tf:active:{ACCOUNT}")
            time.sleep(0.05)
        # Node A, which never admitted the call, relayed its BYE to the carrier.
        (bye,) = lab.carrier_received("BYE", call.call_id)
        assert bye.endswith(f" src={lab.sip_target()}"), bye
        # The count is zero, not less: the next call is admitted and counts as one.
        again = second.call("+442071234568", sdp(40002))
        assert again.reply.status == 200
        assert in_progress(lab) == 1
        assert again.bye() == 200
    finally:
        first.close()
        second.close()
