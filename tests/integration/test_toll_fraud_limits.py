"""toll_fraud's velocity and spend rules on one SBC: test calls to a range block that
range for the account (not for others, not other ranges); a spend ceiling counts the
calls in progress with their elapsed time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipshield.lab.sip_ua import UserAgent, sdp
from tests.integration.lab_fixture import RunningLab, lab_with_policy

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - name: toll_fraud
    business_hours: {days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59"}
    velocity: {prefix_digits: 7, short_call_s: 30, distinct_numbers: 3, window_s: 600}
    spend: {rate_deck: {"+4420": 600.0}}
    accounts:
      carol@sipshield.lab: {spend_ceiling_per_hour: 5}
    high_risk_file: HIGH_RISK_FILE
    limits:
      high_risk: {per_minute: 0}
    refuse: {code: 503, phrase: Destination Barred}
"""
# Three Paris numbers of one range (+3314268), one more of it, and one elsewhere.
PROBED = ["+33142685301", "+33142685302", "+33142685303"]
SAME_RANGE, OTHER_RANGE = "+33142685399", "+4930123456"
BERLIN = "+4930123457"


@pytest.fixture(scope="module")
def high_risk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("toll-fraud-prefixes") / "high-risk.txt"
    path.write_text("# satellite ranges\n+8816\n")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, high_risk: Path) -> Iterator[RunningLab]:
    policy = POLICY.replace("HIGH_RISK_FILE", str(high_risk))
    with lab_with_policy(tmp_path_factory.mktemp("toll-fraud-limits"), policy) as running:
        yield running


def status(ua: UserAgent, number: str) -> int:
    """Call ``number``; hang up if answered; the INVITE's final status."""
    call = ua.call(number, sdp(40000))
    if call.reply.status == 200:
        assert call.bye() == 200
    return call.reply.status


def test_short_calls_to_numbers_of_one_range_block_it_for_that_account(lab: RunningLab):
    alice, bob = UserAgent(lab, "alice"), UserAgent(lab, "bob")
    try:
        for number in PROBED[:2]:
            assert status(alice, number) == 200
        assert status(alice, SAME_RANGE) == 200  # two numbers probed: not yet
        blocked = lab.wait_for_event(module="toll_fraud", action="alert")
        assert "called 3 numbers of +3314268" in blocked["reason"]
        assert "range blocked for alice@sipshield.lab" in blocked["reason"]
        call = alice.call(PROBED[2], sdp(40000))
        # The SBC answers the PBX 503; the PBX, a proxy, never relays a 503 as such
        # (RFC 3261 16.7): the phone gets 500.
        assert call.reply.status == 500
        refusal = lab.wait_for_event(module="toll_fraud", action="reject", call_id=call.call_id)
        assert "range +3314268 blocked after test calls (velocity)" in refusal["reason"]
        # Another range, and another account, are not affected.
        assert status(alice, OTHER_RANGE) == 200
        assert status(bob, PROBED[2]) == 200
    finally:
        alice.close()
        bob.close()


def test_the_spend_ceiling_counts_a_call_in_progress_and_refuses_new_calls(lab: RunningLab):
    carol, again, dave = UserAgent(lab, "carol"), UserAgent(lab, "carol"), UserAgent(lab, "dave")
    try:
        # +4420 costs 600 a minute (10 a second); carol may spend 5 an hour.
        expensive = carol.call("+442071234500", sdp(40000))
        assert expensive.reply.status == 200
        deadline = time.monotonic() + 20
        while (answer := status(again, "+33142685300")) == 200:
            assert time.monotonic() < deadline, "the call in progress never reached the ceiling"
            time.sleep(0.1)
        assert answer == 500
        refusal = lab.wait_for_event(module="toll_fraud", action="reject", user="carol")
        assert "reached the ceiling 5.0" in refusal["reason"]
        # Ended, its cost stays spent for the hour.
        assert expensive.bye() == 200
        assert status(again, "+33142685300") == 500
        assert status(dave, "+442071234501") == 200  # dave has no ceiling
    finally:
        carol.close()
        again.close()
        dave.close()


def test_a_prefix_added_to_the_high_risk_file_applies_without_a_restart(lab, high_risk):
    dave, bob = UserAgent(lab, "dave"), UserAgent(lab, "bob")
    try:
        assert status(dave, BERLIN) == 200  # international, allowed
        high_risk.write_text("# satellite ranges\n+8816\n# Berlin, for the test\n+49301\n")
        os.utime(high_risk, ns=(0, time.time_ns() + 10**9))
        deadline = time.monotonic() + 10
        while (answer := status(dave, BERLIN)) == 200:
            assert time.monotonic() < deadline, "the SBC never read the changed file"
            time.sleep(0.2)
        assert answer == 500  # the SBC's 503, relayed by the PBX as 500
        refusal = lab.wait_for_event(module="toll_fraud", action="reject", user="dave")
        assert f"to {BERLIN} (high_risk)" in refusal["reason"]
        assert status(bob, "+33145678901") == 200  # other destinations are not touched
    finally:
        dave.close()
        bob.close()
