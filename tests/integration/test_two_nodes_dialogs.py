"""Two SBC nodes and one dialog: any node ends it when the request is legitimate.

A cluster shares the dialog-token key file (tokens are stateless: no node
stores anything per dialog) and writes one address in every Record-Route
that all nodes answer for.  In production that is a VIP or a shared name;
here it is node A's own address, which node B aliases (define
CLUSTER_ADDRESS) and record-routes with (policy ``record_route_address``),
as if the VIP had moved to B or a load balancer sent it the request.  The lab
PBX still answers only its SBCs: it is restarted with both nodes' sources
(define SBC_NODES).

Shown: a call set up through A is ended through B (and the callee sees the
BYE); a forged BYE from 127.0.0.66 with the right Call-ID, tags and Route set
gets 403 on A and on B; a dialog set up through B names the cluster address
and is ended through A.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sipshield.lab.sip_probe import send_request
from sipshield.lab.sip_ua import UserAgent, sdp
from tests.integration.lab_fixture import RunningLab
from tests.integration.two_nodes import Node, two_node_lab

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.66"
POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: validation}
  - {name: dialog_guard}
  - {name: cancel_guard}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, Node]]:
    directory = tmp_path_factory.mktemp("two-node-dialogs")
    with two_node_lab(directory, POLICY, shared_address=True) as cluster:
        yield cluster


def call_through(lab: RunningLab, sbc: tuple[str, int], callee: str):
    """``callee`` registers (through node A), alice calls it through ``sbc``; answered."""
    bob = UserAgent(lab, callee)
    assert bob.register() == 200
    alice = UserAgent(lab, "alice")
    alice.sbc = sbc
    answering = bob.answer_in_background(sdp(40000))
    call = alice.call(callee, sdp(40002))
    assert call.reply is not None and call.reply.status == 200, call.reply
    answering.wait()
    return alice, bob, call, answering


def forged_bye(call, cseq: int) -> bytes:
    """The caller's own BYE, sent from the attacker's address (Via included)."""
    bye = call._in_dialog("BYE", cseq)
    bye.headers = [
        (name, f"SIP/2.0/UDP {ATTACKER}:5060;branch=z9hG4bKforged{cseq};rport")
        if name == "Via"
        else (name, value)
        for name, value in bye.headers
    ]
    return bye.to_bytes()


def pbx_received(lab: RunningLab, method: str, call_id: str, node: Node) -> bool:
    """The PBX logged ``method`` of the dialog arriving from ``node``."""
    return any(
        f"from 127.0.0.1:{node.port} call-id={call_id}" in line
        for line in lab.log("pbx").splitlines()
        if f"pbx: received {method} " in line
    )


def test_a_dialog_set_up_through_node_a_is_ended_through_node_b(cluster):
    lab, b = cluster
    alice, bob, call, answering = call_through(lab, lab.sip(), "bob")
    try:
        alice.sbc = ("127.0.0.1", b.port)
        assert call.bye() == 200
        # The callee saw the BYE (and answered it): its answering thread is done.
        assert answering.done.wait(5) and answering.error is None, answering.error
        assert pbx_received(lab, "BYE", call.call_id, b)
    finally:
        alice.close()
        bob.close()


def test_a_forged_bye_is_refused_on_either_node_and_the_real_one_ends_the_call(cluster):
    lab, b = cluster
    alice, bob, call, answering = call_through(lab, lab.sip(), "carol")
    try:
        for node, cseq in ((lab.sip(), 50), (("127.0.0.1", b.port), 51)):
            status = send_request(node, forged_bye(call, cseq), source_ip=ATTACKER)
            assert status == 403, node
        assert not answering.done.wait(0.5), "the forged BYE reached the callee"
        alice.sbc = ("127.0.0.1", b.port)
        assert call.bye() == 200
        assert answering.done.wait(5) and answering.error is None, answering.error
    finally:
        alice.close()
        bob.close()
    refused = [e for e in lab.events() if e.get("call_id") == call.call_id]
    assert sorted(e["node"] for e in refused) == sorted([lab_node(lab), "node-b"])
    assert all(e["module"] == "dialog_guard" and e["src"].startswith(ATTACKER) for e in refused)


def test_a_dialog_set_up_through_node_b_names_the_cluster_address(cluster):
    lab, b = cluster
    alice, bob, call, answering = call_through(lab, ("127.0.0.1", b.port), "dave")
    try:
        assert answering.invite is not None
        sbc_entries = [
            route
            for route in answering.invite.all("Record-Route")
            for route in route.split(",")
            if "shd=" in route
        ]
        assert len(sbc_entries) == 2, answering.invite.all("Record-Route")
        assert all(f"sip:{lab.sip_target()};" in entry for entry in sbc_entries), sbc_entries
        alice.sbc = lab.sip()
        assert call.bye() == 200
        assert answering.done.wait(5) and answering.error is None, answering.error
    finally:
        alice.close()
        bob.close()


def lab_node(lab: RunningLab) -> str:
    return yaml.safe_load(Path(lab.info["policy"]).read_text())["node"]
