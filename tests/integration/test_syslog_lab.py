"""The SBC's security events reach a syslog collector whole, whatever the attacker wrote.

A scanner with quotes, ``|``, ``=``, ``]`` and a backslash in its User-Agent
and its user name is banned by the real SBC; the test's UDP socket receives
what a syslog daemon would, syslog-rfc5424-parser reads it, and every field
must equal the event in the event file.  A legitimate request beside it
produces no message at all.
"""

from __future__ import annotations

import json
import re
import socket

import pytest
from syslog_rfc5424_parser import SyslogMessage

from tests.integration.lab_fixture import RunningLab, lab_with_policy
from tests.integration.sip_messages import options

pytestmark = pytest.mark.integration

HOSTILE_AGENT = 'friendly-scanner "x|y=z]w\\v'
HOSTILE_USER = "ev=il&a+b$c"


@pytest.fixture(scope="module")
def collector():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, collector: socket.socket):
    port = collector.getsockname()[1]
    policy = f"""\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
events:
  syslog: {{address: "udp:127.0.0.1:{port}", format: ecs, facility: auth}}
modules:
  - {{name: bans}}
  - {{name: scanner}}
"""
    with lab_with_policy(tmp_path_factory.mktemp("syslog"), policy) as running:
        yield running


def unescape_sd(value: str) -> str:
    return re.sub(r'\\(["\\\]])', r"\1", value)


def test_a_scanner_event_arrives_whole_and_legitimate_traffic_sends_none(
    lab: RunningLab, collector: socket.socket
):
    # Legitimate first: had it produced a message, that message would arrive first.
    assert lab.options(source_ip="127.0.0.9") == 200
    attack, call_id = options(lab.sip_target(), f"User-Agent: {HOSTILE_AGENT}\r\n")
    attack = attack.replace(b"sip:tester@", f"sip:{HOSTILE_USER}@".encode())
    assert lab.send(attack, source_ip="127.0.0.44", timeout=1.0) is None  # banned: dropped
    event = lab.wait_for_event(module="scanner", call_id=call_id)
    # The scanner module quotes the User-Agent as Python does (backslash doubled).
    assert event["user"] == HOSTILE_USER and repr(HOSTILE_AGENT) in event["reason"]

    datagram = collector.recv(65536)
    message = SyslogMessage.parse(datagram.decode()).as_dict()
    assert (message["facility"], message["severity"]) == ("auth", "warning")
    assert (message["hostname"], message["appname"], message["msgid"]) == (
        event["node"],
        "sipshield",
        "ban",
    )
    fields = {k: unescape_sd(v) for k, v in message["sd"]["sipshield@32473"].items()}
    assert fields == {
        key: str(event[key])
        for key in ("module", "action", "mode", "src", "user", "method", "call_id", "reason")
    }
    body = json.loads(message["msg"])
    assert body["user"] == {"name": HOSTILE_USER}
    assert body["event"]["reason"] == event["reason"]
    assert body["event"]["action"] == "ban"
    assert body["source"]["ip"] == "127.0.0.44"
    assert body["labels"]["sip_call_id"] == call_id
