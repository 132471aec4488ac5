"""The Redis master dies in the middle of mixed traffic; Sentinel promotes the replica.

The lab runs with ``--redis-sentinel``: the lab's Redis, a replica and three
sentinels (down after 1 s, quorum 2); the SBC's policy names the sentinels,
not the master, and waits for the replica on every ban (``replica_acks: 1``).
While calls run, an attacker is banned, the master is SIGKILLed, a second
attacker floods during the failover and a malformed request raises an event.
Then:

- every call succeeded (the failure window the SBC saw is printed: from its
  "redis unreachable" log line to "reachable again");
- the ban made before the kill is on the new master (it was replicated
  before the ban was reported), and the ban decided during the failover,
  held by the worker that made it, is written there once it answers;
- both attackers stay blocked, and the event buffered during the failover
  reaches the events stream on the new master.

The oracle for what the new master holds is the sentinels' own answer and
the keys there, read with redis-py, not sipshield's client.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from sipshield.lab.net import free_port
from sipshield.lab.sipp import SippResult
from tests.integration.lab_fixture import SIPSHIELD, RunningLab, lab_down, lab_up

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
redis: {on_failure: open, timeout_ms: 100, retry_interval_s: 0.5}
modules:
  - {name: bans, response: drop}
  - {name: validation}
  - name: flood
    window_s: 60
    limits: {options: 20, invite: 5000, register: 5000, other: 5000}
    ban_after: 2.0
"""
CALLS, RATE = 60, 5.0  # twelve seconds of calls, the failover inside them
FIRST_ATTACKER, SECOND_ATTACKER = "127.0.0.91", "127.0.0.92"
PREFIX = "sipshield"


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """A lab of its own per test: each one leaves the group with a master down."""
    directory = tmp_path_factory.mktemp("failover-lab")
    (directory / "policy.yaml").write_text(POLICY)
    running = lab_up(directory / "policy.yaml", directory / "lab", None, "--redis-sentinel")
    yield running
    lab_down(running)


def master_port(lab: RunningLab) -> int:
    """The master's port as the sentinels name it now."""
    host, _, port = lab.info["redis_sentinels"][0].rpartition(":")
    sentinel = redis.Redis(host=host, port=int(port), socket_timeout=1)
    return int(sentinel.sentinel_get_master_addr_by_name("sipshield")[1])


def redis_at(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True)


def flood_until_banned(lab: RunningLab, source: str) -> None:
    """OPTIONS from ``source`` until flood bans it (at twice its limit of 20)."""
    deadline = time.monotonic() + 20
    while not any(
        e["module"] == "flood" and e["action"] == "ban" and e["src"].startswith(f"{source}:")
        for e in lab.events()
    ):
        assert time.monotonic() < deadline, f"{source} was never banned"
        for _ in range(10):
            lab.options(source_ip=source, timeout=0.05)


