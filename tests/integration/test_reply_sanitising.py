"""A reply built from request data cannot carry the attacker's header lines.

Kamailio hands a folded header's value to Python with its line break (CRLF
and the folding whitespace).  A module that echoes it into a reason phrase or
a reply header would let the sender write header lines into sipshield's
reply; remediation replaces what is not printable ASCII in the phrase and
drops it from header values.
"""

from __future__ import annotations

import socket

import pytest

from tests.integration.sip_messages import options

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: plugin, target: 'echo_refusal:EchoRefusal'}
"""


def exchange(address: tuple[str, int], raw: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        sock.sendto(raw, address)
        return sock.recv(65535)


def test_a_folded_header_echoed_into_a_reply_injects_no_header_line(make_lab):
    lab = make_lab(POLICY)
    # Folding: the value continues on the next line, which starts with a space.
    raw, _ = options(lab.sip_target(), "X-Refuse: Go away\r\n X-Injected: yes\r\n")
    reply = exchange(lab.sip(), raw)
    status_line, *header_lines = reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert status_line.startswith(b"SIP/2.0 403 Go away")
    assert b"\r" not in status_line and b"\n" not in status_line
    names = [line.split(b":", 1)[0].strip().lower() for line in header_lines]
    assert b"x-injected" not in names, reply
    echoed = [line for line in header_lines if line.lower().startswith(b"x-echo:")]
    assert len(echoed) == 1 and b"X-Injected: yes" in echoed[0], reply


def test_the_same_module_answers_a_plain_refusal_as_written(make_lab):
    lab = make_lab(POLICY)
    raw, _ = options(lab.sip_target(), "X-Refuse: Go away\r\n")
    reply = exchange(lab.sip(), raw)
    assert reply.startswith(b"SIP/2.0 403 Go away\r\n")
    assert b"\r\nX-Echo: Go away\r\n" in reply
    # Without the header the request is served.
    assert lab.send(options(lab.sip_target())[0]) == 200
