"""A small SIP user agent: calls with chosen SDP, over UDP or TLS.

SIPp's scenarios fix their SDP and cannot show what the far end received;
these tests need both (an SRTP offer, then the SDP the callee saw, then RTP
to the ports in it).  Registration, calls and other requests (``authenticated``:
SUBSCRIBE, PUBLISH) carry digest credentials for the lab PBX.

The integration tests drive the lab with it, and ``sipshield selftest`` an
operator's SBC: there every socket comes from the selftest's guard
(``open_socket``), which refuses any address the operator did not name.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# Opens an unbound IPv4 socket of a kind (SOCK_DGRAM, SOCK_STREAM).
SocketOpener = Callable[[int], socket.socket]


def plain_socket(kind: int) -> socket.socket:
    return socket.socket(socket.AF_INET, kind)


class SipService(Protocol):
    """The SBC a user agent talks to: a running lab, or a selftest's target."""

    @property
    def domain(self) -> str: ...

    @property
    def tls_ca(self) -> str | None: ...

    def sip(self, transport: str = "udp") -> tuple[str, int]: ...

    def password(self, user: str) -> str: ...


_AUTH_PARAM = re.compile(r'(\w+)="?([^",]*)"?')


@dataclass
class SipMessage:
    start: str
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def status(self) -> int:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0") else 0

    @property
    def method(self) -> str:
        return self.start.split()[0]

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def to_bytes(self) -> bytes:
        lines = [self.start] + [
            f"{k}: {v}" for k, v in self.headers if k.lower() != "content-length"
        ]
        body = self.body.encode()
        return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def parse(data: bytes) -> SipMessage:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipMessage(lines[0], headers, body.decode(errors="replace"))


