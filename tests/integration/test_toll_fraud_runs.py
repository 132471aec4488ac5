"""Toll-fraud runs against a cluster of two SBC nodes sharing one Redis, and the
legitimate traffic beside them.

The accounts' time zones are chosen so that it is 03:00 for alice (a cracked
account used at night) and 11:00 for the others, whatever the time the test
runs: the clock is real, only the zone is picked.  Calls enter through both
nodes; the lab PBX sends each back out through the node it came from, so
both nodes admit calls of one account at the same time.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipshield.lab.sipp import SippResult, run_sipp
from tests.integration.lab_fixture import SIPSHIELD, RunningLab
from tests.integration.two_nodes import Node, two_node_lab

pytestmark = pytest.mark.integration

# 20 UK premium-rate numbers of one range, and ordinary ones.
PREMIUM = [f"+4490987901{n:02d}" for n in range(20)]
NATIONAL = [f"+4420712345{n:02d}" for n in range(40)]
INTERNATIONAL = ["+33142685300", "+4930123456", "+12125551234"]
CALL_CENTRE = "u1000"


def zone_where_it_is(hour: int) -> str:
    """An IANA zone (Etc/GMT±N) in which the local hour is ``hour`` now."""
    offset = (hour - datetime.now(UTC).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    # Etc/GMT's signs are POSIX's: Etc/GMT-3 is three hours ahead of UTC.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def policy() -> str:
    night, day = zone_where_it_is(3), zone_where_it_is(11)
    return f"""\
node: node-a
domain: sipshield.lab
peers:
  pbx: {{address: 127.0.0.1:5090}}
bans: {{base_ttl_s: 600}}
modules:
  - name: toll_fraud
    home_region: GB
    time_zone: {day}
    business_hours: {{days: [mon, tue, wed, thu, fri, sat, sun], start: "08:00", end: "18:00"}}
    limits:
      premium: {{concurrent: 2, per_minute: 5, destinations_per_hour: 10, after_hours: refuse}}
      national: {{concurrent: 5, per_minute: 60}}
    accounts:
      alice@sipshield.lab: {{time_zone: {night}}}
      {CALL_CENTRE}@sipshield.lab: {{limits: {{national: {{concurrent: 40, per_minute: 200}}}}}}
    action: block
    block_ttl_s: 600
    refuse: {{code: 403, phrase: Call Barred}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, Node]]:
    directory = tmp_path_factory.mktemp("toll-fraud-runs")
    with two_node_lab(directory, policy()) as cluster:
        yield cluster


def run_calls(
    lab: RunningLab,
    target: str,
    caller: str,
    numbers: list[str],
    calls: int,
    parallel: int,
    talk_ms: int = 1000,
) -> SippResult:
    """``calls`` calls from ``caller`` to ``numbers`` in turn, ``parallel`` at a time."""
    with tempfile.TemporaryDirectory(prefix="numbers-") as tmp:
        numbers_file = Path(tmp) / "numbers.csv"
        numbers_file.write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in numbers))
        return run_sipp(
            "call_uac_numbers",
            target,
            auth=(caller, lab.password(caller)),
            keys={"domain": lab.domain, "caller": caller},
            injection_file=numbers_file,
            calls=calls,
            rate=50,
            max_concurrent=parallel,
            talk_ms=talk_ms,
            timeout_s=60,
        )


def through_both_nodes(
    lab: RunningLab, node: Node, caller: str, numbers: list[str], calls: int, parallel: int
) -> list[SippResult]:
    """Half the calls through each node, at the same time."""
    targets = [lab.sip_target(), f"127.0.0.1:{node.port}"]
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(run_calls, lab, target, caller, numbers[i::2], calls // 2, parallel // 2)
            for i, target in enumerate(targets)
        ]
        return [run.result() for run in runs]


def connected(lab: RunningLab, caller: str, numbers: list[str]) -> int:
    """Calls of ``caller`` to ``numbers`` that reached the carrier (it answers each)."""
    pattern = re.compile(r"carrier: received INVITE sip:(\S+)@\S+ call-id=\S+ pai=(\S+)")
    return sum(
        1
        for number, pai in pattern.findall(lab.log("carrier"))
        if number in numbers and pai == f"<sip:{caller}@sipshield.lab>"
    )


