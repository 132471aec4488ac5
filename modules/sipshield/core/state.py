"""Shared state in Redis: namespaced keys, a timeout on every call, outage handling.

Every Kamailio worker has its own :class:`SharedState`; the connection is made
lazily in the worker (never at import time, never inherited across a fork).

When Redis stops answering, the first failing call logs the outage once and
raises :class:`StateUnavailable`; for ``retry_interval_s`` afterwards calls
fail at once instead of each paying the timeout, then one call probes again.
The first success after an outage logs the recovery.  Callers decide what an
outage means for a request (the policy's ``redis.on_failure``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.backoff import NoBackoff
from redis.retry import Retry

from sipshield.core.decisions import DecisionStore
from sipshield.core.module import FailureMode
from sipshield.core.node_counters import NodeCounters
from sipshield.core.redis_connection import connect, safe_url

log = logging.getLogger("sipshield.core.state")

T = TypeVar("T")


class RedisSettings(BaseModel):
    """The policy's ``redis:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "redis://127.0.0.1:6379/0"
    # Every key sipshield writes starts with this, so one Redis can serve
    # several deployments.
    key_prefix: str = "sipshield"
    # Applies to every call: a slow Redis must never stall SIP processing.
    timeout_ms: int = Field(default=100, gt=0, le=5000)
    # Requests that need Redis while it is unreachable: "open" serves them
    # without the checks that need Redis, "closed" answers 503.
    on_failure: FailureMode = "open"
    # After a failure, how long to stop trying (and paying the timeout).
    retry_interval_s: float = Field(default=1.0, gt=0, le=300)
    # Redis Sentinel: each sentinel's "host:port".  The URL then names only
    # the database, the ACL user and password and TLS (rediss://); the master
    # is the one the sentinels call ``service``.
    sentinels: tuple[str, ...] = ()
    service: str = "sipshield"
    # The sentinels' own password (their requirepass), when they have one.
    sentinel_password: str | None = None
    # CA file that signs the Redis server's certificate (rediss:// URLs).
    tls_ca: str | None = None
    # A ban is written to the master and then waited on (WAIT) until this many
    # replicas hold it, so that a failover right after loses none.
    replica_acks: int = Field(default=0, ge=0, le=8)

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, sentinels: tuple[str, ...]) -> tuple[str, ...]:
        for address in sentinels:
            host, colon, port = address.rpartition(":")
            if not colon or not host or not port.isdigit():
                raise ValueError(f"a sentinel is host:port, not {address!r}")
        return sentinels


class StateUnavailable(Exception):
    """Redis could not be reached, or did not answer in time."""


class SharedState:
    def __init__(
        self,
        settings: RedisSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._client: redis.Redis | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._scripts: dict[str, Any] = {}
        # Writes whose answer nobody waits for, sent together by flush_deferred().
        self._deferred: list[Callable[[Any], None]] = []
        # The ban decisions, attached by whoever builds the store (the handler,
        # the CLI): modules reach them through the handle they are given.
        self.decisions: DecisionStore | None = None
        # Counters every process of this node shares (attached by the KEMI
        # handler: Kamailio's shared memory); None outside Kamailio.
        self.node: NodeCounters | None = None

    # -- keys -----------------------------------------------------------------
    def key(self, *parts: str | int) -> str:
        return ":".join((self.settings.key_prefix, *map(str, parts)))

    # -- connection -----------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            timeout = self.settings.timeout_ms / 1000
            # Retrying inside redis-py would multiply the time a SIP request
            # waits on a dead Redis; the circuit breaker here retries instead.
            self._client = connect(self.settings, timeout, retry=Retry(NoBackoff(), 0))
        return self._client

    def reset(self) -> None:
        """Forget the connection (after a fork, in Kamailio's child_init)."""
        self._client = None
        self._scripts = {}
        if self.decisions is not None:
            self.decisions.reset()

    @property
    def available(self) -> bool:
        return self._down_since is None

    def available_for_retry(self) -> bool:
        """False while a recent failure says not to try yet."""
        return self._down_since is None or self._clock() >= self._retry_at

    def run(self, operation: Callable[[redis.Redis], T]) -> T:
        """Run one Redis operation under the outage policy."""
        now = self._clock()
        if self._down_since is not None and now < self._retry_at:
            raise StateUnavailable("redis is down (waiting before the next try)")
        try:
            result = operation(self.client)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if self._down_since is None:
                self._down_since = now
                log.error(
                    "redis unreachable at %s: %s; requests that need it now fail %s",
                    self._safe_url(),
                    exc,
                    self.settings.on_failure,
                )
            self._retry_at = now + self.settings.retry_interval_s
            raise StateUnavailable(str(exc)) from exc
        if self._down_since is not None:
            log.warning(
                "redis reachable again at %s after %.1fs",
                self._safe_url(),
                now - self._down_since,
            )
            self._down_since = None
        return result

    def defer(self, write: Callable[[Any], None]) -> None:
        """Queue ``write`` (it adds commands to a pipeline) for :meth:`flush_deferred`.

        For updates nothing waits on: the modules observing one reply each
        reset their counters, and one round trip carries them all.
        """
        self._deferred.append(write)

    def flush_deferred(self) -> None:
        """Send the queued writes in one pipeline; lost (and logged once) when Redis is down."""
        writes, self._deferred = self._deferred, []
        if not writes:
            return

        def operation(client: redis.Redis) -> None:
            pipe = client.pipeline(transaction=False)
            for write in writes:
                write(pipe)
            pipe.execute()

        with contextlib.suppress(StateUnavailable):
            self.run(operation)

    def _safe_url(self) -> str:
        # Never log a password embedded in the URL.
        where = safe_url(self.settings.url)
        if self.settings.sentinels:
            where += f" (master {self.settings.service!r} of sentinels {self.settings.sentinels})"
        return where

    def script(self, source: str, keys: list[str], args: list[str | int]) -> Any:
        """Run a Lua script (EVALSHA, loaded on first use): atomic, one round trip.

        Cheaper in the worker than a MULTI pipeline, which redis-py builds
        command by command in Python.
        """
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return self.run(lambda client: script(keys=keys, args=args, client=client))
