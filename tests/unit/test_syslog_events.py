"""Events as syslog: what a real collector socket receives, read by a parser that is not ours.

The receiver is a plain UDP (or TCP, or local datagram) socket: it gets the
bytes a syslog daemon would.  syslog-rfc5424-parser splits each message into
its header, structured data and body (it leaves the structured-data escapes
in place, so the test undoes RFC 5424's three escapes itself), and the body
is read with the json module.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from pathlib import Path

import pycef
import pytest
from syslog_rfc5424_parser import SyslogMessage

from sipshield.core.event_formats import SEVERITY_BY_ACTION, severity
from sipshield.core.events import Event, EventSink
from sipshield.core.policy import EventSettings, PolicyError, load_policy
from sipshield.core.state import RedisSettings, SharedState
from sipshield.core.syslog import field_text

HOSTILE = 'al"ice|x=y]z\\w\r\nFAKE: 1\x00end\u2028more'
SYSLOG_SEVERITY_NAMES = {3: "err", 4: "warning", 5: "notice", 6: "info"}


def unescape_sd(value: str) -> str:
    return re.sub(r'\\(["\\\]])', r"\1", value)


def unescape_cef(value: str) -> str:
    """pycef splits the fields but leaves CEF's escapes (backslash before \\ or =)."""
    return re.sub(r"\\([\\=])", r"\1", value)


def hostile_event(action: str = "ban") -> Event:
    return Event(
        module="scanner",
        action=action,
        src="192.0.2.7:5062",
        reason=f"scanner User-Agent {HOSTILE!r} and {HOSTILE}",
        call_id=HOSTILE,
        method="REGISTER",
        user=HOSTILE,
        node="sbc1",
    )


def sink(tmp_path: Path, syslog: dict) -> EventSink:
    settings = EventSettings(file=tmp_path / "events.jsonl", syslog=syslog)
    # No Redis (nothing listens on port 1): events wait in the buffer, as in an outage.
    state = SharedState(RedisSettings(url="redis://127.0.0.1:1/0", timeout_ms=50))
    return EventSink(settings, state, "sbc1")


@pytest.fixture
def udp_receiver():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    yield receiver
    receiver.close()


@pytest.mark.parametrize("body_format", ["json", "ecs", "cef"])
def test_hostile_text_stays_inside_its_fields(tmp_path, udp_receiver, body_format):
    port = udp_receiver.getsockname()[1]
    events = sink(tmp_path, {"address": f"udp:127.0.0.1:{port}", "format": body_format})
    event = hostile_event()
    events.emit(event)
    datagram = udp_receiver.recv(65536)
    # One line: no byte of it ends a line or a string for a line-based collector.
    assert not set(datagram) & {0x00, 0x0A, 0x0D}
    message = SyslogMessage.parse(datagram.decode()).as_dict()
    assert message["facility"] == "local0"
    assert message["severity"] == "warning"  # a ban
    assert (message["hostname"], message["appname"], message["msgid"]) == (
        "sbc1",
        "sipshield",
        "ban",
    )
    fields = {k: unescape_sd(v) for k, v in message["sd"]["sipshield@32473"].items()}
    # Structured data: every field whole, line breaks and NUL replaced, the rest as sent.
    assert fields == {
        "module": "scanner",
        "action": "ban",
        "mode": "enforce",
        "src": "192.0.2.7:5062",
        "user": field_text(HOSTILE),
        "method": "REGISTER",
        "call_id": field_text(HOSTILE),
        "reason": field_text(event.reason),
    }
    assert "\ufffd" in fields["user"] and "\r" not in fields["user"]
    if body_format == "cef":
        record = pycef.parse(message["msg"])
        assert record is not None
        assert (record["DeviceEventClassID"], record["Severity"]) == ("scanner:ban", "7")
        extension = {
            key: unescape_cef(record[key])
            for key in ("src", "spt", "act", "cat", "suser", "reason", "sipCallId", "sipMethod")
        }
        assert extension == {
            "src": "192.0.2.7",
            "spt": "5062",
            "act": "ban",
            "cat": "scanner",
            "suser": field_text(HOSTILE),
            "reason": field_text(event.reason),
            "sipCallId": field_text(HOSTILE),
            "sipMethod": "REGISTER",
        }
        return
    body = json.loads(message["msg"])
    if body_format == "json":
        # The body is the event as the event file has it, every character kept.
        file_line = (tmp_path / "events.jsonl").read_text().splitlines()[0]
        assert body == json.loads(file_line)
        assert body["user"] == HOSTILE
    else:
        assert body["user"] == {"name": HOSTILE}
        assert body["event"]["reason"] == event.reason
        assert body["labels"] == {
            "mode": "enforce",
            "sip_method": "REGISTER",
            "sip_call_id": HOSTILE,
        }
        assert body["source"] == {"address": "192.0.2.7:5062", "ip": "192.0.2.7", "port": 5062}
        assert body["rule"] == {"name": "scanner"}
        assert body["event"]["kind"] == "alert" and body["event"]["type"] == ["denied"]


