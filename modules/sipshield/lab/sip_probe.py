"""A minimal SIP sender: put one request on the wire and read the final reply.

Used to check that an SBC answers (``sipshield lab up``) and by the tests to
send hand-written or deliberately malformed messages, which SIPp cannot send.
"""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


def options_request(target: str, local: tuple[str, int], transport: str = "udp") -> bytes:
    """A well-formed OPTIONS for the SBC itself (no user part, so the SBC answers)."""
    branch = "z9hG4bK" + secrets.token_hex(8)
    host, port = local
    return (
        f"OPTIONS sip:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {host}:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{host}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{target}>\r\n"
        f"Call-ID: {secrets.token_hex(12)}@{host}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "User-Agent: sipshield-probe\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def final_status(replies: bytes) -> int | None:
    """The first final (>= 200) status code among the replies read, if any."""
    for chunk in re.split(rb"(?=SIP/2\.0 \d{3} )", replies):
        match = _STATUS.match(chunk)
        if match and int(match.group(1)) >= 200:
            return int(match.group(1))
    return None


def send_request(
    target: tuple[str, int],
    build: bytes | None = None,
    transport: str = "udp",
    timeout: float = 2.0,
    source_ip: str = "127.0.0.1",
    tls_ca: Path | None = None,
    open_socket: Callable[[int], socket.socket] | None = None,
) -> int | None:
    """Send one request and return the final status, or None when nothing came back.

    ``build`` is the raw request; None sends an OPTIONS to the target itself.
    Over TLS the server certificate is verified against ``tls_ca``.
    ``open_socket`` makes the (unbound) socket: the selftest's guard.
    """
    replies = exchange(target, build, transport, timeout, source_ip, tls_ca, open_socket)
    return final_status(replies)


def exchange(
    target: tuple[str, int],
    build: bytes | None = None,
    transport: str = "udp",
    timeout: float = 2.0,
    source_ip: str = "127.0.0.1",
    tls_ca: Path | None = None,
    open_socket: Callable[[int], socket.socket] | None = None,
) -> bytes:
    """Like :func:`send_request`, but everything read up to the final reply, as bytes."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    opened = open_socket(kind) if open_socket else socket.socket(socket.AF_INET, kind)
    with opened as raw_sock:
        raw_sock.bind((source_ip, 0))
        raw_sock.settimeout(timeout)
        local = raw_sock.getsockname()
        payload = (
            build
            if build is not None
            else options_request(f"{target[0]}:{target[1]}", local, transport)
        )
        sock: socket.socket = raw_sock
        try:
            if transport == "udp":
                sock.sendto(payload, target)
            else:
                sock.connect(target)
                if transport == "tls":
                    context = ssl.create_default_context(cafile=tls_ca)
                    sock = context.wrap_socket(raw_sock, server_hostname=target[0])
                sock.sendall(payload)
        except OSError:
            return b""
        return _read_replies(sock, timeout)


def read_final_status(sock: socket.socket, timeout: float) -> int | None:
    """The final status read from a connected socket, or None by ``timeout``."""
    return final_status(_read_replies(sock, timeout))


def _read_replies(sock: socket.socket, timeout: float) -> bytes:
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65535)
        except (TimeoutError, OSError):
            break
        if not data:
            break
        received += data
        if final_status(received) is not None:
            break
    return received
