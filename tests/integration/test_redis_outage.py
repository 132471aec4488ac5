"""Redis dies in the middle of traffic: calls keep flowing, the outage is logged,
and sipshield recovers by itself once Redis is back, losing no event."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from sipshield.lab.net import free_port
from tests.integration.lab_fixture import SIPSHIELD, RunningLab
from tests.integration.sip_messages import options


def register_request(lab: RunningLab) -> bytes:
    domain = lab.domain
    tag = os.urandom(4).hex()
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{domain}>;tag={tag}\r\n"
        f"To: <sip:alice@{domain}>\r\n"
        f"Call-ID: {tag}@127.0.0.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Contact: <sip:alice@127.0.0.1:5999>\r\n"
        "Expires: 300\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
redis: {on_failure: open, timeout_ms: 100, retry_interval_s: 1}
modules:
  - {name: flood, window_s: 60, limits: {options: 1000, invite: 1000, register: 1000}}
  - {name: plugin, target: 'exploding:Exploding'}
"""


def kill_redis(lab: RunningLab) -> None:
    """SIGKILL the lab's Redis and return once it no longer answers."""
    os.kill(lab.info["pids"]["redis"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        try:
            lab.redis.ping()
        except Exception:
            return
        assert time.monotonic() < deadline, "redis still answers after SIGKILL"
        time.sleep(0.02)


def restart_redis(lab: RunningLab) -> None:
    proc = subprocess.Popen(
        lab.info["commands"]["redis"],
        cwd=lab.directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # `lab down` must stop the new process too.
    lab.info["pids"]["redis"] = proc.pid
    (lab.directory / "lab.json").write_text(__import__("json").dumps(lab.info))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if lab.redis.ping():
                return
        except Exception:
            time.sleep(0.1)
    raise AssertionError("redis did not come back")


def test_calls_flow_while_redis_is_down_and_state_recovers(make_lab):
    lab = make_lab(POLICY)
    callee_port = free_port()
    callee = lab.answer_calls("bob", callee_port, calls=2)
    before = lab.call("alice", "bob")
    assert before.ok, before.explain()
    assert lab.redis.keys("sipshield:flood:*"), "flood counts in Redis while it is up"

    kill_redis(lab)

    during = lab.call("alice", "bob")
    assert during.ok, during.explain()
    assert [lab.options() for _ in range(5)] == [200] * 5
    # An event raised during the outage is written to the file at once ...
    boom, lost_call_id = options(lab.sip_target(), "X-Explode: 1\r\n")
    assert lab.send(boom) == 200
    lab.wait_for_event(call_id=lost_call_id)
    assert callee.finish().ok
    assert "redis unreachable" in lab.log("sbc")

    restart_redis(lab)
    # ... and reaches the stream once Redis is back: every worker flushes its
    # buffer on its next request after the retry interval.
    deadline = time.monotonic() + 15
    streamed = ""
    while time.monotonic() < deadline and lost_call_id not in streamed:
        for _ in range(10):
            lab.options()
        streamed = str(lab.redis.xrange("sipshield:events"))
    assert lost_call_id in streamed
    assert "redis reachable again" in lab.log("sbc")
    assert lab.redis.keys("sipshield:flood:*"), "flood counts again after recovery"


def test_fail_closed_answers_503_while_redis_is_down(make_lab):
    # registration_guard reads the account's fingerprint from Redis for each
    # REGISTER; flood counts on the node and needs no round trip.
    lab = make_lab(
        POLICY.replace("on_failure: open", "on_failure: closed")
        + "  - {name: registration_guard}\n"
    )
    assert lab.send(register_request(lab)) == 401  # the lab PBX challenges it
    kill_redis(lab)
    assert lab.send(register_request(lab)) == 503
    # A request no module needs Redis for is served.
    assert lab.options() == 200


def test_flood_limits_hold_per_node_while_redis_is_down(make_lab):
    # Fail closed: a request that needed Redis would be answered 503 at once.
    lab = make_lab(
        POLICY.replace("on_failure: open", "on_failure: closed").replace(
            "window_s: 60, limits: {options: 1000, invite: 1000, register: 1000}",
            "window_s: 3600, limits: {options: 3}, response: reject",
        )
    )
    kill_redis(lab)
    source = "127.0.0.97"
    answers = [lab.options(source_ip=source, timeout=0.5) for _ in range(4)]
    assert answers == [200, 200, 200, 503]
    refused = lab.wait_for_event(module="flood", action="reject")
    assert refused["src"].startswith(f"{source}:")
    assert refused["reason"] == f"4 options requests from {source} in 3600s (allowance 3)"
    # Everybody else is served meanwhile.
    assert lab.options(source_ip="127.0.0.98") == 200


def test_a_known_ban_holds_while_redis_is_down(make_lab):
    # Each worker enforces the bans from its own copy; Redis is only where
    # the blocked requests are counted.  Losing the count must not lose the ban.
    lab = make_lab(POLICY.replace("modules:\n", "modules:\n  - {name: bans, response: drop}\n"))
    banned = "127.0.0.90"
    added = subprocess.run(
        [*SIPSHIELD, "bans", "--lab", str(lab.directory), "add", banned],
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    # Every worker has applied the ban once 8 requests in a row are dropped.
    deadline = time.monotonic() + 10
    while [lab.options(source_ip=banned, timeout=0.3) for _ in range(8)] != [None] * 8:
        assert time.monotonic() < deadline, "the ban never reached every worker"

    kill_redis(lab)
    # Past the once-a-second flush of the hit counts, which now meets a dead Redis.
    time.sleep(1.2)
    assert [lab.options(source_ip=banned, timeout=0.3) for _ in range(8)] == [None] * 8
    assert [lab.options() for _ in range(4)] == [200] * 4
    drops = [e for e in lab.events() if e["module"] == "bans" and e["src"].startswith(banned)]
    assert drops and all(e["action"] == "drop" for e in drops)
