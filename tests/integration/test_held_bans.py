"""Bans decided while Redis is down: enforced at once, stored once it is back, with
their own expiry (not one counted from the recovery), each once.

A real redis-server is started on a port only after the bans were decided;
the clock is the test's, so the TTLs are exact.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from sipshield.core.bans import BanSettings, BanStore
from sipshield.core.state import RedisSettings, SharedState
from sipshield.lab.net import free_port

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def port() -> Iterator[int]:
    chosen = free_port()
    yield chosen
    subprocess.run(["redis-cli", "-p", str(chosen), "shutdown", "nosave"], capture_output=True)


def start_redis(port: int, tmp_path) -> redis.Redis:  # type: ignore[no-untyped-def]
    subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, decode_responses=True, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)


def test_a_held_ban_is_enforced_then_stored_with_its_own_expiry(port: int, tmp_path) -> None:
    clock = Clock()
    state = SharedState(RedisSettings(url=f"redis://127.0.0.1:{port}/0", retry_interval_s=1), clock)
    store = BanStore(state, BanSettings(base_ttl_s=600), clock=clock)

    first = store.add("192.0.2.10", "flood", "flood")
    again = store.add("192.0.2.10", "flood", "flood")  # the same source, same outage
    assert first is not None and not first.stored and again is not None
    assert store.banned("192.0.2.10"), "a held ban is enforced by the worker at once"

    client = start_redis(port, tmp_path)
    clock.now += 200  # Redis is back 200 s later
    assert store.banned("192.0.2.10")  # this request's check writes the held ban
    key = "sipshield:ban:ip:192.0.2.10"
    stored = client.hgetall(key)
    assert stored["module"] == "flood"
    assert float(stored["expires"]) == pytest.approx(first.expires, abs=1)
    assert 390 <= client.ttl(key) <= 400, "the TTL left, not a fresh 600 s"
    assert client.get("sipshield:offenses:192.0.2.10") == "1", "one offence, written once"


def test_a_held_ban_that_expired_during_the_outage_is_not_stored(port: int, tmp_path) -> None:
    clock = Clock()
    state = SharedState(RedisSettings(url=f"redis://127.0.0.1:{port}/0", retry_interval_s=1), clock)
    store = BanStore(state, BanSettings(base_ttl_s=60), clock=clock)
    store.add("192.0.2.11", "flood", "flood")
    client = start_redis(port, tmp_path)
    clock.now += 120
    assert not store.banned("192.0.2.11")
    assert not client.exists("sipshield:ban:ip:192.0.2.11")


def test_the_ban_index_forgets_expired_bans_when_a_new_one_is_made(port: int, tmp_path) -> None:
    # Found by make soak: the index kept one entry per ban ever made.
    clock = Clock()
    client = start_redis(port, tmp_path)
    state = SharedState(RedisSettings(url=f"redis://127.0.0.1:{port}/0"), clock)
    store = BanStore(state, BanSettings(base_ttl_s=60), clock=clock)
    for n in range(5):
        store.add(f"192.0.2.{20 + n}", "flood", "flood")
    clock.now += 120  # all five expired
    store.add("192.0.2.30", "flood", "flood")
    assert client.zrange("sipshield:bans", 0, -1) == ["ip:192.0.2.30"]
