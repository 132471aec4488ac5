"""Two Kamailio SBC nodes sharing one Redis: bans and rate counts are cluster-wide.

Node A is the lab's SBC.  Node B is a second Kamailio started with the lab's
own command line, on its own ports and runtime directory, with the same Redis
and a copy of the policy that names it "node-b", so that its events say which
node acted.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from sipshield.lab.sipp import run_sipp
from tests.integration.lab_fixture import PLUGINS, SIPSHIELD, RunningLab
from tests.integration.two_nodes import Node, restart_sbc, two_node_lab

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
bans: {base_ttl_s: 300}
modules:
  - {name: bans}
  - {name: flood, window_s: 10, limits: {options: 10}, ban_after: 3}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, Node]]:
    directory = tmp_path_factory.mktemp("two-nodes")
    # Node B is only sent OPTIONS, which it answers itself: the PBX need not know it.
    with two_node_lab(
        directory, POLICY, pbx_answers_both=False, extra_pythonpath=PLUGINS
    ) as cluster:
        yield cluster


def ban_of(lab: RunningLab, ip: str) -> dict[str, str]:
    return lab.redis.hgetall(f"sipshield:ban:ip:{ip}")


def events(lab: RunningLab, src_ip: str = "", **match: str) -> list[dict]:
    return [
        e
        for e in lab.events()
        if all(e.get(k) == v for k, v in match.items())
        and e.get("src", "").startswith(f"{src_ip}:" if src_ip else "")
    ]


def test_a_ban_made_on_node_a_blocks_the_attacker_on_node_b_at_once(cluster):
    lab, b = cluster
    attacker = "127.0.0.91"
    # Every worker of node B has served a request (and follows the ban channel).
    # Each client stays within the allowance of 10 OPTIONS per window.
    assert [b.options(source_ip="127.0.0.94") for _ in range(8)] == [200] * 8
    # 10 OPTIONS per window are allowed; the 30th of a window bans.
    flood = threading.Thread(
        target=run_sipp,
        args=("options_sweep", lab.sip_target()),
        kwargs={"local_ip": attacker, "calls": 40, "rate": 200, "timeout_s": 10,
                "keys": {"domain": lab.domain, "user_agent": "Zoiper 5"}},
    )  # fmt: skip
    flood.start()
    try:
        deadline = time.monotonic() + 10
        while not ban_of(lab, attacker) and time.monotonic() < deadline:
            time.sleep(0.01)
        ban = ban_of(lab, attacker)
        # The first request node B sees from the attacker after the ban is dropped, by the ban.
        assert b.options(source_ip=attacker, timeout=1.0) is None
    finally:
        flood.join()
    assert ban["module"] == "flood", ban
    dropped = events(lab, node="node-b", src_ip=attacker)
    assert [e["module"] for e in dropped] == ["bans"], dropped
    # From the ban on node A to the drop on node B (the probe left within ~10 ms of the ban).
    assert dropped[0]["ts"] - float(ban["created"]) < 1.0
    # Node B serves everybody else.
    assert [b.options(source_ip="127.0.0.95") for _ in range(4)] == [200] * 4


def flood_count(lab: RunningLab, source: str) -> int:
    """The cluster's OPTIONS count for ``source`` in Redis: what the nodes have merged."""
    keys = lab.redis.keys(f"sipshield:flood:options:{source}:*")
    return sum(int(lab.redis.get(key) or 0) for key in keys)


def wait_for(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_rate_counts_are_shared_between_the_nodes(cluster):
    lab, b = cluster
    source = "127.0.0.92"
    # The 10 s windows are aligned on the clock: start well inside one.
    wait_for(lambda: time.time() % 10 < 4, "a window start", timeout=11)
    to_a = [lab.options(source_ip=source, timeout=0.5) for _ in range(6)]
    # Node A merges its counts every 200 ms (rtimer), without any request.
    wait_for(lambda: flood_count(lab, source) == 6, "node A merged its 6 requests")
    # Node B learns the cluster's count for a source at its next merge after
    # its first request from it: the bound is one merge interval.
    first_b = b.options(source_ip=source, timeout=0.5)
    wait_for(lambda: flood_count(lab, source) == 7, "node B merged its request")
    rest_b = [b.options(source_ip=source, timeout=0.5) for _ in range(4)]
    # One allowance of 10 for the source, whichever node it talks to.
    assert to_a + [first_b] + rest_b == [200] * 10 + [None]
    refused = events(lab, node="node-b", module="flood", src_ip=source)
    assert [e["reason"] for e in refused] == [
        f"11 options requests from {source} in 10s (allowance 10)"
    ]
    assert not ban_of(lab, source)


def test_a_ban_survives_a_restart_of_node_a(cluster):
    lab, _ = cluster
    banned = "127.0.0.93"
    subprocess.run([*SIPSHIELD, "bans", "--lab", str(lab.directory), "add", banned],
                   check=True, capture_output=True)  # fmt: skip
    assert lab.options(source_ip=banned, timeout=0.5) is None
    restart_sbc(lab, signal.SIGKILL)
    # The fresh workers load the ban from Redis before their first answer.
    assert [lab.options(source_ip=banned, timeout=0.5) for _ in range(4)] == [None] * 4
    assert lab.options(source_ip="127.0.0.96") == 200
