"""The one door to the network: every socket the selftest uses is a ``GuardedSocket``.

An attack tool pointed at the wrong address is an attack on someone else.
The scope holds what the operator named: the target's addresses and the
source addresses the selftest may send from.  A guarded socket refuses to
bind anywhere else, to connect or send anywhere else, and paces its sends so
that the selftest never floods faster than ``max_packets_per_s``, whatever
an attack asks for.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Fast enough to cross any policy's flood limits in a fraction of their
# window, slow enough never to load a production SBC.
DEFAULT_MAX_PACKETS_PER_S = 200.0


class OutOfScope(Exception):
    """A send, connect or bind that the operator did not allow; the message names it.

    Not an OSError: code that treats a network error as "no answer" (which a
    selftest reads as "stopped") must never swallow a refusal of the guard.
    """


@dataclass
class Pacer:
    """Spaces sends at least ``1 / rate`` seconds apart, across every guarded socket."""

    rate: float
    _next: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + 1.0 / self.rate
        if start > now:
            time.sleep(start - now)


class Scope:
    """What the selftest may touch: ``targets`` to send to, ``sources`` to send from."""

    def __init__(
        self,
        targets: Iterable[str],
        sources: Iterable[str],
        max_packets_per_s: float = DEFAULT_MAX_PACKETS_PER_S,
    ) -> None:
        self.targets = frozenset(_address(a) for a in targets)
        self.sources = frozenset(_address(a) for a in sources)
        if not self.targets:
            raise ValueError("a selftest needs a target address")
        if not self.sources:
            raise ValueError("a selftest needs at least one --source address")
        if max_packets_per_s <= 0:
            raise ValueError("max_packets_per_s must be positive")
        self.pacer = Pacer(max_packets_per_s)

    def check_destination(self, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if _address(host) not in self.targets:
            raise OutOfScope(
                f"refusing to send to {host}: not a target the operator named "
                f"({', '.join(sorted(self.targets))})"
            )

    def check_source(self, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if _address(host) not in self.sources:
            raise OutOfScope(
                f"refusing to send from {host}: not a --source the operator gave "
                f"({', '.join(sorted(self.sources))})"
            )

    def open_socket(self, kind: int) -> GuardedSocket:
        """An unbound IPv4 socket of ``kind`` that only works inside this scope."""
        return GuardedSocket(self, kind)


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (name targets by address)") from None


class GuardedSocket(socket.socket):
    """A socket that checks every bind, connect and send against its scope.

    A stream socket is checked when it connects: afterwards it can only reach
    that peer.  Every datagram is checked and paced, and so is every write on
    a plain stream; once TLS wraps a connected socket, its writes go through
    the TLS layer unpaced (the selftest's TLS traffic is a few handshakes).
    """

    def __init__(self, scope: Scope, kind: int) -> None:
        super().__init__(socket.AF_INET, kind)
        self.scope = scope
        self._bound = False

    def bind(self, address: Any) -> None:
        self.scope.check_source(address)
        super().bind(address)
        self._bound = True

    def _must_be_bound(self) -> None:
        # An unbound socket would send from whatever address the kernel picks.
        if not self._bound:
            raise OutOfScope("refusing to send from an unbound socket: bind to a --source first")

    def connect(self, address: Any) -> None:
        self._must_be_bound()
        self.scope.check_destination(address)
        super().connect(address)

    def connect_ex(self, address: Any) -> int:
        self._must_be_bound()
        self.scope.check_destination(address)
        return super().connect_ex(address)

    def sendmsg(self, *args: Any) -> int:
        raise OutOfScope("sendmsg is not guarded: use sendto or send")

    def sendto(self, data: Any, *args: Any) -> int:
        self._must_be_bound()
        self.scope.check_destination(args[-1])
        self.scope.pacer.wait()
        return super().sendto(data, *args)

    def send(self, data: Any, flags: int = 0) -> int:
        self._must_be_bound()
        self.scope.pacer.wait()
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._must_be_bound()
        self.scope.pacer.wait()
        super().sendall(data, flags)
