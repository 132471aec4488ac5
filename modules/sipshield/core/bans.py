"""Bans: decisions with a scope, a TTL, a reason and a hit count, shared through Redis.

A ban is stored twice in Redis, in one transaction:
- a hash ``<prefix>:ban:<scope>`` with its reason, module, creation time and
  hits, which expires with the ban;
- a member of the sorted set ``<prefix>:bans``, scored by its expiry, so a node
  loads every live ban in one round trip.

Every change is published on ``<prefix>:bans:changes``.  Each Kamailio worker
keeps the live bans in a local dict and drains that channel without blocking
before it answers "is this source banned?", so the hot path costs no Redis
round trip and a ban made on any node is enforced everywhere as soon as the
next request arrives.  Pub/sub is at-most-once, so the cache is also reloaded
every ``resync_interval_s`` and after Redis comes back.

Scopes: ``ip:<address>`` bans a source; ``user:<address>:<user>`` bans one
user from one source (brute force against one account from a busy NAT must
not lock out its neighbours); ``account:<account>`` bans an account wherever
it calls from (toll_fraud, which enforces it when the account calls out).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import select
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field

from sipshield.core.metrics import NO_METRICS, Metrics
from sipshield.core.state import StateUnavailable

log = logging.getLogger("sipshield.core.bans")

Scope = Literal["ip", "user", "account"]


class BanSettings(BaseModel):
    """How long bans last; the policy's ``bans`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # First ban of a source.
    base_ttl_s: int = Field(default=600, gt=0)
    # Each repeat offence multiplies the TTL by this ...
    escalation_factor: float = Field(default=4.0, ge=1.0)
    # ... up to this.
    max_ttl_s: int = Field(default=7 * 86400, gt=0)
    # How long an offence is remembered for escalation.
    offense_memory_s: int = Field(default=7 * 86400, gt=0)
    # How often each worker reloads every ban, in case a change message was missed.
    resync_interval_s: float = Field(default=30.0, gt=0)


@dataclass(frozen=True)
class BanRecord:
    scope: str
    reason: str
    module: str
    created: float
    expires: float
    hits: int = 0
    offense: int = 1
    # False while Redis could not take it: the worker enforces it and writes
    # it once Redis answers again (BanStore.add).
    stored: bool = True
    # True when this call made the ban (not found already made by another worker or node).
    new: bool = False

    @property
    def ttl_s(self) -> int:
        return max(0, round(self.expires - self.created))


USER_SCOPE = "user:"
ACCOUNT_SCOPE = "account:"
# How long a ban waits for its replicas (redis.replica_acks).
WAIT_TIMEOUT_MS = 200
# Bans one worker holds through an outage at most (a flood of new sources
# must not grow it without bound; the oldest are kept).
MAX_HELD_BANS = 10000
# Held bans one resync writes (the request that triggers it waits for them).
HELD_BANS_PER_RESYNC = 50


# Removes the expired bans from the index and counts the rest by scope kind,
# inside Redis: no ban is sent back.
CENSUS_SCRIPT = f"""
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local users, accounts = 0, 0
for _, scope in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(scope, 1, {len(USER_SCOPE)}) == '{USER_SCOPE}' then
    users = users + 1
  elseif string.sub(scope, 1, {len(ACCOUNT_SCOPE)}) == '{ACCOUNT_SCOPE}' then
    accounts = accounts + 1
  end
end
return {{removed, redis.call('ZCARD', KEYS[1]) - users - accounts, users, accounts}}
"""


def scope_key(ip: str, user: str = "", account: str = "") -> str:
    if account:
        return f"{ACCOUNT_SCOPE}{account}"
    return f"{USER_SCOPE}{ip}:{user}" if user else f"ip:{ip}"


# -- the change feed ------------------------------------------------------------
# Read by every worker's cache (BanStore) and by nft-sync (BanMirror), written
# by BanStore: one format, in one place.


@dataclass(frozen=True)
class BanChange:
    scope: str
    expires: float | None  # None: the ban was removed


def encode_change(scope: str, expires: float | None) -> str:
    return json.dumps({"add": scope, "expires": expires} if expires else {"remove": scope})