def events_of(lab: RunningLab, node: Node, caller: str) -> list[dict]:
    """toll_fraud's events about ``caller``'s calls, from both nodes."""
    account = f"{caller}@sipshield.lab"
    return [
        e
        for e in lab.events()
        if e["module"] == "toll_fraud" and f"toll fraud: {account} " in e["reason"]
    ]


def bans_list(lab: RunningLab) -> str:
    return subprocess.run(
        [*SIPSHIELD, "bans", "--lab", str(lab.directory), "list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def test_a_night_fraud_run_from_a_cracked_account_is_stopped(cluster):
    lab, node = cluster
    # Before the run: alice's ordinary national calls at 03:00 go through.
    for target in (lab.sip_target(), f"127.0.0.1:{node.port}"):
        result = run_calls(lab, target, "alice", NATIONAL[:1], calls=1, parallel=1)
        assert result.ok, result.explain()
    # 30 short calls to 20 premium numbers of one range, 10 at a time, through both nodes.
    started = time.time()
    runs = through_both_nodes(lab, node, "alice", PREMIUM, calls=30, parallel=10)
    assert sum(run.successful for run in runs) <= 3
    assert connected(lab, "alice", PREMIUM) <= 3
    assert sum(run.failed for run in runs) >= 27
    refusals = [e for e in events_of(lab, node, "alice") if e["action"] in ("ban", "reject")]
    assert refusals and all("premium" in e["reason"] for e in refusals)
    assert {e["node"] for e in refusals} == {"node-a", "node-b"}
    print(f"first refusal {min(e['ts'] for e in refusals) - started:.2f}s after the run began")
    # The account is banned cluster-wide, and listed.
    assert re.search(r"account:alice@sipshield.lab .*\[toll_fraud\] toll fraud", bans_list(lab))
    # bob, beside the run, still calls.
    result = run_calls(lab, lab.sip_target(), "bob", NATIONAL[1:3], calls=2, parallel=1)
    assert result.ok, result.explain()


def test_a_daytime_run_is_held_to_the_concurrent_limit_across_both_nodes(cluster):
    lab, node = cluster
    runs = through_both_nodes(lab, node, "carol", PREMIUM, calls=30, parallel=10)
    connected_calls = connected(lab, "carol", PREMIUM)
    # Two at most in progress, for the cluster: the first refusal blocks carol.
    assert 1 <= connected_calls <= 2, connected_calls
    assert sum(run.successful for run in runs) == connected_calls
    assert "account:carol@sipshield.lab" in bans_list(lab)
    # Her later calls are refused on either node, whatever the class.
    result = run_calls(lab, f"127.0.0.1:{node.port}", "carol", NATIONAL[3:4], calls=1, parallel=1)
    assert result.successful == 0 and result.failed == 1
    # Until an operator lifts the ban.
    subprocess.run(
        [
            *SIPSHIELD,
            "bans",
            "--lab",
            str(lab.directory),
            "remove",
            "--account",
            "carol@sipshield.lab",
        ],
        check=True,
        timeout=30,
        capture_output=True,
    )
    result = run_calls(lab, lab.sip_target(), "carol", NATIONAL[3:4], calls=1, parallel=1)
    assert result.ok, result.explain()


def test_ordinary_daytime_traffic_is_never_refused(cluster):
    lab, node = cluster
    for target in (lab.sip_target(), f"127.0.0.1:{node.port}"):
        national = run_calls(lab, target, "dave", NATIONAL[4:7], calls=3, parallel=1)
        assert national.ok and national.successful == 3, national.explain()
        international = run_calls(lab, target, "dave", INTERNATIONAL, calls=3, parallel=1)
        assert international.ok and international.successful == 3, international.explain()
    assert events_of(lab, node, "dave") == []


def test_a_call_centre_burst_passes_where_an_ordinary_account_is_held(cluster):
    lab, node = cluster
    burst = through_both_nodes(lab, node, CALL_CENTRE, NATIONAL[:20], calls=20, parallel=20)
    assert sum(run.successful for run in burst) == 20, [run.explain() for run in burst]
    assert events_of(lab, node, CALL_CENTRE) == []
    # The same burst from an account with the ordinary limit (5 in progress).
    held = through_both_nodes(lab, node, "u1001", NATIONAL[20:40], calls=20, parallel=20)
    assert 1 <= sum(run.successful for run in held) <= 5