def malformed_options(lab: RunningLab) -> tuple[bytes, str]:
    call_id = secrets.token_hex(10)
    target = lab.sip_target()
    return (
        f"OPTIONS sip:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: seventy\r\n"
        f"From: <sip:tester@{target}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{target}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode(), call_id


def test_a_master_failover_loses_no_call_ban_or_event(lab: RunningLab) -> None:
    old_master = master_port(lab)
    callee = lab.answer_calls("bob", free_port(), calls=CALLS)
    flood_until_banned(lab, FIRST_ATTACKER)
    first_key = f"{PREFIX}:ban:ip:{FIRST_ATTACKER}"
    assert redis_at(old_master).exists(first_key)

    calls: list[SippResult] = []
    caller = threading.Thread(
        target=lambda: calls.append(
            lab.call("alice", "bob", calls=CALLS, rate=RATE, timeout_s=CALLS / RATE + 30)
        )
    )
    caller.start()
    # Some calls are set up on the old master's watch before it dies.
    deadline = time.monotonic() + 20
    while lab.log("pbx").count("received INVITE") < 10:
        assert time.monotonic() < deadline, "the calls never started"
        time.sleep(0.1)
    os.killpg(lab.info["pids"]["redis"], signal.SIGKILL)
    killed = time.monotonic()

    # During the failover: a second attacker is banned, and an event is raised.
    flood_until_banned(lab, SECOND_ATTACKER)
    bad, bad_call_id = malformed_options(lab)
    assert lab.send(bad) == 400
    lab.wait_for_event(module="validation", call_id=bad_call_id)

    deadline = killed + 30
    while (new_master := _try(master_port, lab)) in (None, old_master):
        assert time.monotonic() < deadline, "the sentinels never promoted the replica"
        time.sleep(0.2)
    print(f"sentinels promoted the replica {time.monotonic() - killed:.1f}s after the kill")

    caller.join(timeout=60)
    assert calls and calls[0].ok, calls[0].explain() if calls else "the calls never ended"
    assert callee.finish().ok

    promoted = redis_at(new_master)
    assert promoted.exists(first_key), "the ban made before the kill is lost"
    # The held ban and the buffered event are written by the worker that has
    # them on its next request after the retry interval: legitimate traffic.
    second_key = f"{PREFIX}:ban:ip:{SECOND_ATTACKER}"
    deadline = time.monotonic() + 20
    while not (promoted.exists(second_key) and _streamed(promoted, bad_call_id)):
        assert time.monotonic() < deadline, (
            f"held ban on the new master: {bool(promoted.exists(second_key))}, "
            f"buffered event: {_streamed(promoted, bad_call_id)}"
        )
        lab.options()
        time.sleep(0.05)
    for attacker in (FIRST_ATTACKER, SECOND_ATTACKER):
        assert [lab.options(source_ip=attacker, timeout=0.3) for _ in range(6)] == [None] * 6
    # The operator's view follows the sentinels too (the lab's policy names them).
    listed = subprocess.run(
        [*SIPSHIELD, "bans", "--lab", str(lab.directory), "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    for attacker in (FIRST_ATTACKER, SECOND_ATTACKER):
        assert f"ip:{attacker} " in listed.stdout

    log = lab.log("sbc")
    down = re.search(r"redis unreachable", log)
    back = re.findall(r"redis reachable again at .*? after ([0-9.]+)s", log)
    assert down and back, "the SBC never logged the outage and the recovery"
    print(f"the SBC's workers saw Redis fail for {max(map(float, back)):.1f}s at most")


def _try(function, *args):  # type: ignore[no-untyped-def]
    try:
        return function(*args)
    except redis.RedisError:
        return None


def _streamed(client: redis.Redis, call_id: str) -> bool:
    return call_id in str(client.xrange(f"{PREFIX}:events"))


def test_a_demoted_master_makes_the_sbc_follow_the_new_one(lab: RunningLab) -> None:
    # A graceful failover (SENTINEL FAILOVER) leaves the old master running,
    # as a replica: the workers' connections to it must not stay there.  What
    # they meet depends on timing (a write paused by the switch and timed out,
    # a dropped connection, or READONLY, which redis-py turns into a
    # reconnect); each way they ask the sentinels again.
    before = master_port(lab)
    host, _, port = lab.info["redis_sentinels"][0].rpartition(":")
    redis.Redis(host=host, port=int(port), socket_timeout=2).sentinel_failover("sipshield")
    deadline = time.monotonic() + 30
    while (after := _try(master_port, lab)) in (None, before):
        assert time.monotonic() < deadline, "the sentinels never switched masters"
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while redis_at(before).info("replication")["role"] != "slave":
        assert time.monotonic() < deadline, "the old master was never demoted"
        time.sleep(0.2)
    attacker = "127.0.0.93"
    flood_until_banned(lab, attacker)
    key = f"{PREFIX}:ban:ip:{attacker}"
    deadline = time.monotonic() + 20
    while not redis_at(after).exists(key):
        assert time.monotonic() < deadline, "the ban never reached the new master"
        lab.options()
        time.sleep(0.05)
