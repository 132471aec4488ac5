"""Outage behaviour of the shared state, against a Redis port nobody listens on."""

import logging

import pytest

from sipshield.core.bans import BanSettings, BanStore
from sipshield.core.decisions import DecisionStore
from sipshield.core.state import RedisSettings, SharedState, StateUnavailable
from sipshield.lab.net import free_port


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_outage_is_logged_once_and_calls_fail_fast_until_the_retry(caplog):
    clock = Clock()
    port = free_port()
    state = SharedState(
        RedisSettings(url=f"redis://:secret@127.0.0.1:{port}/0", retry_interval_s=2), clock
    )
    attempts = []

    def operation(client):
        attempts.append(1)
        return client.ping()

    with caplog.at_level(logging.ERROR, logger="sipshield.core.state"):
        for _ in range(5):
            with pytest.raises(StateUnavailable):
                state.run(operation)
    assert len(attempts) == 1, "calls during the retry interval must not touch the network"
    assert not state.available
    outage_lines = [r.getMessage() for r in caplog.records]
    assert len(outage_lines) == 1
    assert "secret" not in outage_lines[0], "the password must never reach the log"
    clock.now += 2.5
    with pytest.raises(StateUnavailable):
        state.run(operation)
    assert len(attempts) == 2


def test_keys_are_namespaced():
    state = SharedState(RedisSettings(key_prefix="edge1"))
    assert state.key("flood", "invite", "192.0.2.1") == "edge1:flood:invite:192.0.2.1"


def test_the_decisions_are_attached_to_the_handle_not_built_by_it():
    state = SharedState(RedisSettings(key_prefix="edge1"))
    assert state.decisions is None
    store = BanStore(state, BanSettings())
    assert isinstance(store, DecisionStore)
    state.decisions = store
    store._pubsub, store._next_resync = object(), 99.0
    # After a fork the store subscribes and reloads again, in its own process.
    state.reset()
    assert (store._pubsub, store._next_resync) == (None, 0.0)


def test_sentinels_name_the_master_and_the_url_keeps_user_password_db_and_tls():
    from redis.sentinel import SentinelConnectionPool

    from sipshield.core.redis_connection import connect

    settings = RedisSettings(
        url="rediss://edge:pw@ignored.example:1/3",
        sentinels=("127.0.0.1:26379", "[::1]:26380"),
        service="voice",
        sentinel_password="sentinel-pw",
    )
    client = connect(settings, 0.1)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "voice"
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("edge", "pw", 3)
    assert "host" not in kwargs, "the sentinels name the master, not the URL"
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["host"] for s in sentinels] == ["127.0.0.1", "::1"]
    assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"sentinel-pw"}


@pytest.mark.parametrize("bad", ["26379", "host:", ":26379", "host:port"])
def test_a_sentinel_must_be_host_and_port(bad):
    with pytest.raises(ValueError, match="sentinel is host:port"):
        RedisSettings(sentinels=(bad,))


def test_options_in_a_sentinel_url_do_not_clash_with_sipshields():
    # Found by review: ?socket_timeout= in the URL raised a TypeError at first use.
    from sipshield.core.redis_connection import connect

    settings = RedisSettings(url="redis://u:p@x/0?socket_timeout=0.5", sentinels=("127.0.0.1:1",))
    client = connect(settings, 0.1)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.1
