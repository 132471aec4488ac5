"""TLS peers for the integration tests: a TLS client tunnel for SIPp, and one-shot requests.

Debian's SIPp (sip-tester 3.6.1) is built without OpenSSL: ``-t l1`` exits with
"To use a TLS transport you must compile SIPp with OpenSSL".  So SIPp runs its
scenarios over TCP (``-t t1``) into :class:`TlsTunnel`, which carries each
connection to the SBC's TLS port as a real TLS client (with a client
certificate when given).  The SBC sees an ordinary TLS peer; replies and
requests for the registered user come back on the same connection.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from sipshield.lab.net import free_port
from sipshield.lab.sip_probe import read_final_status


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def tls_connect(
    target: tuple[str, int], context: ssl.SSLContext, source_ip: str = "127.0.0.1", timeout=5.0
) -> ssl.SSLSocket:
    raw = socket.create_connection(target, timeout=timeout, source_address=(source_ip, 0))
    return context.wrap_socket(raw, server_hostname="localhost")


def tls_request(
    target: tuple[str, int],
    build: Callable[[tuple[str, int]], bytes],
    context: ssl.SSLContext,
    source_ip: str = "127.0.0.1",
    timeout: float = 3.0,
) -> int | None:
    """Send one request over a new TLS connection; the final status, or None.

    ``build`` gets the connection's local address (for the Via) and returns the
    request.
    """
    try:
        sock = tls_connect(target, context, source_ip, timeout)
    except OSError:
        return None
    with sock:
        try:
            sock.sendall(build(sock.getsockname()[:2]))
        except OSError:
            return None
        return read_final_status(sock, timeout)


class TlsTunnel:
    """Listens on TCP 127.0.0.1:port; each connection goes on to ``target`` over TLS."""

    def __init__(
        self,
        target: tuple[str, int],
        context: ssl.SSLContext,
        source_ip: str = "127.0.0.1",
    ) -> None:
        self.target = target
        self.context = context
        self.source_ip = source_ip
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                plain, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                secure = tls_connect(self.target, self.context, self.source_ip)
            except OSError:
                plain.close()
                continue
            secure.settimeout(None)
            plain.settimeout(None)
            self._sockets += [plain, secure]
            for src, dst in ((plain, secure), (secure, plain)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65535):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> TlsTunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
