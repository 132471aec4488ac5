"""A call out through a TLS trunk reaches the server the trunk names, or fails.

Two "carriers" listen for TLS on loopback, each with a certificate of the
lab CA (so the chain verifies): one names the trunk's ``server_name``, the
other names another host.  Each answers an INVITE with 100 and 486.  The
SBC must relay the first one's answer and refuse the second one's: its
replies dropped, its connection closed, a ``tls_policy`` event.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipshield.lab.net import free_port
from sipshield.lab.sip_ua import RtpPeer, UserAgent, sdp
from sipshield.lab.tls_material import issue_certificate
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up

pytestmark = pytest.mark.integration

RIGHT, WRONG = free_port(), free_port()
POLICY = f"""\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
  trunks:
    - {{name: right-carrier, target: "127.0.0.1:{RIGHT}", transport: tls,
       server_name: trunk.test, numbers: ["+1555"]}}
    - {{name: wrong-carrier, target: "127.0.0.1:{WRONG}", transport: tls,
       server_name: trunk.test, numbers: ["+1666"]}}
"""


class TlsCarrier:
    """A TLS server that answers every INVITE with 100 Trying and 486 Busy Here."""

    def __init__(self, port: int, certificate: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate, key)
        self.listener = socket.create_server(("127.0.0.1", port))
        self.invites: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                buffer = b""
                while True:
                    chunk = conn.recv(65535)
                    if not chunk:
                        return
                    buffer += chunk
                    while b"\r\n\r\n" in buffer:
                        head, _, rest = buffer.partition(b"\r\n\r\n")
                        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                        length = int(match.group(1)) if match else 0
                        if len(rest) < length:
                            break
                        buffer = rest[length:]
                        self._answer(conn, head.decode(errors="replace"))
        except (OSError, ssl.SSLError):
            return

    def _answer(self, conn: ssl.SSLSocket, head: str) -> None:
        if not head.startswith("INVITE "):
            return
        self.invites.append(head)
        keep = [
            line
            for line in head.split("\r\n")[1:]
            if line.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")
        ]
        for status in ("100 Trying", "486 Busy Here"):
            lines = [
                line
                + (";tag=carrier" if line.lower().startswith("to:") and "486" in status else "")
                for line in keep
            ]
            conn.sendall(
                f"SIP/2.0 {status}\r\n".encode()
                + "".join(f"{line}\r\n" for line in lines).encode()
                + b"Content-Length: 0\r\n\r\n"
            )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[RunningLab]:
    tmp = tmp_path_factory.mktemp("trunk-tls")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    running = lab_up(policy, tmp / "lab")
    yield running
    lab_down(running)


@pytest.fixture(scope="module")
def carriers(lab: RunningLab) -> Iterator[tuple[TlsCarrier, TlsCarrier]]:
    tls = lab.directory / "tls"
    ca = (tls / "ca.crt", tls / "ca.key")
    right = TlsCarrier(RIGHT, *issue_certificate(tls, "right", "trunk.test", ["trunk.test"], ca))
    wrong = TlsCarrier(WRONG, *issue_certificate(tls, "wrong", "other.test", ["other.test"], ca))
    yield right, wrong
    right.close()
    wrong.close()


def _call(lab: RunningLab, number: str):
    alice = UserAgent(lab, "alice")
    try:
        assert alice.register() == 200
        return alice.call(number, sdp(RtpPeer().port))
    finally:
        alice.close()


def test_the_carrier_that_names_the_trunk_answers(lab: RunningLab, carriers):
    right, _ = carriers
    call = _call(lab, "+15551234")
    assert call.reply is not None and call.reply.status == 486, call.reply
    assert any(call.call_id in invite for invite in right.invites)


def test_a_carrier_whose_certificate_names_another_host_is_refused(lab: RunningLab, carriers):
    _, wrong = carriers
    call = _call(lab, "+16661234")
    # Its 486 never reaches the caller: the transaction times out.
    assert call.reply is not None and call.reply.status == 408, call.reply
    event = lab.wait_for_event(module="tls_policy", call_id=call.call_id)
    assert event["action"] == "drop"
    assert event["reason"] == (
        "trunk wrong-carrier: server certificate names ['other.test'] do not include trunk.test"
    ), event
    # The request itself reached it: the check can only run on its replies.
    assert any(call.call_id in invite for invite in wrong.invites)
    # The right carrier still answers.
    assert _call(lab, "+15559876").reply.status == 486
