"""Calls out: a lab user dials a number, the PBX sends it back through the SBC, and the
SBC relays it to the lab's carrier trunk, with the PBX's assertion of who called."""

from __future__ import annotations

import re
import time

import pytest

from sipshield.lab.sip_ua import RtpPeer, UserAgent, sdp
from sipshield.lab.sipp import run_sipp
from tests.integration.lab_fixture import RunningLab

pytestmark = pytest.mark.integration

LONDON = "+442071234567"


def _carrier_line(lab: RunningLab, method: str, call_id: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = lab.carrier_received(method, call_id)
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError(
        f"the carrier got no {method} for {call_id}:\n{lab.log('carrier')[-2000:]}"
    )


def test_a_registered_user_calls_a_number_through_the_carrier(lab: RunningLab):
    alice, media = UserAgent(lab, "alice"), RtpPeer()
    try:
        assert alice.register() == 200
        # A phone's own claim of identity never leaves: the PBX asserts the account.
        forged = [("P-Asserted-Identity", "<sip:ceo@sipshield.lab>")]
        call = alice.call(LONDON, sdp(media.port), extra=forged)
        assert call.reply is not None and call.reply.status == 200, call.reply
        invite = _carrier_line(lab, "INVITE", call.call_id)
        assert f"INVITE sip:{LONDON}@{lab.domain} " in invite
        assert " pai=<sip:alice@sipshield.lab> " in invite, invite
        assert call.bye() == 200
        _carrier_line(lab, "BYE", call.call_id)
    finally:
        alice.close()
        media.close()


@pytest.mark.parametrize("number", ["00442071234567", "09001234567", "19005551234"])
def test_national_and_international_dialling_forms_reach_the_carrier(lab: RunningLab, number):
    result = run_sipp(
        "call_uac",
        lab.sip_target(),
        service=number,
        auth=("bob", lab.password("bob")),
        keys={"domain": lab.domain, "caller": "bob"},
    )
    assert result.ok, result.explain()
    invites = re.findall(
        rf"carrier: received INVITE sip:{re.escape(number)}@\S+ call-id=(\S+) pai=(\S+)",
        lab.log("carrier"),
    )
    assert invites and {pai for _, pai in invites} == {"<sip:bob@sipshield.lab>"}
    assert lab.carrier_received("BYE", invites[-1][0])


def test_a_call_to_a_number_without_credentials_never_reaches_the_carrier(lab: RunningLab):
    number = "+442079999999"
    result = run_sipp(
        "call_uac_noauth",
        lab.sip_target(),
        service=number,
        keys={"domain": lab.domain, "caller": "carol"},
        calls=1,
    )
    assert not result.ok
    assert f"received INVITE sip:{number}@" not in lab.log("carrier")
    assert f"outbound INVITE sip:{number}@" not in lab.log("pbx")


def test_the_example_policy_reports_toll_fraud_without_refusing(lab: RunningLab):
    """toll_fraud is in monitor mode in the example policy: three premium calls at once
    (two allowed in progress; at night none) are all answered, and reported."""
    phones = [UserAgent(lab, "carol") for _ in range(3)]
    media = RtpPeer()
    try:
        calls = [phone.call(f"+44909879020{n}", sdp(media.port)) for n, phone in enumerate(phones)]
        assert [call.reply.status for call in calls] == [200, 200, 200]
        event = lab.wait_for_event(module="toll_fraud", call_id=calls[2].call_id)
        assert (event["action"], event["mode"]) == ("reject", "monitor")
        assert "toll fraud: carol@sipshield.lab to +449098790202 (premium)" in event["reason"]
        assert all(call.bye() == 200 for call in calls)
    finally:
        for phone in phones:
            phone.close()
        media.close()
