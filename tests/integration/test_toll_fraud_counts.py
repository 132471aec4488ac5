"""toll_fraud counts each account's calls in progress until they end, however they end.

With one call in progress allowed per class, a second call is refused while
the first is up, and admitted again once it has ended: by BYE, CANCEL, a 4xx
or 5xx from the carrier, a 408 (no answer), or a BYE after the SBC restarted
in the middle of the call.  The count itself is read from Redis at the end:
nothing left behind.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from sipshield.lab.sip_ua import RtpPeer, UserAgent, sdp
from tests.integration.lab_fixture import RunningLab, lab_with_policy
from tests.integration.two_nodes import restart_sbc

pytestmark = pytest.mark.integration

ACCOUNT = "alice@sipshield.lab"
POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - name: toll_fraud
    time_zone: UTC
    business_hours: {days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59"}
    limits:
      national: {concurrent: 1}
      unknown: {concurrent: 1}
    # +4420 costs 600 a minute (10 a second); bob may spend 5 an hour.
    spend: {rate_deck: {"+4420": 600.0}, end_calls: true}
    accounts:
      bob@sipshield.lab: {spend_ceiling_per_hour: 5}
    refuse: {code: 403, phrase: Call Barred}
"""
LONDON, LONDON_2 = "+442071234567", "+442071234568"
RINGS, BUSY, UNAVAILABLE, SILENT = "+999180001", "+999486001", "+999503001", "+999408001"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with lab_with_policy(tmp_path_factory.mktemp("toll-fraud-counts"), POLICY) as running:
        yield running


@pytest.fixture
def phones(lab: RunningLab) -> Iterator[tuple[UserAgent, UserAgent]]:
    """Two phones of alice's (two sockets), so that two of her calls can be up at once."""
    first, second, media = UserAgent(lab, "alice"), UserAgent(lab, "alice"), RtpPeer()
    yield first, second
    first.close()
    second.close()
    media.close()


def offer() -> str:
    return sdp(40000)


def in_progress(lab: RunningLab, account: str = ACCOUNT) -> int:
    return lab.redis.hlen(f"sipshield:tf:active:{account}")


def wait_until_none_in_progress(
    lab: RunningLab, timeout: float = 10.0, account: str = ACCOUNT
) -> None:
    deadline = time.monotonic() + timeout
    while in_progress(lab, account) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_progress(lab, account) == 0, lab.redis.hgetall(f"sipshield:tf:active:{account}")


def test_a_second_call_is_refused_while_one_is_up_and_admitted_after_the_bye(lab, phones):
    first, second = phones
    up = first.call(LONDON, offer())
    assert up.reply.status == 200
    refused = second.call(LONDON_2, offer())
    assert (refused.reply.status, refused.reply.start.split(" ", 2)[2]) == (403, "Call Barred")
    assert not lab.carrier_received("INVITE", refused.call_id)
    assert up.bye() == 200
    wait_until_none_in_progress(lab)
    after = second.call(LONDON_2, offer())
    assert after.reply.status == 200
    assert after.bye() == 200
    wait_until_none_in_progress(lab)


def test_a_cancelled_call_stops_counting(lab, phones):
    first, second = phones
    ringing = first.ring(RINGS, offer())
    assert ringing.reply.status == 180
    assert second.call(BUSY, offer()).reply.status == 403  # the ringing call counts
    assert ringing.cancel().status == 487
    wait_until_none_in_progress(lab)
    assert second.call(BUSY, offer()).reply.status == 486


# A proxy never relays a 503 as such (RFC 3261 16.7): the carrier's 503 arrives as 500.
@pytest.mark.parametrize("number, status", [(BUSY, 486), (UNAVAILABLE, 500), (SILENT, 408)])
def test_a_failed_call_stops_counting(lab, phones, number, status):
    first, second = phones
    assert first.call(number, offer(), timeout=15).reply.status == status
    wait_until_none_in_progress(lab)
    # Each failure frees the place: one call at a time, again and again.
    assert second.call(number, offer(), timeout=15).reply.status == status
    wait_until_none_in_progress(lab)


def test_a_call_up_across_a_restart_of_the_sbc_stops_counting_at_its_bye(lab, phones):
    first, second = phones
    up = first.call(LONDON, offer())
    assert up.reply.status == 200
    restart_sbc(lab, signal.SIGKILL)
    # The count survived the restart: the account still has its call in progress.
    assert in_progress(lab) == 1
    assert second.call(LONDON_2, offer()).reply.status == 403
    assert up.bye() == 200
    wait_until_none_in_progress(lab)
    after = second.call(LONDON_2, offer())
    assert after.reply.status == 200
    assert after.bye() == 200
    wait_until_none_in_progress(lab)


def test_calls_in_progress_are_ended_once_the_account_passes_its_spend_ceiling(lab):
    bob, dave, bob_again = UserAgent(lab, "bob"), UserAgent(lab, "dave"), UserAgent(lab, "bob")
    try:
        steady = dave.call(LONDON_2, offer())  # dave has no ceiling
        assert steady.reply.status == 200
        expensive = bob.call(LONDON, offer())
        assert expensive.reply.status == 200
        # The dialog module ends bob's call: a BYE to him, and one to the carrier.
        bye = bob.next_request(timeout=15)
        assert (bye.method, bye.header("Call-ID")) == ("BYE", expensive.call_id)
        bob.reply(bye, 200, "OK")
        event = lab.wait_for_event(module="toll_fraud", action="end", call_id=expensive.call_id)
        assert "bob@sipshield.lab spent" in event["reason"] and "ceiling 5.0" in event["reason"]
        deadline = time.monotonic() + 10
        while not lab.carrier_received("BYE", expensive.call_id):
            assert time.monotonic() < deadline, lab.log("carrier")[-2000:]
            time.sleep(0.05)
        wait_until_none_in_progress(lab, account="bob@sipshield.lab")
        # New calls are refused: the ended call's cost stays spent for the hour.
        assert bob_again.call(RINGS, offer()).reply.status == 403
        # dave's call was never touched.
        assert steady.bye() == 200
        wait_until_none_in_progress(lab, account="dave@sipshield.lab")
    finally:
        bob.close()
        dave.close()
        bob_again.close()
