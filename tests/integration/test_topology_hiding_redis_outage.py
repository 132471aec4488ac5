"""Topology hiding while its Redis is down: refused or relayed, as redis.on_failure says.

topos keeps what it strips in Redis; without Redis it sends messages as they
are, the inside included.  The node's timer process notices within a second
(a ping), and then requests that topos would hide are answered 503 with
``redis.on_failure: closed``, or relayed unhidden, logged, with ``open``.
What topos never hides (REGISTER) and keepalives to the SBC itself go on,
and calls are hidden again once Redis is back.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipshield.lab.sip_ua import RtpPeer, UserAgent, sdp
from sipshield.lab.stack import group_members
from tests.integration.lab_fixture import RunningLab, lab_down, lab_up
from tests.integration.wire import wait_until

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
redis: {{on_failure: {on_failure}}}
topology_hiding: {{enabled: true}}
modules:
  - {{name: validation}}
  - {{name: dialog_guard}}
"""
OUTAGE_LOGGED = "topology hiding: Redis does not answer"


def start(directory: Path, on_failure: str) -> RunningLab:
    (directory / "policy.yaml").write_text(POLICY.format(on_failure=on_failure))
    return lab_up(directory / "policy.yaml", directory / "lab")


@pytest.fixture
def closed_lab(tmp_path: Path) -> Iterator[RunningLab]:
    lab = start(tmp_path, "closed")
    yield lab
    lab_down(lab)


@pytest.fixture
def open_lab(tmp_path: Path) -> Iterator[RunningLab]:
    lab = start(tmp_path, "open")
    yield lab
    lab_down(lab)


def stop_redis(lab: RunningLab) -> None:
    pid = lab.info["pids"]["redis"]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    assert wait_until(lambda: not group_members(pid))


def restart_redis(lab: RunningLab) -> None:
    with open(lab.info["logs"]["redis"], "ab") as log:
        proc = subprocess.Popen(lab.info["commands"]["redis"], cwd=lab.directory, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    lab.info["pids"]["redis"] = proc.pid  # `lab down` stops the new one
    (lab.directory / "lab.json").write_text(json.dumps(lab.info))
    assert wait_until(lambda: ping(lab))


def ping(lab: RunningLab) -> bool:
    try:
        return bool(lab.redis.ping())
    except Exception:
        return False


def message_status(sender: UserAgent, lab: RunningLab) -> int:
    """A MESSAGE to a user nobody registered: the PBX answers it (404), or the SBC (503)."""
    ruri = f"sip:nobody-{secrets.token_hex(3)}@{lab.domain}"
    return sender.authenticated("MESSAGE", ruri, "are you there?", "text/plain")[1].status


def inside_seen(lab: RunningLab, *uas: UserAgent) -> bool:
    host, _, port = lab.info["pbx"]["udp"].rpartition(":")
    data = b"".join(chunk for ua in uas for chunk in ua.received)
    return host.encode() in data or f":{port}".encode() in data


def call(lab: RunningLab, caller: str, callee: str) -> tuple[int, UserAgent, UserAgent]:
    callee_ua, caller_ua = UserAgent(lab, callee, ip="127.0.0.21"), UserAgent(lab, caller)
    assert callee_ua.register() == 200
    answering = callee_ua.answer_in_background(sdp(RtpPeer().port))
    placed = caller_ua.call(callee, sdp(RtpPeer().port))
    assert placed.reply is not None
    status = placed.reply.status
    if status == 200:
        assert placed.bye() == 200
        assert answering.done.wait(5) and answering.error is None, answering.error
    return status, caller_ua, callee_ua


def test_with_on_failure_closed_calls_are_refused_until_redis_is_back(closed_lab):
    lab = closed_lab
    status, *uas = call(lab, "alice", "bob")
    assert status == 200 and not inside_seen(lab, *uas)

    stop_redis(lab)
    sender = UserAgent(lab, "carol")
    assert wait_until(lambda: message_status(sender, lab) == 503)
    status, *uas = call(lab, "alice", "dave")
    assert status == 503
    assert not inside_seen(lab, sender, *uas)
    assert OUTAGE_LOGGED in lab.log("sbc")
    # What topos never hides goes on: a registration, a keepalive to the SBC.
    assert UserAgent(lab, "u1000").register() == 200
    assert lab.options() == 200

    restart_redis(lab)
    assert wait_until(lambda: message_status(sender, lab) == 404)
    status, *uas = call(lab, "u1001", "u1002")
    assert status == 200 and not inside_seen(lab, *uas)


def test_with_on_failure_open_calls_go_on_unhidden_and_the_outage_is_logged(open_lab):
    lab = open_lab
    stop_redis(lab)
    sender = UserAgent(lab, "carol")
    noticed = lambda: message_status(sender, lab) == 404 and OUTAGE_LOGGED in lab.log("sbc")  # noqa: E731
    assert wait_until(noticed)
    status, *uas = call(lab, "alice", "bob")
    assert status == 200
    # The price of serving: topos could not hide this call.
    assert inside_seen(lab, *uas)
    assert "requests outside dialogs are relayed unhidden (redis.on_failure: open)" in lab.log(
        "sbc"
    )