@pytest.mark.parametrize("action", [*SEVERITY_BY_ACTION, "alert", "rewrite"])
def test_one_severity_whatever_the_format(tmp_path, udp_receiver, action):
    port = udp_receiver.getsockname()[1]
    received = {}
    for body_format in ("ecs", "cef"):
        address = {"address": f"udp:127.0.0.1:{port}", "format": body_format}
        sink(tmp_path, address).emit(hostile_event(action))
        received[body_format] = SyslogMessage.parse(udp_receiver.recv(65536).decode()).as_dict()
    level = severity(action)
    assert received["ecs"]["severity"] == received["cef"]["severity"]
    assert received["ecs"]["severity"] == SYSLOG_SEVERITY_NAMES[level.code]
    document = json.loads(received["ecs"]["msg"])
    assert document["log"]["syslog"]["severity"]["code"] == level.code
    assert document["event"]["severity"] == level.code
    assert pycef.parse(received["cef"]["msg"])["Severity"] == str(level.cef)


def test_the_severities_keep_one_order_in_both_scales():
    levels = sorted(set(SEVERITY_BY_ACTION.values()) | {severity("alert")})
    # Lower syslog codes are worse; higher CEF numbers are worse.
    assert [lv.cef for lv in levels] == sorted((lv.cef for lv in levels), reverse=True)


def test_tcp_frames_each_event_by_its_length(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        events = sink(tmp_path, {"address": f"tcp:127.0.0.1:{port}"})
        events.emit(hostile_event("ban"))
        events.emit(hostile_event("reject"))
        connection, _ = server.accept()
        connection.settimeout(5)
        received = b""
        messages = []
        with connection:
            while len(messages) < 2:
                received += connection.recv(65536)
                # RFC 6587 octet counting: "LENGTH SP MESSAGE", read by length only.
                while b" " in received:
                    length, _, rest = received.partition(b" ")
                    if len(rest) < int(length):
                        break
                    messages.append(rest[: int(length)])
                    received = rest[int(length) :]
    parsed = [SyslogMessage.parse(m.decode()).as_dict() for m in messages]
    assert [p["msgid"] for p in parsed] == ["ban", "reject"]
    assert all(json.loads(p["msg"])["user"] == HOSTILE for p in parsed)


def test_local_datagram_socket(tmp_path):
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        sink(tmp_path, {"address": f"unix:{path}"}).emit(hostile_event())
        message = SyslogMessage.parse(receiver.recv(65536).decode()).as_dict()
    assert json.loads(message["msg"])["call_id"] == HOSTILE


def test_a_dead_collector_is_reported_once_and_costs_no_event(tmp_path, caplog):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    events = sink(tmp_path, {"address": f"tcp:127.0.0.1:{port}"})
    with caplog.at_level(logging.ERROR, logger="sipshield.core.syslog"):
        for _ in range(3):
            events.emit(hostile_event())
    unreachable = [r for r in caplog.records if r.name == "sipshield.core.syslog"]
    assert len(unreachable) == 1
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("syslog", "problem"),
    [
        ("{address: 'udp:collector'}", "events.syslog.address"),
        ("{address: 'udp:10.0.0.1:514', format: leef}", "events.syslog.format"),
        ("{address: 'unix:/dev/log', facility: local9}", "events.syslog.facility"),
    ],
)
def test_a_bad_syslog_setting_names_its_field(tmp_path, syslog, problem):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "domain: example.net\npeers:\n  pbx: {address: 127.0.0.1:5090}\n"
        f"events:\n  syslog: {syslog}\n"
    )
    with pytest.raises(PolicyError) as refused:
        load_policy(policy)
    assert any(problem in line for line in refused.value.errors), refused.value.errors
