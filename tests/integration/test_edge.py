"""The protected edge works: OPTIONS, registration with digest auth, calls, PBX isolation."""

from __future__ import annotations

import pytest

from sipshield.lab.net import free_port
from sipshield.lab.sip_probe import send_request
from sipshield.lab.sip_ua import RtpPeer, UserAgent, sdp
from tests.integration.lab_fixture import RunningLab

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_sbc_answers_options(lab: RunningLab, transport: str):
    assert lab.options(transport) == 200


def test_options_scenario_with_sipp(lab: RunningLab):
    from sipshield.lab.sipp import run_sipp

    result = run_sipp("options", lab.sip_target(), keys={"domain": lab.domain}, calls=3, rate=10)
    assert result.ok, result.explain()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_with_digest_auth_through_the_sbc(lab: RunningLab, transport: str):
    result = lab.register("alice", transport=transport)
    assert result.ok, result.explain()


def test_wrong_password_is_refused_by_the_pbx(lab: RunningLab):
    carol = UserAgent(lab, "carol", "udp")
    try:
        # The PBX challenges the wrong answer again (401), never registers it ...
        assert carol.register(password="not-the-password") == 401
        # ... and registers the right one through the same SBC.
        assert carol.register() == 200
        assert carol.register(expires=0) == 200
    finally:
        carol.close()


@pytest.mark.parametrize("caller_transport", ["udp", "tcp"])
def test_call_between_two_registered_users(lab: RunningLab, caller_transport: str):
    callee_port = free_port()
    callee = lab.answer_calls("bob", callee_port)
    caller = lab.call("alice", "bob", transport=caller_transport)
    answered = callee.finish()
    assert caller.ok, caller.explain()
    assert answered.ok, answered.explain()


def test_pbx_is_reachable_only_through_the_sbc(lab: RunningLab):
    host, _, port = lab.info["pbx"]["udp"].rpartition(":")
    assert send_request((host, int(port)), timeout=1.0) is None
    assert "not the SBC" in lab.log("pbx")


@pytest.mark.parametrize(
    ("transport", "caller_user", "callee_user"),
    [("udp", "u1030", "u1031"), ("tls", "u1032", "u1033")],
)
def test_a_call_between_gruu_contacts_reaches_both_ends(
    lab: RunningLab, transport: str, caller_user: str, callee_user: str
):
    # linphone uses the GRUU the PBX's registrar grants as its Contact:
    # sip:USER@sipshield.lab;gr=...  The lab domain does not resolve, so
    # in-dialog requests towards it must be routed by the SBC, not by DNS.
    callee = UserAgent(lab, callee_user, transport, ip="127.0.0.73", gruu=True)
    assert callee.register() == 200
    caller = UserAgent(lab, caller_user, transport, ip="127.0.0.74", gruu=True)
    answering = callee.answer_in_background(sdp(RtpPeer().port))
    call = caller.call(callee_user, sdp(RtpPeer().port))
    assert call.reply is not None and call.reply.status == 200, call.reply
    assert ";gr=urn:uuid:" in call.reply.header("Contact")
    assert answering.acked.wait(5), "the ACK towards the callee's GRUU was lost"
    assert call.bye() == 200
    assert answering.done.wait(5) and answering.error is None
    # The other way: the callee hangs up a second call towards the caller's GRUU.
    answering = callee.answer_in_background(sdp(RtpPeer().port))
    call = caller.call(callee_user, sdp(RtpPeer().port))
    assert call.reply is not None and call.reply.status == 200, call.reply
    assert answering.acked.wait(5)
    callee.send(answering.bye())
    bye = caller.receive()
    assert bye.method == "BYE" and bye.header("Call-ID") == call.call_id
    assert "could not resolve" not in lab.log("sbc")
    assert not [e for e in lab.events() if e.get("call_id") == call.call_id]
    for ua in (callee, caller):
        ua.close()
