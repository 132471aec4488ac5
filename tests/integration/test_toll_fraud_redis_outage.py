"""toll_fraud while Redis is down: calls go on unchecked (``redis.on_failure: open``),
with the outage logged, and a call that ended during the outage stops counting once
Redis is back, instead of holding the account's place until ``max_call_s``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sipshield.lab.sip_ua import UserAgent, sdp
from tests.integration.lab_fixture import RunningLab, lab_with_policy
from tests.integration.test_redis_outage import kill_redis, restart_redis

pytestmark = pytest.mark.integration

ACCOUNT = "alice@sipshield.lab"
POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
redis: {on_failure: open, timeout_ms: 100, retry_interval_s: 1}
modules:
  - name: toll_fraud
    business_hours: {days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59"}
    limits:
      national: {concurrent: 1}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with lab_with_policy(tmp_path_factory.mktemp("toll-fraud-outage"), POLICY) as running:
        yield running


def test_calls_go_on_in_an_outage_and_ends_missed_are_written_after(lab: RunningLab):
    first, second = UserAgent(lab, "alice"), UserAgent(lab, "alice")
    try:
        up = first.call("+442071234567", sdp(40000))
        assert up.reply.status == 200
        # Written for good before Redis dies (its append-only file syncs each second).
        lab.redis.bgrewriteaof()
        deadline = time.monotonic() + 10
        while lab.redis.info("persistence")["aof_rewrite_in_progress"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        kill_redis(lab)
        # Unchecked, not refused: the limit would have refused this second call.
        unchecked = second.call("+442071234568", sdp(40002))
        assert unchecked.reply.status == 200
        assert up.bye() == 200 and unchecked.bye() == 200
        assert "redis unreachable" in lab.log("sbc")
        restart_redis(lab)
        assert lab.redis.hlen(f"sipshield:tf:active:{ACCOUNT}") == 1  # the first call's
        # The worker that saw its BYE writes the end before judging its next request:
        # the account's place comes back (a worker at a time, whichever takes the call;
        # for a second after Redis is back a worker still serves calls unchecked).
        deadline = time.monotonic() + 20
        while True:
            again = second.call("+442071234568", sdp(40002))
            if again.reply.status == 200:
                active = lab.redis.hgetall(f"sipshield:tf:active:{ACCOUNT}")
                assert again.bye() == 200
                if again.call_id in active:  # checked and counted, not served unchecked
                    assert set(active) == {again.call_id}, active
                    break
            else:
                assert again.reply.status == 403, again.reply
            assert time.monotonic() < deadline, "the end missed in the outage was never written"
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while active := lab.redis.hgetall(f"sipshield:tf:active:{ACCOUNT}"):
            assert time.monotonic() < deadline, active
            time.sleep(0.05)
    finally:
        first.close()
        second.close()
