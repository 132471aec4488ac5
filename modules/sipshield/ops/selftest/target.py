"""The SBC under test, as the operator names it, and what an attack gets to work with."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sipshield.core.policy import Policy
from sipshield.lab.sip_probe import exchange
from sipshield.lab.sip_ua import RtpPeer, UserAgent
from sipshield.ops.selftest.guard import Scope

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ", re.MULTILINE)


@dataclass(frozen=True)
class Account:
    """A test account on the PBX behind the SBC (the operator's, for calls)."""

    user: str
    password: str


@dataclass(frozen=True)
class Target:
    """Where the SBC listens and what it serves; a ``SipService`` for the user agents."""

    sip_address: tuple[str, int]  # UDP and TCP
    domain: str
    tls_address: tuple[str, int] | None = None
    accounts: tuple[Account, ...] = ()
    tls_ca: str | None = None

    def sip(self, transport: str = "udp") -> tuple[str, int]:
        if transport == "tls":
            if self.tls_address is None:
                raise ValueError("no TLS listener named (--tls)")
            return self.tls_address
        return self.sip_address

    def password(self, user: str) -> str:
        return next(a.password for a in self.accounts if a.user == user)


@dataclass
class Context:
    """One attack's view: the target, the guard, the policy and its source addresses.

    ``attacker`` sends the attack; ``user_source`` is where the test accounts'
    phones are (legitimate traffic, never an attacker's address).
    """

    target: Target
    scope: Scope
    policy: Policy
    user_source: str
    attacker: str
    notes: list[str] = field(default_factory=list)

    def exchange(
        self, raw: bytes, transport: str = "udp", timeout: float = 1.0, source: str | None = None
    ) -> bytes:
        """Send one request from ``source`` (the attacker) and read up to its final reply."""
        return exchange(
            self.target.sip(transport),
            raw,
            transport=transport,
            timeout=timeout,
            source_ip=source or self.attacker,
            tls_ca=Path(self.target.tls_ca) if self.target.tls_ca else None,
            open_socket=self.scope.open_socket,
        )

    def udp_socket(self, source: str | None = None, timeout: float = 1.0) -> socket.socket:
        """A guarded UDP socket bound to ``source`` (the attacker)."""
        sock = self.scope.open_socket(socket.SOCK_DGRAM)
        sock.bind((source or self.attacker, 0))
        sock.settimeout(timeout)
        return sock

    def phone(self, account: Account, ip: str | None = None) -> UserAgent:
        """A user agent for a test account, at the users' address unless ``ip``."""
        return UserAgent(
            self.target, account.user, ip=ip or self.user_source, open_socket=self.scope.open_socket
        )

    def media(self, ip: str | None = None) -> RtpPeer:
        return RtpPeer(ip or self.user_source, open_socket=self.scope.open_socket)


def statuses(replies: bytes) -> list[int]:
    """Every status code in what was read, in order (provisional ones included)."""
    return [int(code) for code in _STATUS.findall(replies)]


def final(replies: bytes) -> int | None:
    """The final status (>= 200) among the replies, or None when there was none."""
    return next((code for code in statuses(replies) if code >= 200), None)
