"""Dialog tokens in drop-in mode: Debian's stock kamailio.cfg with dialog_guard on.

The stock configuration is a single proxy between two outside parties, and it
record-routes each dialog once.  Its one Record-Route entry gets both tokens:
the caller's from the record-route hook (``shd``, its source) and the
callee's from the branch hook in ``branch_route[MANAGE_BRANCH]`` (``shdb``,
the branch's destination).  Each party's in-dialog requests verify against
the token that binds it; a forgery with the whole dialog copied from the wire
(Call-ID, tags, Route set) but from another source gets 403 and never reaches
the other party.  The stock file adds no ``ftag`` (``append_fromtag`` is 0):
the verifier takes the dialog's tag from the token's role.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Iterator

import pytest

from sipshield.sip.dialog_tokens import rotate_key_file
from tests.integration.dropin_peer import calls, events
from tests.support.stock_kamailio import StockKamailio, start

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.66"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockKamailio]:
    directory = tmp_path_factory.mktemp("stock-dialog-guard")
    keys = directory / "dialog-keys"
    rotate_key_file(keys)
    policy = {
        "modules": [
            {"name": "validation"},
            {"name": "dialog_guard", "key_file": str(keys)},
        ]
    }
    running = start(directory / "kamailio", policy)
    yield running
    running.stop()


class Party:
    """One end of a hand-made dialog through the proxy, on its own UDP socket."""

    def __init__(self, kamailio: StockKamailio, user: str, ip: str = "127.0.0.1") -> None:
        self.kamailio, self.user, self.ip = kamailio, user, ip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.port = self.sock.getsockname()[1]
        self.contact = f"sip:{user}@{ip}:{self.port}"
        self.tag = secrets.token_hex(4)

    def close(self) -> None:
        self.sock.close()

    def send(self, lines: list[str]) -> None:
        raw = "\r\n".join([*lines, "Content-Length: 0", "", ""]).encode()
        self.sock.sendto(raw, self.kamailio.address)

    def receive(self, wanted: str, timeout: float = 3.0) -> str:
        """The next message whose first line starts with ``wanted`` (a method or 'SIP/2.0 200')."""
        self.sock.settimeout(timeout)
        while True:
            message = self.sock.recv(65535).decode(errors="replace")
            if message.startswith(wanted):
                return message

    def nothing_arrives(self, timeout: float = 0.7) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65535).startswith(b"SIP/2.0 1"):
                    return False
        except TimeoutError:
            return True

    def via(self) -> str:
        return f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport"

    def answer(self, request: str, status: str = "200 OK", to_tag: str = "") -> None:
        """Reply to ``request`` through the proxy (Vias and Record-Route echoed)."""
        keep = [
            line
            for line in request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
            if re.match(r"(?i)(via|record-route|from|call-id|cseq):", line)
        ]
        to = header(request, "To") + (f";tag={to_tag}" if to_tag else "")
        self.send([f"SIP/2.0 {status}", *keep, f"To: {to}", f"Contact: <{self.contact}>"])


def header(message: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*?)\r?$", message, re.M | re.I)
    assert match, f"no {name} in\n{message}"
    return match.group(1).strip()


def record_routes(message: str) -> list[str]:
    return re.findall(r"^Record-Route:\s*(.*?)\r?$", message, re.M | re.I)


class Dialog:
    """alice calls bob through the proxy; what an observer on the wire knows of it."""

    def __init__(self, kamailio: StockKamailio) -> None:
        self.kamailio = kamailio
        self.alice, self.bob = Party(kamailio, "alice"), Party(kamailio, "bob")
        domain = kamailio.domain
        self.bob.send([
            f"REGISTER sip:{domain} SIP/2.0", self.bob.via(), "Max-Forwards: 70",
            f"From: <sip:bob@{domain}>;tag={self.bob.tag}", f"To: <sip:bob@{domain}>",
            f"Call-ID: {secrets.token_hex(8)}", "CSeq: 1 REGISTER",
            f"Contact: <{self.bob.contact}>", "Expires: 300",
        ])  # fmt: skip
        self.bob.receive("SIP/2.0 200")
        self.call_id = secrets.token_hex(10)
        self.alice_id = f"<sip:alice@{domain}>;tag={self.alice.tag}"
        self.bob_id = f"<sip:bob@{domain}>;tag={self.bob.tag}"
        self.alice.send([
            f"INVITE sip:bob@{domain} SIP/2.0", self.alice.via(), "Max-Forwards: 70",
            f"From: {self.alice_id}", f"To: <sip:bob@{domain}>", f"Call-ID: {self.call_id}",
            "CSeq: 1 INVITE", f"Contact: <{self.alice.contact}>",
        ])  # fmt: skip
        self.invite = self.bob.receive("INVITE ")
        self.bob.answer(self.invite, to_tag=self.bob.tag)
        ok = self.alice.receive("SIP/2.0 200")
        # The Route set of each side: bob's is the INVITE's Record-Route, alice's its reverse.
        self.bob_routes = record_routes(self.invite)
        self.alice_routes = list(reversed(record_routes(ok)))
        self.alice.send(self.in_dialog("ACK", 1, as_alice=True))
        self.bob.receive("ACK ")

    def in_dialog(
        self, method: str, cseq: int, as_alice: bool, source: Party | None = None
    ) -> list[str]:
        sender = source or (self.alice if as_alice else self.bob)
        target = self.bob.contact if as_alice else self.alice.contact
        routes = self.alice_routes if as_alice else self.bob_routes
        ours, theirs = (self.alice_id, self.bob_id) if as_alice else (self.bob_id, self.alice_id)
        return [
            f"{method} {target} SIP/2.0", sender.via(), "Max-Forwards: 70",
            *(f"Route: {route}" for route in routes),
            f"From: {ours}", f"To: {theirs}", f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]  # fmt: skip

    def close(self) -> None:
        self.alice.close()
        self.bob.close()


def test_one_record_route_entry_carries_a_token_for_each_party(guarded):
    dialog = Dialog(guarded)
    try:
        (entry,) = dialog.bob_routes
        assert re.search(r";shd=[^.;>]+\.cu\d+\.", entry), entry
        assert re.search(rf";shdb=[^.;>]+\.eu{dialog.bob.port}\.", entry), entry
        dialog.alice.send(dialog.in_dialog("BYE", 2, as_alice=True))
        dialog.bob.answer(dialog.bob.receive("BYE "))
        dialog.alice.receive("SIP/2.0 200")
    finally:
        dialog.close()


def test_forged_requests_are_refused_and_both_parties_keep_theirs(guarded):
    dialog = Dialog(guarded)
    try:
        attacker = Party(guarded, "mallory", ATTACKER)
        for as_alice in (True, False):
            forged = dialog.in_dialog("BYE", 5, as_alice=as_alice, source=attacker)
            attacker.send(forged)
            assert attacker.receive("SIP/2.0 ").startswith("SIP/2.0 403 "), as_alice
        attacker.close()
        assert dialog.bob.nothing_arrives() and dialog.alice.nothing_arrives()
        # The callee's own in-dialog request verifies against its (branch) token.
        dialog.bob.send(dialog.in_dialog("INFO", 1, as_alice=False))
        dialog.alice.answer(dialog.alice.receive("INFO "))
        dialog.bob.receive("SIP/2.0 200")
        # And the caller's real BYE ends the call.
        dialog.alice.send(dialog.in_dialog("BYE", 2, as_alice=True))
        dialog.bob.answer(dialog.bob.receive("BYE "))
        dialog.alice.receive("SIP/2.0 200")
    finally:
        dialog.close()
    refused = [e for e in events(guarded) if e.get("call_id") == dialog.call_id]
    assert [(e["module"], e["action"]) for e in refused] == [("dialog_guard", "reject")] * 2
    assert all(e["src"].startswith(f"{ATTACKER}:") for e in refused)


def test_sipp_calls_complete_with_dialog_guard_on(guarded):
    assert calls(guarded) == (3, 3)
    assert not [e for e in events(guarded) if e["module"] == "dialog_guard"
                and not e["src"].startswith(f"{ATTACKER}:")]  # fmt: skip
