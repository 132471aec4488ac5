"""Media takeover: when one rtpengine of a pair dies, its partner restores its calls.

Each rtpengine of the pair writes its calls to its own Redis database
(``--redis=HOST:PORT/DB``) and subscribes to an empty one of its own, its inbox
(``--subscribe-keyspace=INBOX``).  This process pings both over ng; when one
stops answering, it moves that one's calls (rtpengine's JSON, one key per
Call-ID) into the partner's inbox.  The partner restores each call from the
keyspace notification, binding the same media ports, so the parties' RTP goes
on to the addresses they already use; ``active`` on its CLI then makes the
calls its own (written to its database, timed out like any other).  The ng
client sends the calls' later commands to the partner (rendezvous order,
failover) and follows a call to the instance that has it.

Why the partner holds no copy while both live (rtpengine's active-active mode
subscribes each instance to the other's database): on one host both
instances use the same media address, and Linux hands a UDP datagram to the
socket bound last when several share an address and port (SO_REUSEADDR).  A
live copy takes the media of every call it mirrors; the owner, seeing none,
ends the call at its media timeout (docs/media-redundancy.md has the
evidence).  Between hosts, rtpengine's keyspace copies sit on an address that
only the floating IP brings traffic to; here the move of the calls plays the
part of the IP's move.

Redis must publish keyspace events for string commands (``notify-keyspace-events``
with ``K`` and ``$``); rtpengine does not switch them on itself, so the
watcher refuses to start without them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis

from sipshield.rtpengine import Address, NgError, RtpengineClient

log = logging.getLogger("sipshield.ops.media_takeover")

# Calls rtpengine's ng "list" returns at most; its default is 32.
LIST_LIMIT = 1_000_000
CLI_TIMEOUT_S = 5.0


class TakeoverError(RuntimeError):
    """The pair cannot be watched (configuration, Redis); the message says why."""


@dataclass(frozen=True)
class Engine:
    """One rtpengine of the pair, as its command line configures it."""

    name: str
    ng: Address  # --listen-ng
    cli: Address  # --listen-cli
    db: int  # --redis=HOST:PORT/DB: where it writes its calls
    inbox: int  # --subscribe-keyspace: where calls handed to it arrive


def parse_engine(spec: str) -> Engine:
    """``name=A,ng=IP:PORT,cli=IP:PORT,db=1,inbox=2`` (the command line's form)."""
    return engine_of(dict(part.split("=", 1) for part in spec.split(",") if "=" in part))


def engine_of(fields: Mapping[str, object]) -> Engine:
    """An engine from its fields: the command line's, or an entry of lab.json's rtpengines."""
    try:
        return Engine(
            name=str(fields.get("name", fields["ng"])),
            ng=_address(str(fields["ng"])),
            cli=_address(str(fields["cli"])),
            db=int(str(fields["db"])),
            inbox=int(str(fields["inbox"])),
        )
    except (KeyError, ValueError) as exc:
        raise TakeoverError(f"bad engine {dict(fields)} (need ng, cli, db, inbox): {exc}") from None


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def cli_command(address: Address, command: str, timeout: float = CLI_TIMEOUT_S) -> str:
    """One command on rtpengine's CLI (what rtpengine-ctl does): a line in, text until EOF."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def keyspace_events_ready(client: redis.Redis) -> bool:
    """True when Redis publishes the keyspace events of SET, which the restore relies on."""
    flags = client.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
    return "K" in flags and ("$" in flags or "A" in flags)


@dataclass(frozen=True)
class Handover:
    moved: list[str]  # Call-IDs put into the partner's inbox
    restored: list[str]  # of those, the ones the partner restored in time
    seconds: float

    @property
    def lost(self) -> list[str]:
        return [call for call in self.moved if call not in self.restored]


def hand_over(
    database: Callable[[int], redis.Redis],
    client: RtpengineClient,
    dead: Engine,
    partner: Engine,
    restore_timeout: float,
) -> Handover:
    """Move ``dead``'s calls to ``partner``; return what moved and what it restored.

    A key leaves the dead one's database once it is in the inbox: restarted on
    that database, the dead one would restore calls its partner now carries and,
    bound last, take their media.
    """
    started = time.monotonic()
    source, inbox = database(dead.db), database(partner.inbox)
    keys: list[bytes] = []
    for key in source.scan_iter(count=500):
        value, ttl = source.get(key), source.pttl(key)
        if not isinstance(value, bytes):  # gone meanwhile, or not a call
            continue
        # A SET, so that the partner hears of it; rtpengine's expiry goes along.
        inbox.set(key, value, px=ttl if ttl > 0 else None)
        source.delete(key)
        keys.append(key)
    moved = [key.decode(errors="replace") for key in keys]
    restored = _restored(client, partner, moved, restore_timeout)
    if keys:
        # Own calls, in its own database: timed out like the rest, and a restart of
        # the partner restores them.  Only then may the inbox empty: a DEL there
        # would destroy a call the partner still holds as foreign.
        reply = cli_command(partner.cli, "active")
        if "owned" not in reply:
            log.error("rtpengine %s refused 'active': %s", partner.name, reply.strip())
        inbox.delete(*keys)
    return Handover(moved, restored, time.monotonic() - started)


def _restored(
    client: RtpengineClient, partner: Engine, moved: list[str], timeout: float
) -> list[str]:
    """The moved calls the partner lists, once all are there or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            listed = set(client.list_calls(LIST_LIMIT, partner.ng))
        except NgError:
            listed = set()
        restored = [call for call in moved if call in listed]
        if len(restored) == len(moved) or time.monotonic() >= deadline:
            return restored
        time.sleep(0.02)


class MediaTakeover:
    """Watches a pair of rtpengines and hands a dead one's calls to the other."""

    def __init__(
        self,
        redis_url: str,
        engines: Sequence[Engine],
        interval: float = 0.2,
        misses: int = 3,
        restore_timeout: float = 5.0,
    ) -> None:
        """``misses`` pings in a row unanswered (each waits ``interval``) make an engine dead."""
        if len(engines) != 2:
            raise TakeoverError(f"a pair of rtpengines is needed, got {len(engines)}")
        if engines[0].db == engines[1].db or {engines[0].inbox, engines[1].inbox} & {
            engines[0].db,
            engines[1].db,
        }:
            raise TakeoverError("each engine needs its own database and its own inbox")
        self.redis_url = redis_url
        self.engines = tuple(engines)
        self.interval = interval
        self.misses = misses
        self.restore_timeout = restore_timeout
        self.client = RtpengineClient(
            [e.ng for e in engines], timeout=interval, retries=0, dead_retry_interval=0
        )
        self._missed = dict.fromkeys(self.engines, 0)
        self._down: set[Engine] = set()
        self._databases: dict[int, redis.Redis] = {}

    def database(self, number: int) -> redis.Redis:
        if number not in self._databases:
            self._databases[number] = redis.Redis.from_url(
                self.redis_url, db=number, socket_timeout=2.0
            )
        return self._databases[number]

    def partner(self, engine: Engine) -> Engine:
        return self.engines[1] if engine == self.engines[0] else self.engines[0]

    def check_redis(self) -> None:
        try:
            ready = keyspace_events_ready(self.database(self.engines[0].db))
        except redis.RedisError as exc:
            raise TakeoverError(f"redis at {self.redis_url}: {exc}") from None
        if not ready:
            raise TakeoverError(
                "redis does not publish keyspace events for SET: "
                "set notify-keyspace-events to K$ (or more)"
            )

    def run(self, stop: threading.Event) -> None:
        self.check_redis()
        names = " and ".join(f"{e.name} (ng {e.ng[0]}:{e.ng[1]})" for e in self.engines)
        log.info("watching %s", names)
        while not stop.is_set():
            self.tick()
            stop.wait(self.interval)
        self.client.close()

    def tick(self) -> None:
        for engine in self.engines:
            if self._answers(engine):
                self._missed[engine] = 0
                if engine in self._down:
                    log.info("%s answers again (its calls stay with its partner)", engine.name)
                    self._down.discard(engine)
                    if self.partner(engine) in self._down:
                        # Both died; the partner's calls waited in Redis for this one.
                        self._take_over(self.partner(engine))
                continue
            self._missed[engine] += 1
            if self._missed[engine] >= self.misses and engine not in self._down:
                self._down.add(engine)
                self._take_over(engine)

    def _answers(self, engine: Engine) -> bool:
        try:
            self.client.ping(engine.ng)
        except NgError:
            return False
        return True

    def _take_over(self, dead: Engine) -> None:
        partner = self.partner(dead)
        if partner in self._down:
            log.error(
                "%s is dead and so is %s: its calls stay in redis db %d",
                dead.name,
                partner.name,
                dead.db,
            )
            return
        try:
            done = hand_over(self.database, self.client, dead, partner, self.restore_timeout)
        except (redis.RedisError, OSError) as exc:
            # Try again at the next tick: the engine is still dead.
            self._down.discard(dead)
            log.error("handing %s's calls to %s failed: %s", dead.name, partner.name, exc)
            return
        log.warning(
            "%s is dead: %d calls handed to %s in %.0f ms",
            dead.name,
            len(done.moved),
            partner.name,
            done.seconds * 1000,
        )
        if done.lost:
            log.error("%s did not restore: %s", partner.name, ", ".join(done.lost))
