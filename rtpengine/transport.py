"""Blocking UDP transport to one or more rtpengine instances.

Kamailio runs KEMI code in single-threaded worker processes, so a blocking exchange with a
short timeout is the simplest correct model; this class is not thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from .address import Address, check_address, format_address
from .codec import NgDict, match_reply
from .errors import NgBadReply, NgTimeout, NgUnavailable

logger = logging.getLogger(__name__)

# Larger than any UDP payload, so a reply is never silently truncated by recv().
_RECV_SIZE = 65536


class ExchangeObserver(Protocol):
    """Told how each exchange went (metrics); called on the exchange's own path."""

    def rtpengine_round_trip(self, command: str, seconds: float) -> None: ...

    def rtpengine_failure(self, instance: str) -> None: ...


def rendezvous_order(key: str, instances: Sequence[Address]) -> list[Address]:
    """Order instances by highest-random-weight for ``key``.

    Every worker (and every Kamailio host) computes the same order for a Call-ID, so offer,
    answer and delete of one call reach the same rtpengine; removing an instance only moves
    the calls that were on it. blake2b rather than hash(), which is salted per process.
    """

    def weight(address: Address) -> bytes:
        material = f"{key}\0{format_address(address)}".encode()
        return hashlib.blake2b(material, digest_size=8).digest()

    return sorted(instances, key=weight, reverse=True)


class UdpTransport:
    def __init__(
        self,
        instances: Sequence[Address],
        *,
        timeout: float = 1.0,
        retries: int = 2,
        dead_retry_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        observer: ExchangeObserver | None = None,
    ) -> None:
        """``timeout`` is per attempt; each instance gets ``retries`` retransmissions before
        it is marked dead for ``dead_retry_interval`` seconds (measured with ``clock``).
        ``observer`` hears of every answered and unanswered exchange."""
        if not instances:
            raise ValueError("at least one rtpengine instance is required")
        if timeout <= 0 or retries < 0 or dead_retry_interval < 0:
            raise ValueError("timeout must be > 0, retries and dead_retry_interval >= 0")
        self.instances: tuple[Address, ...] = tuple(check_address(a) for a in instances)
        self.timeout = timeout
        self.retries = retries
        self.dead_retry_interval = dead_retry_interval
        self._clock = clock
        self.observer = observer
        self._dead_until: dict[Address, float] = {}
        # Sockets are opened on first use, never at import or construction time, so that
        # each Kamailio worker opens its own after fork (see _socket).
        self._sockets: dict[Address, socket.socket] = {}
        self._owner_pid = os.getpid()

    def is_dead(self, address: Address) -> bool:
        until = self._dead_until.get(address)
        return until is not None and self._clock() < until

    def candidates(self, key: str | None) -> list[Address]:
        """Live instances in the order they should be tried for ``key``."""
        ordered = rendezvous_order(key, self.instances) if key is not None else self.instances
        return [a for a in ordered if not self.is_dead(a)]

    def exchange(
        self,
        command: str,
        cookie: str,
        datagram: bytes,
        key: str | None,
        instance: Address | None = None,
        holds: Callable[[NgDict], bool] | None = None,
    ) -> tuple[Address, NgDict]:
        """Send ``datagram`` and return (answering instance, decoded reply).

        With ``instance`` only that one is tried, even if marked dead: an explicit request
        (e.g. a health-check ping) is how an operator checks whether it is back.

        ``holds`` is for commands about a call that already exists: it tells from a reply
        whether the instance has the call.  One that answers without it is passed over for
        the next live instance, because a call can live elsewhere than its first choice: a
        partner restored it from Redis when that one died, and it came back empty.  When no
        instance has the call, the first reply is returned (the caller reports it).
        """
        if instance is not None:
            targets = [check_address(instance)]
        else:
            targets = self.candidates(key)
            if not targets:
                raise NgUnavailable(command, self.instances)
        passed_over: tuple[Address, NgDict] | None = None
        for address in targets:
            started = time.perf_counter()
            reply = self._exchange_one(address, cookie, datagram)
            if reply is not None:
                if self.observer is not None:
                    self.observer.rtpengine_round_trip(command, time.perf_counter() - started)
                self._dead_until.pop(address, None)
                if holds is None or holds(reply):
                    return address, reply
                passed_over = passed_over or (address, reply)
                continue
            self._dead_until[address] = self._clock() + self.dead_retry_interval
            if self.observer is not None:
                self.observer.rtpengine_failure(format_address(address))
            # A fresh socket on the next try carries no pending ICMP error or late replies.
            sock = self._sockets.pop(address, None)
            if sock is not None:
                sock.close()
            logger.warning(
                "rtpengine %s did not answer %r; marked dead for %.0fs",
                format_address(address),
                command,
                self.dead_retry_interval,
            )
        if passed_over is not None:
            return passed_over
        raise NgTimeout(command, targets)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def _exchange_one(self, address: Address, cookie: str, datagram: bytes) -> NgDict | None:
        sock = self._socket(address)
        for _attempt in range(self.retries + 1):
            # Same datagram, same cookie: rtpengine answers a retransmission from its reply
            # cache instead of executing the command a second time.
            try:
                sock.send(datagram)
            except OSError as exc:
                logger.debug("send to %s failed: %s", format_address(address), exc)
                return None
            deadline = time.monotonic() + self.timeout
            while (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                try:
                    data = sock.recv(_RECV_SIZE)
                except TimeoutError:
                    break
                except ConnectionRefusedError:
                    # ICMP port unreachable: nothing listens there, retransmitting is futile.
                    return None
                try:
                    reply = match_reply(cookie, data)
                except NgBadReply as exc:
                    raise NgBadReply(exc.detail, address) from exc
                if reply is not None:
                    return reply
                logger.debug("ignoring datagram without our cookie from %s", address)
        return None

    def _socket(self, address: Address) -> socket.socket:
        if os.getpid() != self._owner_pid:
            # Inherited across fork: sharing a socket with another process would let it
            # read our replies, so drop the inherited ones and open fresh sockets.
            self.close()
            self._owner_pid = os.getpid()
        sock = self._sockets.get(address)
        if sock is None:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            # connect() makes the kernel drop datagrams from any other source and report
            # ICMP port-unreachable, so a stopped instance is detected without waiting.
            sock.connect(address)
            self._sockets[address] = sock
        return sock
