"""Security events as RFC 5424 syslog messages, to a collector or the local socket.

Two layers, as in ``sipshield.rtpengine``: :func:`frame` builds the bytes of
one message and does no I/O; :class:`SyslogSender` sends them over UDP (one
datagram each), TCP (RFC 6587 octet counting) or a local datagram socket
(``/dev/log``).  A collector that is down never holds a request up: sends
are bounded by a short timeout, a failure is logged once, and events are
dropped (the event file keeps them) until the collector answers again.

Attacker-controlled text (user, User-Agent in a reason, reason, Call-ID,
method) is made safe for each place it lands: in a structured-data value,
control characters and line separators become U+FFFD and ``"``, ``\\`` and
``]`` are escaped (RFC 5424 section 6.3.3); in the header fields it never
appears; the message body is ASCII JSON (``\\u`` escapes), so no byte of it
can end a line or a frame (a CEF body escapes as CEF says and carries no
line breaks either).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger("sipshield.core.syslog")

FACILITIES = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "authpriv": 10,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
Facility = Literal[
    "kern",
    "user",
    "daemon",
    "auth",
    "authpriv",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
]
# The structured-data ID of sipshield's fields.  32473 is the private
# enterprise number reserved for documentation (RFC 5612): a collector
# matches on the whole ID, and no registered number is claimed.
SD_ID = "sipshield@32473"
# What a UDP datagram carries at most here; a longer message is cut (its
# structured data comes first, so the fields survive).
MAX_DATAGRAM = 8192


class SyslogSettings(BaseModel):
    """The policy's ``events.syslog`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # udp:HOST:PORT, tcp:HOST:PORT, or unix:/PATH (a local datagram socket, /dev/log).
    address: str
    # The message body: "json" (the event as in the event file), "ecs"
    # (Elastic Common Schema fields) or "cef" (ArcSight Common Event Format).
    format: Literal["json", "ecs", "cef"] = "json"
    facility: Facility = "local0"
    app_name: str = Field(default="sipshield", pattern=r"^[!-~]{1,48}$")
    # Seconds a TCP connect or send may take; a collector that is down is
    # retried after retry_interval_s, and events meanwhile are not sent.
    timeout_s: float = Field(default=0.2, gt=0, le=5)
    retry_interval_s: float = Field(default=5.0, gt=0, le=300)

    @field_validator("address")
    @classmethod
    def _address(cls, address: str) -> str:
        transport, _, rest = address.partition(":")
        if transport == "unix" and rest.startswith("/"):
            return address
        host, colon, port = rest.rpartition(":")
        if transport in ("udp", "tcp") and colon and host and port.isdigit():
            return address
        raise ValueError(f"give udp:HOST:PORT, tcp:HOST:PORT or unix:/PATH, not {address!r}")


_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SD_SPECIAL = re.compile(r'(["\\\]])')
_HEADER_UNSAFE = re.compile(r"[^!-~]")


def field_text(value: str) -> str:
    """``value`` with every character that could end a line or a field replaced (U+FFFD)."""
    return _BREAKING.sub("\ufffd", value)


def sd_value(value: str) -> str:
    """A structured-data parameter value: no line breaks, ``"``, ``\\`` and ``]`` escaped."""
    return _SD_SPECIAL.sub(r"\\\1", field_text(value))


def header_token(value: str, limit: int) -> str:
    """A header field (HOSTNAME, APP-NAME, MSGID): printable ASCII without spaces, or "-"."""
    token = _HEADER_UNSAFE.sub("_", value)[:limit]
    return token or "-"


def frame(
    *,
    facility: str,
    severity: int,
    timestamp: float,
    hostname: str,
    app_name: str,
    procid: int,
    msgid: str,
    params: dict[str, str],
    body: str,
) -> bytes:
    """One RFC 5424 message: header, one structured-data element, an ASCII body."""
    stamp = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")
    data = " ".join(f'{name}="{sd_value(value)}"' for name, value in params.items() if value)
    header = (
        f"<{FACILITIES[facility] * 8 + severity}>1 {stamp.replace('+00:00', 'Z')} "
        f"{header_token(hostname, 255)} {header_token(app_name, 48)} {procid} "
        f"{header_token(msgid, 32)} [{SD_ID}{' ' + data if data else ''}]"
    )
    return f"{header} {body}".encode()


class SyslogSender:
    """Sends framed messages to one collector; per process (reopen after a fork)."""

    def __init__(
        self, settings: SyslogSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.transport, _, self.target = settings.address.partition(":")
        self._clock = clock
        self._sock: socket.socket | None = None
        self._retry_at = 0.0
        self._failing = False

    def reopen(self) -> None:
        """Drop an inherited socket (after a fork); the next send opens one."""
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def send(self, message: bytes) -> bool:
        """Send one message; False when it could not be (logged once per outage)."""
        if self._failing and self._clock() < self._retry_at:
            return False
        try:
            self._send(message)
        except OSError as exc:
            self.reopen()
            self._retry_at = self._clock() + self.settings.retry_interval_s
            if not self._failing:
                self._failing = True
                log.error(
                    "syslog collector %s unreachable (%s); events go to the event file only "
                    "until it answers",
                    self.settings.address,
                    exc,
                )
            return False
        if self._failing:
            self._failing = False
            log.warning("syslog collector %s reachable again", self.settings.address)
        return True

    def _send(self, message: bytes) -> None:
        sock = self._sock or self._open()
        if self.transport == "tcp":
            # RFC 6587 octet counting: the length says where the message ends.
            sock.sendall(b"%d %s" % (len(message), message))
        else:
            sock.send(message[:MAX_DATAGRAM])

    def _open(self) -> socket.socket:
        if self.transport == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address: str | tuple[str, int] = self.target
        else:
            host, _, port = self.target.rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            kind = socket.SOCK_STREAM if self.transport == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(family, kind)
            address = (host, int(port))
        sock.settimeout(self.settings.timeout_s)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return sock
