"""The metrics say when Redis is down, and count the events that waited for it.

Redis is killed under the real SBC: ``sipshield_redis_up`` drops to 0, a
flood refused meanwhile (flood counts per node while Redis is down) raises
events that cannot reach the stream, and ``sipshield_events_buffered_total``
moves by exactly the number of them the event file holds.  Redis comes back:
the gauge returns to 1 and the buffered events reach the stream.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.lab_fixture import RunningLab, lab_with_policy
from tests.integration.metrics_scrape import moved, value, wait_for
from tests.integration.test_redis_outage import kill_redis, restart_redis

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
redis: {on_failure: open, timeout_ms: 100, retry_interval_s: 1}
modules:
  - {name: flood, window_s: 60, limits: {options: 2}, response: reject}
"""
FLOODER = "127.0.0.61"


@pytest.fixture
def lab(tmp_path):
    with lab_with_policy(tmp_path, POLICY) as running:
        yield running


def test_redis_outage_shows_in_the_gauges_and_the_buffered_events(lab: RunningLab):
    assert wait_for(lab, lambda now: value(now, "sipshield_redis_up") == 1)
    kill_redis(lab)
    down = wait_for(lab, lambda now: value(now, "sipshield_redis_up") == 0)
    assert value(down, "sipshield_redis_up") == 0
    events_before = len(lab.events())

    assert [lab.options(source_ip=FLOODER) for _ in range(4)] == [200, 200, 503, 503]
    refused = [e for e in lab.events()[events_before:] if e["module"] == "flood"]
    assert len(refused) == 2
    after = wait_for(
        lab,
        lambda now: (
            value(now, "sipshield_events_buffered_total")
            - value(down, "sipshield_events_buffered_total")
            >= 2
        ),
    )
    changes = moved(down, after)
    assert changes["sipshield_events_buffered_total{}"] == 2
    assert changes["sipshield_verdicts_total{action=reject,mode=enforce,module=flood}"] == 2
    assert "sipshield_events_lost_total{}" not in changes

    restart_redis(lab)
    up = wait_for(lab, lambda now: value(now, "sipshield_redis_up") == 1)
    assert value(up, "sipshield_redis_up") == 1
    assert value(up, "sipshield_redis_rtt_seconds") > 0
    # The next request's worker pushes what it buffered (the flooder's worker
    # may be the other one: each sends a request until both have pushed).
    deadline = time.monotonic() + 10
    streamed: set[str] = set()
    wanted = {e["call_id"] for e in refused}
    while not wanted <= streamed and time.monotonic() < deadline:
        lab.options(source_ip="127.0.0.62")
        streamed = {
            json.loads(fields["event"])["call_id"]
            for _, fields in lab.redis.xrange("sipshield:events")
        }
    assert wanted <= streamed
