"""A SIP peer for the drop-in tests: hand-built requests, SIPp runs and checks.

The configurations under test (Debian's stock kamailio.cfg, an operator's KEMI
script) register users without authentication and use the listening address
as their domain.
"""

from __future__ import annotations

import json
import secrets
import socket
import time

from sipshield.lab.net import free_port
from sipshield.lab.sipp import SippServer, run_sipp
from tests.support.stock_kamailio import StockKamailio


def final_status_line(
    kamailio: StockKamailio, raw: bytes, source_ip: str = "127.0.0.1", timeout: float = 2.0
) -> str | None:
    """Send one request over UDP; the first final reply's status line, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_ip, 0))
        sock.settimeout(timeout)
        sock.sendto(raw.replace(b"{local}", f"{source_ip}:{sock.getsockname()[1]}".encode()),
                    kamailio.address)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = sock.recv(65535).split(b"\r\n", 1)[0].decode(errors="replace")
            except TimeoutError:
                return None
            if line.startswith("SIP/2.0 ") and int(line.split()[1]) >= 200:
                return line
    return None


def request(kamailio: StockKamailio, method: str, ruri: str, extra: str = "") -> bytes:
    domain = kamailio.domain
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {{local}};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{domain}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <{ruri}>\r\n"
        f"Call-ID: {secrets.token_hex(10)}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def register(kamailio: StockKamailio, user: str, port: int, source: str = "127.0.0.1"):
    return run_sipp("register_noauth", kamailio.target, service=user, local_ip=source,
                    local_port=port, keys={"domain": kamailio.domain})  # fmt: skip


def calls(kamailio: StockKamailio, count: int = 3) -> tuple[int, int]:
    """bob registers and answers, alice calls him; (calls placed ok, calls answered)."""
    port = free_port()
    assert register(kamailio, "bob", port).ok
    callee = SippServer("call_uas", local_port=port, calls=count,
                        keys={"domain": kamailio.domain})  # fmt: skip
    caller = run_sipp("call_uac_noauth", kamailio.target, service="bob", calls=count, rate=5,
                      talk_ms=100, keys={"domain": kamailio.domain, "caller": "alice"})  # fmt: skip
    answered = callee.finish()
    assert caller.ok, caller.explain()
    return caller.successful, answered.successful


def bans(kamailio: StockKamailio) -> dict[str, dict]:
    client = kamailio.redis()
    return {
        scope: client.hgetall(f"sipshield:ban:{scope}")
        for scope in client.zrangebyscore("sipshield:bans", time.time(), "+inf")
    }


def events(kamailio: StockKamailio) -> list[dict]:
    path = kamailio.events_file
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def attack(kamailio: StockKamailio, scenario: str, source: str, calls: int, rate: int, **keys):
    return run_sipp(scenario, kamailio.target, local_ip=source, calls=calls, rate=rate,
                    service="nobody", timeout_s=int(calls / rate) + 10,
                    keys={"domain": kamailio.domain, **keys})  # fmt: skip


def sweep_refused_extensions(shielded: StockKamailio, source: str) -> None:
    """Probe eleven registered extensions from ``source``; each callee answers 404.

    The 404s come back through the reply route only: they feed the scanner's
    sweep detection when the configuration calls sipshield there.  Eleven is
    one past the scanners' limit of ten distinct users in the policies that
    use this: a twelfth INVITE would race the ban the eleventh reply brings
    (dropped once the ban is in, and never relayed).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as refuser:
        refuser.bind(("127.0.0.1", 0))
        refuser.settimeout(2)
        here = f"127.0.0.1:{refuser.getsockname()[1]}"
        # Eleven extensions exist (are registered, all on this socket) and refuse calls.
        users = [f"ext{n}" for n in range(11)]
        for user in users:
            raw = request(shielded, "REGISTER", f"sip:{shielded.domain}",
                          f"Contact: <sip:{user}@{here}>\r\nExpires: 300\r\n")  # fmt: skip
            raw = raw.replace(b"{local}", here.encode())
            raw = raw.replace(b"<sip:alice@", f"<sip:{user}@".encode())
            raw = raw.replace(f"To: <sip:{shielded.domain}>".encode(),
                              f"To: <sip:{user}@{shielded.domain}>".encode())  # fmt: skip
            refuser.sendto(raw, shielded.address)
            assert refuser.recv(65535).startswith(b"SIP/2.0 200 ")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prober:
            prober.bind((source, 0))
            local = f"{source}:{prober.getsockname()[1]}".encode()
            for user in users:
                raw = request(shielded, "INVITE", f"sip:{user}@{shielded.domain}")
                prober.sendto(raw.replace(b"{local}", local), shielded.address)
                answer_404(refuser)


ECHOED = {b"via", b"from", b"to", b"call-id", b"cseq"}


def answer_404(sock: socket.socket) -> None:
    """Answer the next INVITE relayed to ``sock`` with 404, echoing what a reply needs."""
    while True:
        data, peer = sock.recvfrom(65535)
        if data.startswith(b"INVITE "):
            break
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = [h for h in head if h.split(b":")[0].strip().lower() in ECHOED]
    keep = [h + b";tag=refuse" if h.lower().startswith(b"to:") else h for h in keep]
    reply = b"SIP/2.0 404 Not Found\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"
    sock.sendto(reply, peer)


def wait_for_ban(kamailio: StockKamailio, scope: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while scope not in bans(kamailio) and time.monotonic() < deadline:
        time.sleep(0.1)
    return bans(kamailio).get(scope, {})


def logged(kamailio: StockKamailio, text: str, timeout: float = 3.0) -> bool:
    """True once Kamailio's log holds ``text`` (a route logs after it has replied)."""
    deadline = time.monotonic() + timeout
    while text not in kamailio.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
