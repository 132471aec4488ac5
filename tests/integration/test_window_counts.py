"""Window counts merged across nodes in batches, against a real Redis.

Two nodes are two WindowCounts, each on its own counters (what an htable is
to one Kamailio), sharing one redis-server.  The clock is the test's, so
windows open and close when the test says.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from sipshield.core.node_counters import ProcessCounters
from sipshield.core.state import RedisSettings, SharedState, StateUnavailable
from sipshield.core.window_counts import WindowCounts
from sipshield.lab.net import free_port

pytestmark = pytest.mark.integration

WINDOW_S = 10


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0  # the start of window 100000

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_port(tmp_path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


def node(port: int, clock: Clock) -> tuple[WindowCounts, SharedState]:
    state = SharedState(RedisSettings(url=f"redis://127.0.0.1:{port}/0", retry_interval_s=0.01))
    return WindowCounts(ProcessCounters(), "flood", WINDOW_S, clock=clock), state


def test_a_node_counts_its_own_requests_exactly_and_learns_the_others_at_the_merge(redis_port):
    clock = Clock()
    (a, state_a), (b, state_b) = node(redis_port, clock), node(redis_port, clock)
    assert [a.count("invite:192.0.2.7") for _ in range(4)] == [1, 2, 3, 4]
    # B has not heard of A's requests: the bound is one merge interval.
    assert b.count("invite:192.0.2.7") == 1
    assert a.merge(state_a) == {"invite:192.0.2.7": 4}
    assert b.merge(state_b) == {"invite:192.0.2.7": 5}
    assert b.count("invite:192.0.2.7") == 6  # 4 on A, 2 on B
    assert a.merge(state_a) == {"invite:192.0.2.7": 5}
    assert a.count("invite:192.0.2.7") == 6
    # Another source, another count.
    assert a.count("invite:192.0.2.8") == 1
    assert redis.Redis(port=redis_port).get("sipshield:flood:invite:192.0.2.7:100000") == b"5"


def test_merging_twice_pushes_each_request_once(redis_port):
    clock = Clock()
    a, state = node(redis_port, clock)
    for _ in range(3):
        a.count("register:192.0.2.9")
    a.merge(state)
    a.merge(state)
    a.count("register:192.0.2.9")
    assert a.merge(state) == {"register:192.0.2.9": 4}


def test_a_closed_window_is_pushed_one_last_time_then_forgotten(redis_port):
    clock = Clock()
    a, state = node(redis_port, clock)
    a.count("options:192.0.2.1")
    a.merge(state)
    a.count("options:192.0.2.1")  # counted, not merged, when the window closes
    clock.now += WINDOW_S
    assert a.count("options:192.0.2.1") == 1, "a new window starts from zero"
    assert a.merge(state) == {"options:192.0.2.1": 1}
    stored = redis.Redis(port=redis_port)
    assert stored.get("sipshield:flood:options:192.0.2.1:100000") == b"2"
    assert 0 < stored.ttl("sipshield:flood:options:192.0.2.1:100000") <= 2 * WINDOW_S
    assert sorted(key for key, _ in a.node.items()) == [
        "c|100001|options:192.0.2.1",
        "o|100001|options:192.0.2.1",
    ]


def test_while_redis_is_down_the_node_keeps_counting_and_merges_afterwards(redis_port):
    clock = Clock()
    a, state = node(redis_port, clock)
    a.count("invite:192.0.2.3")
    a.merge(state)
    dead = SharedState(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    a.count("invite:192.0.2.3")
    with pytest.raises(StateUnavailable):
        a.merge(dead)
    assert a.count("invite:192.0.2.3") == 3, "the node's own count goes on"
    assert a.merge(state) == {"invite:192.0.2.3": 3}, "nothing counted meanwhile is lost"