def sdp(port: int, proto: str = "RTP/AVP", ip: str = "127.0.0.1", *extra: str) -> str:
    lines = [
        "v=0",
        f"o=- {secrets.randbelow(10**9)} 1 IN IP4 {ip}",
        "s=-",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=audio {port} {proto} 0",
        "a=rtpmap:0 PCMU/8000",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n"


def media_port(body: str) -> int:
    return int(re.search(r"^m=audio (\d+)", body, re.MULTILINE).group(1))  # type: ignore[union-attr]


def media_address(body: str) -> str:
    return re.search(r"^c=IN IP4 (\S+)", body, re.MULTILINE).group(1)  # type: ignore[union-attr]


class UserAgent:
    """One user, one signalling socket (UDP, or a TLS connection kept open)."""

    def __init__(
        self,
        lab: SipService,
        user: str,
        transport: str = "udp",
        ip: str = "127.0.0.1",
        contact_ip: str | None = None,
        outbound_proxy: bool = False,
        gruu: bool = False,
        open_socket: SocketOpener = plain_socket,
    ):
        """``contact_ip`` puts another address in Contact: a user behind NAT.

        ``outbound_proxy`` preloads the SBC as a Route on requests outside a
        dialog, as phones configured with an outbound proxy do.  ``gruu`` makes
        the Contact of its dialogs a GRUU in the lab's domain (RFC 5627), as
        linphone's is: ``sip:USER@DOMAIN;gr=urn:uuid:...``.
        """
        self.lab, self.user, self.transport, self.ip = lab, user, transport, ip
        self.outbound_proxy = outbound_proxy
        self.gruu = f"urn:uuid:{uuid.uuid4()}" if gruu else None
        self.contact_ip = contact_ip or ip
        self.sbc = lab.sip(transport)
        if transport == "tls":
            context = ssl.create_default_context(cafile=lab.tls_ca)
            raw = open_socket(socket.SOCK_STREAM)
            raw.settimeout(5)
            raw.bind((ip, 0))
            raw.connect(self.sbc)
            self.sock: socket.socket = context.wrap_socket(raw, server_hostname="localhost")
            self._buffer = b""
        else:
            self.sock = open_socket(socket.SOCK_DGRAM)
            self.sock.bind((ip, 0))
            self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.tag = secrets.token_hex(4)
        self.cseq = 1
        # Requests that arrived while a response was awaited, oldest first
        # (a NOTIFY may overtake the 2xx of its SUBSCRIBE): next_request's.
        self.pending: list[SipMessage] = []
        # Its answering threads, which read its socket until they end or stop.
        self.answering: list[Answering] = []
        # Every datagram or TLS record received, as it came (the topology-hiding leak test).
        self.received: list[bytes] = []

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.contact_ip}:{self.port};transport={self.transport}>"

    @property
    def dialog_contact(self) -> str:
        """The Contact of a dialog this UA forms: a GRUU, when it uses one."""
        if self.gruu is None:
            return self.contact
        return f"<sip:{self.user}@{self.lab.domain};gr={self.gruu}>"

    def close(self) -> None:
        self.sock.close()

    # --- wire ---------------------------------------------------------------------

    def send(self, message: SipMessage) -> None:
        data = message.to_bytes()
        if self.transport == "tls":
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, self.sbc)

    def receive(self, timeout: float = 5.0) -> SipMessage:
        self.sock.settimeout(timeout)
        if self.transport != "tls":
            while True:
                data = self.sock.recv(65535)
                self.received.append(data)
                if data.strip():  # skip keepalives
                    return parse(data)
        while True:
            if b"\r\n\r\n" in self._buffer:
                head, _, rest = self._buffer.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                if len(rest) >= length:
                    self._buffer = rest[length:]
                    return parse(head + b"\r\n\r\n" + rest[:length])
            chunk = self.sock.recv(65535)
            self.received.append(chunk)
            if not chunk:
                raise ConnectionError("TLS connection closed")
            self._buffer = self._buffer.lstrip(b"\r\n") + chunk

    def response(self, timeout: float = 5.0) -> SipMessage:
        """The next final (or 18x with SDP) response, skipping 100; requests go to ``pending``."""
        while True:
            msg = self.receive(timeout)
            if not msg.status:
                self.pending.append(msg)
            elif msg.status >= 200 or (msg.status > 100 and msg.body):
                return msg

    def next_request(self, timeout: float = 5.0) -> SipMessage:
        """The next request received (``pending`` first), skipping responses."""
        if self.pending:
            return self.pending.pop(0)
        while True:
            msg = self.receive(timeout)
            if not msg.status:
                return msg

    def reply(self, request: SipMessage, status: int, reason: str) -> None:
        """Answer a request received, without a body (a NOTIFY's 200, a SUBSCRIBE's)."""
        to = request.header("To")
        headers = [(k, v) for k, v in request.headers if k.lower() in ("via", "record-route")]
        headers += [
            ("From", request.header("From")),
            ("To", to if ";tag=" in to else f"{to};tag={self.tag}"),
            ("Call-ID", request.header("Call-ID")),
            ("CSeq", request.header("CSeq")),
            ("Contact", self.dialog_contact),
        ]
        self.send(SipMessage(f"SIP/2.0 {status} {reason}", headers))

    # --- requests -----------------------------------------------------------------

    def _via(self) -> str:
        branch = "z9hG4bK" + secrets.token_hex(6)
        return f"SIP/2.0/{self.transport.upper()} {self.ip}:{self.port};branch={branch};rport"

    def request(
        self,
        method: str,
        ruri: str,
        to: str,
        call_id: str,
        body: str = "",
        extra: list[tuple[str, str]] | None = None,
        cseq: int | None = None,
        content_type: str = "application/sdp",
    ) -> SipMessage:
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.user}@{self.lab.domain}>;tag={self.tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq or self.cseq} {method}"),
            ("Contact", self.contact if method == "REGISTER" else self.dialog_contact),
            *(extra or []),
        ]
        if self.outbound_proxy and "tag=" not in to:
            host, port = self.sbc
            headers.append(("Route", f"<sip:{host}:{port};transport={self.transport};lr>"))
        if body:
            headers.append(("Content-Type", content_type))
        return SipMessage(f"{method} {ruri} SIP/2.0", headers, body)

    def _credentials(
        self, challenge: str, method: str, ruri: str, password: str | None = None
    ) -> str:
        params = dict(_AUTH_PARAM.findall(challenge))
        password = self.lab.password(self.user) if password is None else password
        ha1 = hashlib.md5(f"{self.user}:{params['realm']}:{password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{ruri}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{params['nonce']}:{ha2}".encode()).hexdigest()
        return (
            f'Digest username="{self.user}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{ruri}", response="{response}", algorithm=MD5'
        )

    def register(self, expires: int = 300, password: str | None = None) -> int:
        """Register (``expires=0``: remove the binding); returns the final status.

        ``password`` answers the challenge instead of the user's own.
        """
        ruri = f"sip:{self.lab.domain}"
        to = f"<sip:{self.user}@{self.lab.domain}>"
        call_id = secrets.token_hex(8)
        extra = [("Expires", str(expires))]
        self.send(self.request("REGISTER", ruri, to, call_id, extra=extra))
        reply = self.response()
        if reply.status == 401:
            self.cseq += 1
            auth = self._credentials(reply.header("WWW-Authenticate"), "REGISTER", ruri, password)
            self.send(
                self.request("REGISTER", ruri, to, call_id, extra=extra + [("Authorization", auth)])
            )
            reply = self.response()
        self.cseq += 1
        return reply.status

    def authenticated(
        self,
        method: str,
        ruri: str,
        body: str = "",
        content_type: str = "application/sdp",
        extra: list[tuple[str, str]] | None = None,
    ) -> tuple[SipMessage, SipMessage]:
        """Send a request outside a dialog to ``ruri`` (also its To), answering one 401/407.

        Returns the request as last sent and its final response.  Not for
        INVITE, whose negative replies need an ACK (``call`` does that).
        """
        to, call_id = f"<{ruri}>", secrets.token_hex(8)
        request = self.request(method, ruri, to, call_id, body, extra, content_type=content_type)
        self.send(request)
        reply = self.response()
        if reply.status in (401, 407):
            challenge, answer = (
                ("WWW-Authenticate", "Authorization")
                if reply.status == 401
                else ("Proxy-Authenticate", "Proxy-Authorization")
            )
            self.cseq += 1
            credentials = self._credentials(reply.header(challenge), method, ruri)
            extra = [*(extra or []), (answer, credentials)]
            request = self.request(
                method, ruri, to, call_id, body, extra, content_type=content_type
            )
            self.send(request)
            reply = self.response()
        self.cseq += 1
        return request, reply

    def call(
        self,
        callee: str,
        offer: str,
        timeout: float = 10.0,
        cancel_on_ringing: bool = False,
        call_id: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Call:
        """INVITE ``callee`` (answering the PBX's 407); returns with the final response.

        ``callee`` is a user of the lab's domain, or ``user@domain`` of another.

        ``cancel_on_ringing`` CANCELs the INVITE at its first 18x; the final
        response is then the INVITE's (487 when the CANCEL won).  ``call_id``
        chooses the Call-ID (e.g. one that lands on a given rtpengine); ``extra``
        headers go into both INVITEs.
        """
        # "bob" is a user of the lab's domain; "bob@example.org" of another.
        ruri = f"sip:{callee}" if "@" in callee else f"sip:{callee}@{self.lab.domain}"
        call = Call(self, call_id or secrets.token_hex(10), ruri)
        invite, reply = self._invite(call, offer, timeout, cancel_on_ringing, extra)
        call.invite, call.reply = invite, reply
        if cancel_on_ringing and 100 < reply.status < 200:
            self.send(self._cancel(invite))
            reply = self._final_of(invite, timeout)
            call.reply = reply
        if reply.status >= 300:
            self._ack_failure(invite, reply)
        elif reply.status == 200:
            call.ack()
        return call

    def ring(self, callee: str, offer: str, timeout: float = 10.0) -> Call:
        """INVITE ``callee`` (answering the PBX's 407) and return at its first 18x (or a
        final response that came first): the call is still ringing, for ``Call.cancel``."""
        call = Call(self, secrets.token_hex(10), f"sip:{callee}@{self.lab.domain}")
        invite, reply = self._invite(call, offer, timeout, until_ringing=True)
        call.invite, call.reply = invite, reply
        if reply.status >= 300:
            self._ack_failure(invite, reply)
        return call

    def _invite(
        self,
        call: Call,
        offer: str,
        timeout: float,
        until_ringing: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> tuple[SipMessage, SipMessage]:
        """``call``'s INVITE, sent again with credentials after the PBX's 407, and its reply.

        The reply is the first final (or 18x with SDP) response; after a 407, with
        ``until_ringing``, the first 18x (or a final response that came first).
        """
        to = f"<{call.ruri}>"
        invite = self.request("INVITE", call.ruri, to, call.call_id, offer, extra=extra)
        self.send(invite)
        reply = self.response(timeout)
        if reply.status == 407:
            self._ack_failure(invite, reply)
            self.cseq += 1
            auth = self._credentials(reply.header("Proxy-Authenticate"), "INVITE", call.ruri)
            invite = self.request(
                "INVITE",
                call.ruri,
                to,
                call.call_id,
                offer,
                extra=[*(extra or []), ("Proxy-Authorization", auth)],
            )
            self.send(invite)
            reply = self._ringing(timeout) if until_ringing else self.response(timeout)
        return invite, reply

    def _ringing(self, timeout: float) -> SipMessage:
        while True:
            msg = self.receive(timeout)
            if msg.status > 100:
                return msg

    def _final_of(self, request: SipMessage, timeout: float) -> SipMessage:
        """The final response to ``request`` (by CSeq method), skipping the others."""
        method = request.method
        while True:
            msg = self.receive(timeout)
            if msg.status >= 200 and msg.header("CSeq").split()[-1] == method:
                return msg

    def _cancel(self, invite: SipMessage) -> SipMessage:
        headers = [
            (k, v) for k, v in invite.headers if k.lower() in ("via", "from", "to", "call-id")
        ]
        headers += [
            ("Max-Forwards", "70"),
            ("CSeq", f"{invite.header('CSeq').split()[0]} CANCEL"),
        ]
        return SipMessage(invite.start.replace("INVITE", "CANCEL", 1), headers)

    def _ack_failure(self, invite: SipMessage, reply: SipMessage) -> None:
        headers = [
            ("Via", invite.header("Via")),
            ("Max-Forwards", "70"),
            ("From", invite.header("From")),
            ("To", reply.header("To")),
            ("Call-ID", invite.header("Call-ID")),
            ("CSeq", f"{invite.header('CSeq').split()[0]} ACK"),
            # RFC 3261 17.1.1.3: the INVITE's Route set, the outbound proxy included.
            *(("Route", route) for route in invite.all("Route")),
        ]
        self.send(SipMessage(invite.start.replace("INVITE", "ACK", 1), headers))

    # --- answering ----------------------------------------------------------------

    def answer_in_background(
        self, answer: str | Callable[[str], str], status: int = 200
    ) -> Answering:
        """Answer the next INVITE with ``answer``: an SDP, or a function of the offer's SDP."""
        answering = Answering(self, answer, status)
        self.answering.append(answering)
        return answering


@dataclass
class Call:
    ua: UserAgent
    call_id: str
    ruri: str
    invite: SipMessage | None = None
    reply: SipMessage | None = None

    def _in_dialog(self, method: str, cseq: int, body: str = "") -> SipMessage:
        assert self.reply is not None
        routes = list(reversed(self.reply.all("Record-Route")))
        contact = re.search(r"<([^>]+)>", self.reply.header("Contact")).group(1)  # type: ignore[union-attr]
        extra = [("Route", ", ".join(routes))] if routes else []
        return self.ua.request(
            method, contact, self.reply.header("To"), self.call_id, body, extra=extra, cseq=cseq
        )

    def ack(self, cseq: int | None = None) -> None:
        assert self.invite is not None
        self.ua.send(self._in_dialog("ACK", cseq or int(self.invite.header("CSeq").split()[0])))

    def reinvite(self, offer: str, timeout: float = 10.0) -> SipMessage:
        """A re-INVITE with ``offer`` in the dialog; its final response, ACKed when 2xx."""
        self.ua.cseq += 10
        cseq = self.ua.cseq
        self.ua.send(self._in_dialog("INVITE", cseq, offer))
        reply = self.ua.response(timeout)
        while not reply.status >= 200:  # an 18x with SDP: wait for the final response
            reply = self.ua.response(timeout)
        if reply.status < 300:
            self.ack(cseq)
        return reply

    def bye(self) -> int:
        self.ua.send(self._in_dialog("BYE", self.ua.cseq + 10))
        return self.ua.response().status

    def cancel(self, timeout: float = 10.0) -> SipMessage:
        """CANCEL the ringing INVITE; its final response (487 when the CANCEL won), ACKed."""
        assert self.invite is not None
        self.ua.send(self.ua._cancel(self.invite))
        reply = self.ua._final_of(self.invite, timeout)
        self.reply = reply
        if reply.status >= 300:
            self.ua._ack_failure(self.invite, reply)
        return reply


class Answering:
    """Waits for one INVITE on ``ua`` and answers it; then takes the ACK and a BYE."""

    def __init__(self, ua: UserAgent, answer: str | Callable[[str], str], status: int) -> None:
        self.ua, self.answer, self.status = ua, answer, status
        self.invite: SipMessage | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.acked = threading.Event()
        self.done = threading.Event()
        self.answered = threading.Event()
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _reply(self, request: SipMessage, status: int, reason: str, body: str = "") -> None:
        headers = [(k, v) for k, v in request.headers if k.lower() in ("via", "record-route")]
        to = request.header("To")
        if ";tag=" not in to:
            to += f";tag={self.ua.tag}"
        headers += [
            ("From", request.header("From")),
            ("To", to),
            ("Call-ID", request.header("Call-ID")),
            ("CSeq", request.header("CSeq")),
            ("Contact", self.ua.dialog_contact),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        self.ua.send(SipMessage(f"SIP/2.0 {status} {reason}", headers, body))

    def stop(self) -> None:
        """Stop answering (within half a second): the UA's socket is its own again."""
        self._stopping.set()
        self.thread.join(2)

    def _next(self, patience: float = 15.0) -> SipMessage | None:
        """The next message, or None once stopped; TimeoutError after ``patience`` seconds."""
        deadline = time.monotonic() + patience
        while not self._stopping.is_set():
            try:
                return self.ua.receive(timeout=0.5)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
        return None

    def _run(self) -> None:
        try:
            while True:
                msg = self._next()
                if msg is None:
                    return
                if msg.status:
                    continue
                if msg.method == "INVITE":
                    self.invite = msg
                    if self.status == 200:
                        self._reply(msg, 180, "Ringing")
                        answer = self.answer(msg.body) if callable(self.answer) else self.answer
                        self._reply(msg, 200, "OK", answer)
                        self.answered.set()
                    elif self.status == 180:
                        # Rings until CANCELled.
                        self._reply(msg, 180, "Ringing")
                        self.answered.set()
                    else:
                        self._reply(msg, self.status, "Busy Here")
                        self.answered.set()
                        return
                elif msg.method == "BYE":
                    self._reply(msg, 200, "OK")
                    return
                elif msg.method == "CANCEL" and self.invite is not None:
                    self._reply(msg, 200, "OK")
                    self._reply(self.invite, 487, "Request Terminated")
                    self.cancelled = True
                    return
                elif msg.method == "ACK":
                    self.acked.set()
                else:
                    self._reply(msg, 200, "OK")
        except BaseException as exc:  # reported to the test by wait()
            self.error = exc
        finally:
            self.answered.set()
            self.done.set()

    def bye(self) -> SipMessage:
        """The callee's BYE for the answered INVITE (the caller's Contact, its route set)."""
        assert self.invite is not None
        invite = self.invite
        target = re.search(r"<([^>]+)>", invite.header("Contact")).group(1)  # type: ignore[union-attr]
        to = invite.header("To")
        headers = [
            ("Via", self.ua._via()),
            ("Max-Forwards", "70"),
            ("From", to if ";tag=" in to else f"{to};tag={self.ua.tag}"),
            ("To", invite.header("From")),
            ("Call-ID", invite.header("Call-ID")),
            ("CSeq", "1 BYE"),
        ]
        if invite.all("Record-Route"):  # an empty route set sends no Route (RFC 3261 12.2.1.1)
            headers.append(("Route", ", ".join(invite.all("Record-Route"))))
        return SipMessage(f"BYE {target} SIP/2.0", headers)

    def wait(self, timeout: float = 20) -> SipMessage:
        """The INVITE as the callee received it, once answered."""
        self.answered.wait(timeout)
        if self.invite is None:
            raise AssertionError(f"the callee got no INVITE ({self.error!r})")
        return self.invite


@dataclass
class RtpPeer:
    """A media socket that sends RTP and counts what arrives, by SSRC."""

    ip: str = "127.0.0.1"
    open_socket: SocketOpener = plain_socket
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = self.open_socket(socket.SOCK_DGRAM)
        self.sock.bind((self.ip, 0))

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, target: tuple[str, int], ssrc: int, count: int, payload: bytes = b"") -> None:
        for seq in range(count):
            packet = payload or (
                bytes([0x80, 0])
                + seq.to_bytes(2, "big")
                + (seq * 160).to_bytes(4, "big")
                + ssrc.to_bytes(4, "big")
                + b"\xff" * 160
            )
            self.sock.sendto(packet, target)

    def receive(self, timeout: float = 0.5) -> list[bytes]:
        self.sock.settimeout(timeout)
        got = []
        try:
            while True:
                got.append(self.sock.recv(4096))
        except (TimeoutError, BlockingIOError):
            pass
        return got

    def close(self) -> None:
        self.sock.close()


def talk(*speakers: tuple[RtpPeer, tuple[str, int], int], seconds: float = 5.0) -> None:
    """Each (socket, relay port, SSRC) sends RTP at 50 packets/s for ``seconds``.

    Long enough for rtpengine 10.5, which commits to a media source with the
    first packet 3-4 s (whole seconds) after the last signalling; strict
    source applies from then on.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for media, target, ssrc in speakers:
            media.send(target, ssrc=ssrc, count=1)
        time.sleep(0.02)
