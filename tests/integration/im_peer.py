"""Messaging peers for lab tests: a registered phone that keeps what it receives,
and a sender that answers the PBX's digest challenge.

Built on :mod:`sipshield.lab.sip_ua`: the phone is a :class:`UserAgent`
whose socket a thread reads, answering every request 200 (202 for SUBSCRIBE)
and keeping it by Call-ID, so a test can ask what arrived, byte for byte.
"""

from __future__ import annotations

import queue
import re
import secrets
import threading
import time

from sipshield.lab.sip_ua import SipMessage, UserAgent, parse
from tests.integration.lab_fixture import RunningLab

_CSEQ = re.compile(rb"(?im)^(CSeq:\s*)(\d+)")


class Phone:
    """A registered user that answers and keeps every request it receives."""

    def __init__(self, lab: RunningLab, user: str, ip: str = "127.0.0.1") -> None:
        self.ua = UserAgent(lab, user, ip=ip)
        assert self.ua.register() == 200, f"{user} could not register"
        self.received: dict[str, list[SipMessage]] = {}
        self.replies: queue.Queue[SipMessage] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.ua.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = self.ua.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data.strip():
                continue
            msg = parse(data)
            if msg.status:
                self.replies.put(msg)
                continue
            with self._lock:
                self.received.setdefault(msg.header("Call-ID"), []).append(msg)
            if msg.method != "ACK":
                self.ua.reply(msg, 202 if msg.method == "SUBSCRIBE" else 200, "OK")

    def got(self, call_id: str, timeout: float = 3.0) -> SipMessage | None:
        """The request with this Call-ID once it arrives (None if it never does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if call_id in self.received:
                    return self.received[call_id][0]
            time.sleep(0.02)
        return None

    def has(self, call_id: str) -> bool:
        with self._lock:
            return call_id in self.received

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.ua.close()


class Sender:
    """Sends raw requests as ``user`` from ``ip``; answers a 401/407 once, as a phone does."""

    def __init__(self, lab: RunningLab, user: str, ip: str = "127.0.0.1") -> None:
        self.ua = UserAgent(lab, user, ip=ip)

    def send(self, raw: bytes, timeout: float = 3.0) -> int | None:
        """The final status of the request (after one digest retry), None for no answer."""
        reply = self._exchange(raw, timeout)
        if reply is not None and reply.status in (401, 407):
            challenge = reply.header("Proxy-Authenticate") or reply.header("WWW-Authenticate")
            header = "Proxy-Authorization" if reply.status == 407 else "Authorization"
            start = raw.split(b" ", 2)
            method, ruri = start[0].decode(), start[1].decode()
            auth = self.ua._credentials(challenge, method, ruri)
            retry = _CSEQ.sub(lambda m: m.group(1) + str(int(m.group(2)) + 1).encode(), raw, 1)
            head, sep, body = retry.partition(b"\r\n")
            retry = head + sep + f"{header}: {auth}\r\n".encode() + body
            retry = retry.replace(b";branch=z9hG4bK", b";branch=z9hG4bK" + _token(), 1)
            reply = self._exchange(retry, timeout)
        return None if reply is None else reply.status

    def _exchange(self, raw: bytes, timeout: float) -> SipMessage | None:
        self.ua.sock.sendto(raw, self.ua.sbc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.ua.receive(timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                return None
            if msg.status >= 200:
                return msg
        return None

    def close(self) -> None:
        self.ua.close()


def _token() -> bytes:
    return secrets.token_hex(3).encode()
