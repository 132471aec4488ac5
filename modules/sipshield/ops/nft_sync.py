"""Kernel enforcement: mirror the active IP bans into nftables sets (a "bouncer").

The Python ban check drops a banned source's requests, but each one still
costs Kamailio a receive, a parse and a trip through the pipeline.  This
process keeps an nftables table in step with the bans in Redis, so that the
kernel drops a banned source's packets before Kamailio ever sees them:

    table inet sipshield {
        set banned4 { type ipv4_addr; flags timeout; }
        set banned6 { type ipv6_addr; flags timeout; }
        chain prerouting { type filter hook prerouting priority raw; ... }
    }

- Every element carries the ban's remaining TTL as its nft timeout, so an
  expiry needs no message: the kernel forgets the address on its own.
- Only ``ip:`` scopes are mirrored.  A ``user:`` ban stops one user from one
  address (a busy NAT keeps its other users), which only SIP can tell apart.
- The chain drops every packet from a banned address, not only those to the
  SIP ports: a ban says the source is hostile, its media to rtpengine is just
  as unwelcome, and the rule needs no port list kept in step with the
  listeners.  It hooks prerouting at raw priority, before connection
  tracking, so a flood costs no conntrack entries.  Loopback is exempt: a ban
  of a local address must never cut the node off from its own Redis.

Changes arrive on the ban channel (pub/sub, at most once), so the sets are
also reloaded from Redis on start, after every reconnection and every
``RESYNC_INTERVAL_S``.  While Redis is unreachable the sets stay as they are
and their timeouts keep running.  On a clean stop the table is removed; the
Python ban check still enforces every ban.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from sipshield.core.bans import decode_change, live_bans
from sipshield.core.redis_connection import connect, safe_url

if TYPE_CHECKING:
    from sipshield.core.state import RedisSettings

log = logging.getLogger("sipshield.ops.nft_sync")

RESYNC_INTERVAL_S = 60.0
RECONNECT_MAX_S = 10.0
NFT_TIMEOUT_S = 10.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class NftError(RuntimeError):
    """nft refused a script; the message carries its error output."""


@dataclass(frozen=True)
class KernelBan:
    address: Address
    timeout_s: int


def kernel_ban(scope: str, expires: float, now: float) -> KernelBan | None:
    """The kernel element for a ban, or None when it has none (user scope, expired)."""
    kind, _, address = scope.partition(":")
    if kind != "ip":
        return None
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        log.warning("ignoring ban %r: not an IP address", scope)
        return None
    timeout = math.ceil(expires - now)
    return KernelBan(parsed, timeout) if timeout > 0 else None


@dataclass(frozen=True)
class NftTable:
    """The scripts (``nft -f`` syntax) that build and change the table; no I/O."""

    name: str = "sipshield"
    family: str = "inet"
    set4: str = "banned4"
    set6: str = "banned6"
    chain: str = "prerouting"

    def set_for(self, address: Address) -> str:
        return self.set4 if address.version == 4 else self.set6

    def _elements(self, bans: Iterable[KernelBan], version: int) -> str:
        items = [
            f"{b.address} timeout {b.timeout_s}s" for b in bans if b.address.version == version
        ]
        return f"\t\telements = {{ {', '.join(items)} }}\n" if items else ""

    def create(self, bans: Iterable[KernelBan]) -> str:
        """Replace the whole table, with these elements, in one transaction."""
        bans = list(bans)
        return (
            # "add" first so that "delete" cannot fail on a fresh host.
            f"add table {self.family} {self.name}\n"
            f"delete table {self.family} {self.name}\n"
            f"table {self.family} {self.name} {{\n"
            f"\tset {self.set4} {{\n\t\ttype ipv4_addr\n\t\tflags timeout\n"
            + self._elements(bans, 4)
            + "\t}\n"
            f"\tset {self.set6} {{\n\t\ttype ipv6_addr\n\t\tflags timeout\n"
            + self._elements(bans, 6)
            + "\t}\n"
            f"\tchain {self.chain} {{\n"
            "\t\ttype filter hook prerouting priority raw; policy accept;\n"
            '\t\tiif "lo" accept\n'
            f"\t\tip saddr @{self.set4} counter drop\n"
            f"\t\tip6 saddr @{self.set6} counter drop\n"
            "\t}\n"
            "}\n"
        )

    def reload(self, bans: Iterable[KernelBan]) -> str:
        """Replace the elements of both sets in one transaction, keeping the counters."""
        lines = [f"flush set {self.family} {self.name} {s}" for s in (self.set4, self.set6)]
        lines += [self._add(ban) for ban in bans]
        return "\n".join(lines) + "\n"

    def add(self, ban: KernelBan) -> str:
        # "add element" leaves an existing element's timeout alone, so a ban
        # that was made again (a longer TTL) replaces its element.
        return self.remove(ban.address) + self._add(ban) + "\n"

    def remove(self, address: Address) -> str:
        target = f"{self.family} {self.name} {self.set_for(address)} {{ {address} }}"
        # "add" first so that "delete" cannot fail on an absent element.
        return f"add element {target}\ndelete element {target}\n"

    def _add(self, ban: KernelBan) -> str:
        return (
            f"add element {self.family} {self.name} {self.set_for(ban.address)} "
            f"{{ {ban.address} timeout {ban.timeout_s}s }}"
        )

    def delete(self) -> str:
        return f"add table {self.family} {self.name}\ndelete table {self.family} {self.name}\n"


def run_nft(script: str, binary: str = "nft") -> None:
    """Apply a script atomically (``nft -f -`` runs it as one transaction)."""
    try:
        proc = subprocess.run(
            [binary, "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftError(f"cannot run {binary}: {exc}") from exc
    if proc.returncode != 0:
        raise NftError(f"{binary} -f exited {proc.returncode}: {proc.stderr.strip()}")


class BanMirror:
    """Keeps an :class:`NftTable` in step with the ``ip:`` bans in one Redis."""

    def __init__(
        self,
        redis_settings: RedisSettings,
        index_key: str,
        channel: str,
        table: NftTable,
        apply: Callable[[str], None] = run_nft,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis_settings = redis_settings
        self.index_key = index_key
        self.channel = channel
        self.table = table
        self.apply = apply
        self.clock = clock
        self._created = False

    # -- changes ----------------------------------------------------------------
    def active_bans(self, client: Any) -> list[KernelBan]:
        now = self.clock()
        scored = live_bans(client, self.index_key, now).items()
        bans = (kernel_ban(scope, expires, now) for scope, expires in scored)
        return [ban for ban in bans if ban is not None]

    def full_sync(self, client: Any) -> None:
        bans = self.active_bans(client)
        if self._created:
            try:
                self.apply(self.table.reload(bans))
            except NftError as exc:  # someone removed the table: build it again
                log.warning("reloading the nft sets failed (%s); recreating the table", exc)
                self._created = False
        if not self._created:
            self.apply(self.table.create(bans))
            self._created = True
        log.info(
            "synchronised %d ip bans into nft table %s %s",
            len(bans),
            self.table.family,
            self.table.name,
        )

    def apply_change(self, data: Any) -> None:
        """Apply one message from the ban channel; bad messages are logged and skipped."""
        try:
            change = decode_change(data)
            if change.expires is not None:
                ban = kernel_ban(change.scope, change.expires, self.clock())
                if ban is not None:
                    self.apply(self.table.add(ban))
                    log.info("banned %s in the kernel for %ds", ban.address, ban.timeout_s)
                return
            kind, _, address = change.scope.partition(":")
            if kind == "ip":
                parsed = ipaddress.ip_address(address)
                self.apply(self.table.remove(parsed))
                log.info("unbanned %s in the kernel", parsed)
        except ValueError as exc:
            log.warning("ignoring ban change %r: %s", data, exc)

    def delete_table(self) -> None:
        self.apply(self.table.delete())
        log.info("removed nft table %s %s", self.table.family, self.table.name)

    # -- the loop -----------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Follow Redis until ``stop`` is set; reconnect and resync after any outage."""
        backoff = 0.5
        while not stop.is_set():
            client = connect(self.redis_settings, 5, health_check_interval=10)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                # Subscribe before loading, so no change falls between the two.
                pubsub.subscribe(self.channel)
                self.full_sync(client)
                backoff = 0.5
                self._follow(client, pubsub, stop)
            except (redis.RedisError, OSError) as exc:
                log.error(
                    "redis at %s unreachable (%s); kernel bans stay until their "
                    "timeouts, retrying in %.1fs",
                    safe_url(self.redis_settings.url),
                    exc,
                    backoff,
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
            except NftError as exc:
                log.error("nft: %s; resynchronising in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
            finally:
                pubsub.close()
                client.close()

    def _follow(self, client: Any, pubsub: Any, stop: threading.Event) -> None:
        next_sync = time.monotonic() + RESYNC_INTERVAL_S
        while not stop.is_set():
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                self.apply_change(message["data"])
            if time.monotonic() >= next_sync:
                self.full_sync(client)
                next_sync = time.monotonic() + RESYNC_INTERVAL_S