def decode_change(data: Any) -> BanChange:
    """One message of the change channel; ValueError when it is not one."""
    try:
        change = json.loads(data)
        if "add" in change:
            return BanChange(str(change["add"]), float(change["expires"]))
        return BanChange(str(change["remove"]), None)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a ban change: {data!r} ({exc})") from None


def live_bans(client: Any, index_key: str, now: float) -> dict[str, float]:
    """Every ban still in force, scope -> expiry, in one round trip."""
    return dict(client.zrangebyscore(index_key, now, "+inf", withscores=True))


def escalated_ttl(settings: BanSettings, offense: int) -> int:
    ttl = settings.base_ttl_s * settings.escalation_factor ** max(0, offense - 1)
    return int(min(ttl, settings.max_ttl_s))


class BanStore:
    """The Redis implementation of :class:`sipshield.core.decisions.DecisionStore`."""

    def __init__(
        self,
        state: Any,
        settings: BanSettings,
        never_ban: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.settings = settings
        self.never_ban = [ipaddress.ip_network(n, strict=False) for n in never_ban]
        self.clock = clock
        self.index_key = state.key("bans")
        self.channel = state.key("bans", "changes")
        self._cache: dict[str, float] = {}
        # Whether any cached ban is scoped to a user (kept with the cache).
        self._user_scoped = False
        self._next_resync = 0.0
        self._pubsub: Any = None
        # Bans decided while Redis was unreachable, to write when it is back:
        # (ip, reason, module, user, expires, account), oldest first.
        self._held: list[tuple[str, str, str, str, float, str]] = []

    def reset(self) -> None:
        """After a fork: resubscribe and reload in this process, on first use."""
        self._pubsub = None
        self._next_resync = 0.0

    # -- decisions --------------------------------------------------------------
    def protected(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.never_ban)

    def add(
        self,
        ip: str,
        reason: str,
        module: str,
        user: str = "",
        ttl_s: int | None = None,
        account: str = "",
    ) -> BanRecord | None:
        """Ban a source (or a user from a source, or an account from anywhere); None when
        the source may not be banned (an account ban does not depend on the source).

        Without ``ttl_s`` the TTL escalates with the source's recent offences.
        While Redis cannot take the ban, this worker enforces it at once and
        writes it when Redis answers again (``stored`` is False until then):
        a ban decided in an outage or a failover is not lost.
        """
        if not account and self.protected(ip):
            log.warning("not banning %s (%s): it is allowlisted", ip, reason)
            return None
        scope = scope_key(ip, user, account)
        now = self.clock()
        try:
            record = self.state.run(self._writer(ip, reason, module, user, ttl_s, now, account))
        except StateUnavailable:
            ttl = ttl_s or escalated_ttl(self.settings, 1)
            record = BanRecord(scope, reason, module, now, now + ttl, stored=False)
            if scope in {scope_key(held[0], held[3], held[5]) for held in self._held}:
                pass  # held already: one offence, written once
            elif len(self._held) < MAX_HELD_BANS:
                self.metrics.ban_added(scope, module)
                # Its own expiry, not one counted from when Redis is back.
                self._held.append((ip, reason, module, user, record.expires, account))
                log.warning("redis unavailable: ban of %s held in this worker", scope)
            else:
                log.error(
                    "redis unavailable and %d bans held: %s enforced here only",
                    MAX_HELD_BANS,
                    scope,
                )
        if record.new:
            self.metrics.ban_added(scope, module)
        self._cache[scope] = max(record.expires, self._cache.get(scope, 0.0))
        self._cache_changed()
        return record

    def _writer(
        self,
        ip: str,
        reason: str,
        module: str,
        user: str,
        ttl_s: int | None,
        now: float,
        account: str = "",
    ) -> Callable[[Any], BanRecord]:
        """The Redis operation that stores one ban (or finds it stored already)."""
        scope = scope_key(ip, user, account)
        # An account's offences are its own, not its address's.
        offenses_key = self.state.key("offenses", scope if account else ip)
        replicas = self.state.settings.replica_acks
        # WAIT must give up before the socket does, or a lagging replica
        # would read as an outage of the master.
        wait_ms = max(1, min(WAIT_TIMEOUT_MS, self.state.settings.timeout_ms // 2))

        def operation(client: Any) -> BanRecord:
            current = client.hgetall(self.state.key("ban", scope))
            if current and ttl_s is None:
                # Already banned (another worker or node got there first): one
                # offence must not escalate twice.
                return BanRecord(
                    scope,
                    current["reason"],
                    current["module"],
                    float(current["created"]),
                    float(current["expires"]),
                    int(current.get("hits", 0)),
                    int(current.get("offense", 1)),
                )
            offense = int(client.incr(offenses_key))
            client.expire(offenses_key, self.settings.offense_memory_s)
            ttl = ttl_s or escalated_ttl(self.settings, offense)
            record = BanRecord(scope, reason, module, now, now + ttl, 0, offense, new=True)
            pipe = client.pipeline(transaction=True)
            pipe.hset(
                self.state.key("ban", scope),
                mapping={
                    "reason": reason,
                    "module": module,
                    "created": now,
                    "expires": record.expires,
                    "hits": 0,
                    "offense": offense,
                },
            )
            pipe.expire(self.state.key("ban", scope), ttl)
            pipe.zadd(self.index_key, {scope: record.expires})
            # Expired entries leave the index here: nothing else prunes it on
            # a busy system (found by make soak: one entry per ban, for ever).
            pipe.zremrangebyscore(self.index_key, "-inf", now)
            pipe.publish(self.channel, encode_change(scope, record.expires))
            self.metrics.bans_expired(int(pipe.execute()[3]))
            if replicas and int(client.wait(replicas, wait_ms)) < replicas:
                log.warning(
                    "ban of %s reached fewer than %d replicas in %d ms: a failover now could "
                    "lose it",
                    scope,
                    replicas,
                    wait_ms,
                )
            return record

        return operation

    def _write_held(self, client: Any) -> None:
        """Write the bans held through an outage, oldest first, a batch at a time
        (inside a Redis operation, on a request's path: the rest on the next ones)."""
        now = self.clock()
        for _ in range(min(len(self._held), HELD_BANS_PER_RESYNC)):
            ip, reason, module, user, expires, account = self._held[0]
            scope = scope_key(ip, user, account)
            remaining = round(expires - now)
            if remaining > 0:
                try:
                    self._writer(ip, reason, module, user, remaining, now, account)(client)
                    log.info("ban of %s held through the outage is now stored", scope)
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    raise  # still unreachable: keep it for the next try
                except Exception:  # one bad record must not block the others forever
                    log.exception("ban of %s held through the outage not stored", scope)
            self._held.pop(0)

    def remove(self, ip: str, user: str = "", account: str = "") -> bool:
        scope = scope_key(ip, user, account)

        def operation(client: Any) -> bool:
            pipe = client.pipeline(transaction=True)
            pipe.delete(self.state.key("ban", scope))
            pipe.zrem(self.index_key, scope)
            pipe.publish(self.channel, encode_change(scope, None))
            deleted, _, _ = pipe.execute()
            return bool(deleted)

        self._cache.pop(scope, None)
        self._cache_changed()
        return bool(self.state.run(operation))

    def census(self) -> dict[str, int]:
        """Bans in force by scope kind, after removing the expired ones from the index.

        One round trip, counted inside Redis (no ban is sent back); the timer
        process calls it.  ``ZREMRANGEBYSCORE`` tells each node how many it
        removed itself, so an expiry is counted once in a cluster.
        """
        removed, ip, user, account = self.state.script(
            CENSUS_SCRIPT, [self.index_key], [self.clock()]
        )
        self.metrics.bans_expired(int(removed))
        return {"ip": int(ip), "user": int(user), "account": int(account)}

    def list(self) -> list[BanRecord]:
        now = self.clock()

        def operation(client: Any) -> list[BanRecord]:
            # Live ones only; expired entries are left to census, which counts them.
            scopes = client.zrangebyscore(self.index_key, now, "+inf")
            pipe = client.pipeline(transaction=False)
            for scope in scopes:
                pipe.hgetall(self.state.key("ban", scope))
            records = []
            for scope, data in zip(scopes, pipe.execute(), strict=True):
                if data:
                    records.append(
                        BanRecord(
                            scope,
                            data["reason"],
                            data["module"],
                            float(data["created"]),
                            float(data["expires"]),
                            int(data.get("hits", 0)),
                            int(data.get("offense", 1)),
                        )
                    )
            return records

        return self.state.run(operation)

    # -- enforcement (hot path) -------------------------------------------------
    def banned(self, ip: str, user: str | Callable[[], str] = "") -> str | None:
        """The scope that bans this request, or None.  No Redis round trip.

        ``user`` may be a function giving it, called only while some ban in
        force is scoped to a user (reading it costs the caller a parse).
        """
        self._refresh()
        now = self.clock()
        scopes = [scope_key(ip)]
        if self._user_scoped:
            name = user() if callable(user) else user
            if name:
                scopes.append(scope_key(ip, name))
        for scope in scopes:
            expires = self._cache.get(scope)
            if expires is not None:
                if expires > now:
                    return scope
                del self._cache[scope]
                self._cache_changed()
        return None

    def _cache_changed(self) -> None:
        self._user_scoped = any(scope.startswith(USER_SCOPE) for scope in self._cache)

    def count_hit(self, scope: str, count: int = 1) -> None:
        """Count blocked requests on the ban record (for operators); never on a gone ban."""

        def operation(client: Any) -> None:
            key = self.state.key("ban", scope)
            if client.exists(key):
                client.hincrby(key, "hits", count)

        self.state.run(operation)

    def _refresh(self) -> None:
        now = self.clock()
        if now >= self._next_resync or self._pubsub is None:
            self._resync(now)
            return
        # Asking redis-py for a message costs more than the rest of the check;
        # asking the kernel whether the feed has bytes costs one poll.
        if not self._feed_readable():
            return
        try:
            while True:
                # None means "nothing to read".  (With ignore_subscribe_messages,
                # redis-py also returns None after swallowing the subscribe
                # confirmation, which would end the drain before the changes.)
                message = self._pubsub.get_message(ignore_subscribe_messages=False, timeout=0)
                if message is None:
                    break
                if message.get("type") == "message":
                    self._apply(message.get("data"))
        except Exception as exc:  # the connection broke: resync once Redis answers
            log.warning("ban change feed interrupted (%s); reloading bans", exc)
            self._pubsub = None
            self._next_resync = now

    def _feed_readable(self) -> bool:
        """Whether the feed's socket has bytes waiting (True when that cannot be told).

        The feed is drained to the end each time, so nothing waits in
        redis-py's buffer once the socket is quiet.
        """
        sock = getattr(getattr(self._pubsub, "connection", None), "_sock", None)
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):  # closed under us: let redis-py say so
            return True
        return bool(readable)

    def _apply(self, data: Any) -> None:
        try:
            change = decode_change(data)
        except ValueError as exc:
            log.warning("ignoring %s", exc)
            return
        if change.expires is None:
            self._cache.pop(change.scope, None)
        else:
            self._cache[change.scope] = change.expires
        self._cache_changed()

    def _resync(self, now: float) -> None:
        if not self.state.available_for_retry():
            return

        def operation(client: Any) -> dict[str, float]:
            self._write_held(client)
            if self._pubsub is None:
                # Subscribe before loading, so no change falls between the two.
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                self._pubsub = pubsub
            return live_bans(client, self.index_key, now)

        try:
            cache = self.state.run(operation)
        except Exception:  # Redis down: keep enforcing what is cached
            self._pubsub = None
            self._next_resync = now + self.settings.resync_interval_s
            return
        # Held bans not written yet are still enforced here.
        for ip, _, _, user, expires, account in self._held:
            scope = scope_key(ip, user, account)
            cache[scope] = max(expires, cache.get(scope, 0.0))
        self._cache = cache
        self._cache_changed()
        # The rest of the held bans go with the next request.
        self._next_resync = now if self._held else now + self.settings.resync_interval_s
