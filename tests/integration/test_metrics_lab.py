"""Prometheus metrics scraped from the real SBC while it is attacked and used.

Each phase reads the metrics before and after, parsed by prometheus_client's
own text parser, and checks that exactly the counters it should have moved
did, by amounts taken from elsewhere: the codes on the wire, the PBX's log,
the ban in Redis, rtpengine's own command counts.  Counts of blocked
requests are updated after the answer is sent, so each phase waits for them.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sipshield.core.metrics import METRICS, REQUESTS, method_class
from sipshield.lab.net import free_port
from sipshield.lab.sipp import credentials_file, run_sipp
from sipshield.rtpengine import RtpengineClient
from tests.conftest import REPO
from tests.integration.lab_fixture import SIPSHIELD, RunningLab, lab_with_policy
from tests.integration.metrics_scrape import counters_only, grown, moved, scrape, value, wait_for
from tests.integration.sip_messages import options

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: bans, response: reject}
  - {name: flood, window_s: 60, limits: {options: 5}, response: reject}
  - {name: brute_force, window_s: 300, max_failures_per_user: 3}
media:
  rtpengine: {ng: ["127.0.0.1:2223"], timeout_ms: 500, retries: 1}
"""
DASHBOARD = REPO / "ops" / "grafana" / "sipshield.json"
ALERTS = REPO / "ops" / "prometheus" / "sipshield-alerts.yml"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    # --sipdump: what the SBC received, as an account kept apart from the metrics.
    with lab_with_policy(tmp_path_factory.mktemp("metrics"), POLICY, None, "--sipdump") as running:
        yield running


def events_since(lab: RunningLab, count: int) -> list[dict]:
    return lab.events()[count:]


def test_legitimate_options_count_as_passed_and_nothing_else_moves(lab: RunningLab):
    before = scrape(lab)
    codes = [lab.options(source_ip="127.0.0.4") for _ in range(3)]
    assert codes == [200] * 3
    after = wait_for(
        lab, grown(before, 3, "sipshield_pipeline_seconds_count", method_class="options")
    )
    assert counters_only(moved(before, after)) == {
        "sipshield_requests_total{method_class=options,outcome=passed}": 3,
    }
    assert moved(before, after)["sipshield_pipeline_seconds_count{method_class=options}"] == 3


def test_an_options_flood_counts_each_refusal_and_each_pass(lab: RunningLab):
    before = scrape(lab)
    flooder, neighbour = "127.0.0.3", "127.0.0.5"
    codes = [lab.options(source_ip=flooder) for _ in range(8)]
    codes += [lab.options(source_ip=neighbour) for _ in range(2)]
    assert codes == [200] * 5 + [503] * 3 + [200] * 2
    after = wait_for(
        lab, grown(before, 3, "sipshield_requests_total", method_class="options", outcome="blocked")
    )
    assert counters_only(moved(before, after)) == {
        "sipshield_requests_total{method_class=options,outcome=passed}": 7,
        "sipshield_requests_total{method_class=options,outcome=blocked}": 3,
        "sipshield_verdicts_total{action=reject,mode=enforce,module=flood}": 3,
    }


# One message in the SBC's sipdump files: its header block, then the message.
DUMPED = re.compile(r"^tag: (\w+)$.*?^srcip: (\S+)$.*?^~+$\n(\S+) ", re.MULTILINE | re.DOTALL)


def requests_received_from(lab: RunningLab, ip: str) -> Counter[str]:
    """Requests the SBC received from ``ip`` as its sipdump recorded them, by method class."""
    return Counter(
        method_class(first)
        for path in (lab.directory / "sipdump").glob("*.data")
        for tag, source, first in DUMPED.findall(path.read_text(errors="replace"))
        if tag == "rcv" and source == ip and first != "SIP/2.0"
    )


def guess_passwords(lab: RunningLab, guesser: str, user: str, directory: Path) -> None:
    """Eight wrong passwords for ``user`` from ``guesser``: enough for a ban (3 failures)."""
    guesses = credentials_file(directory / "guesses.csv", [(user, f"guess{n}") for n in range(8)])
    run_sipp(
        "register_many",
        lab.sip_target(),
        local_ip=guesser,
        calls=8,
        rate=5,
        injection_file=guesses,
        keys={"domain": lab.domain},
        timeout_s=10,
    )
    assert lab.redis.exists(f"sipshield:ban:user:{guesser}:{user}")


def call_alice_to_bob(lab: RunningLab) -> None:
    callee = lab.answer_calls("bob", free_port())
    call = lab.call("alice", "bob", talk_ms=100)
    assert call.ok, call.explain()
    assert callee.finish().successful == 1


def test_password_guessing_counts_the_ban_and_the_requests_it_blocks(
    lab: RunningLab, tmp_path: Path
):
    guesser = "127.0.0.25"
    before_alice = scrape(lab)
    assert lab.register("alice").ok  # beside the attack: REGISTER, 401, REGISTER, 200
    before_guessing = wait_for(
        lab,
        grown(
            before_alice, 2, "sipshield_requests_total", method_class="register", outcome="passed"
        ),
    )
    assert counters_only(moved(before_alice, before_guessing)) == {
        "sipshield_requests_total{method_class=register,outcome=passed}": 2,
    }
    events_before = len(lab.events())
    guess_passwords(lab, guesser, "carol", tmp_path)
    blocked = [
        e
        for e in events_since(lab, events_before)
        if e["module"] == "bans" and e["src"].startswith(guesser + ":")
    ]
    assert blocked, "the ban blocked none of the later guesses"
    blocked_by_class = Counter(method_class(e["method"]) for e in blocked)

    def expected() -> dict[str, float]:
        counts = {
            "sipshield_verdicts_total{action=ban,mode=enforce,module=brute_force}": 1,
            "sipshield_verdicts_total{action=reject,mode=enforce,module=bans}": len(blocked),
            "sipshield_bans_added_total{module=brute_force,scope=user}": 1,
        }
        for kind, count in blocked_by_class.items():
            counts[f"{REQUESTS}{{method_class={kind},outcome=blocked}}"] = count
        # The rest of what the guesser sent passed (retransmissions, SIPp's BYE after a failure).
        for kind, count in (requests_received_from(lab, guesser) - blocked_by_class).items():
            counts[f"{REQUESTS}{{method_class={kind},outcome=passed}}"] = count
        return counts

    # The blocked counts, the sipdump and the ban gauge are all written a little later.
    after = wait_for(
        lab,
        lambda now: (
            counters_only(moved(before_guessing, now)) == expected()
            and value(now, "sipshield_bans_active", scope="user") == 1
        ),
    )
    assert counters_only(moved(before_guessing, after)) == expected()
    assert value(after, "sipshield_bans_active", scope="user") == 1
    assert value(after, "sipshield_bans_active", scope="ip") == 0


def rtpengine_commands(lab: RunningLab) -> dict[str, int]:
    client = RtpengineClient([("127.0.0.1", int(lab.info["rtpengine_ng"].rsplit(":", 1)[1]))])
    try:
        control = client.statistics()["controlstatistics"]
    finally:
        client.close()
    return {
        command: int(control[f"total{command}count"]) for command in ("offer", "answer", "delete")
    }


def test_a_call_counts_its_anchored_media_and_each_ng_command(lab: RunningLab):
    commands_before = rtpengine_commands(lab)
    before = scrape(lab)
    call_alice_to_bob(lab)
    commands = {
        command: count - commands_before[command]
        for command, count in rtpengine_commands(lab).items()
    }
    after = wait_for(
        lab,
        lambda s: all(
            value(s, "sipshield_rtpengine_rtt_seconds_count", command=command)
            - value(before, "sipshield_rtpengine_rtt_seconds_count", command=command)
            >= count
            for command, count in commands.items()
        ),
    )
    changes = moved(before, after)
    for command, count in commands.items():
        assert (
            changes.get(f"sipshield_rtpengine_rtt_seconds_count{{command={command}}}", 0) == count
        )
    # alice -> PBX and PBX -> bob: the call crosses the SBC twice, each crossing anchored.
    assert changes["sipshield_calls_anchored_total{}"] == 2
    assert not any(series.startswith("sipshield_rtpengine_failures_total") for series in changes)


def test_the_node_gauges_say_redis_is_up_and_which_policy_runs(lab: RunningLab):
    # The timer process sets them within a second of the start.
    samples = wait_for(lab, lambda now: value(now, "sipshield_redis_up") == 1)
    assert value(samples, "sipshield_redis_up") == 1
    assert 0 < value(samples, "sipshield_redis_rtt_seconds") < 5
    digest = hashlib.sha256(Path(lab.info["policy"]).read_bytes()).hexdigest()[:12]
    assert value(samples, "sipshield_policy_info", digest=digest) == 1
    loaded = value(samples, "sipshield_policy_loaded_timestamp_seconds")
    assert Path(lab.info["policy"]).stat().st_mtime <= loaded <= time.time()


def test_an_expired_ban_is_counted_and_leaves_the_gauge(lab: RunningLab):
    before = wait_for(lab, lambda now: value(now, "sipshield_redis_up") == 1)
    account = f"expiring-{time.monotonic_ns()}"
    subprocess.run(
        [
            *SIPSHIELD,
            "bans",
            "--lab",
            str(lab.directory),
            "add",
            "--account",
            account,
            "--ttl",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    # In force for 4 s (the timer counts every second), then gone and counted once.
    held = wait_for(lab, grown(before, 1, "sipshield_bans_active", scope="account"))
    assert value(held, "sipshield_bans_active", scope="account") == 1
    after = wait_for(lab, grown(before, 1, "sipshield_bans_expired_total"), timeout=30)
    assert moved(before, after)["sipshield_bans_expired_total{}"] == 1
    assert value(after, "sipshield_bans_active", scope="account") == 0
    assert not lab.redis.zscore("sipshield:bans", f"account:{account}")


def test_metrics_are_served_only_on_the_metrics_listener(lab: RunningLab):
    host, port = lab.info["metrics"].split("//")[1].split("/")[0].split(":")
    # HTTP to the SIP listener learns nothing.
    sip_host, sip_port = lab.sip("tcp")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{sip_host}:{sip_port}/metrics", timeout=5)
    assert refused.value.code == 404
    assert b"sipshield_" not in refused.value.read()
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        urllib.request.urlopen(f"http://{host}:{port}/other", timeout=5)
    assert elsewhere.value.code == 404
    # SIP sent to the metrics listener is neither answered nor screened nor routed.
    before = scrape(lab)
    raw, _ = options(f"{host}:{port}")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(raw.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        connection.settimeout(1.0)
        with pytest.raises(TimeoutError):
            connection.recv(4096)
    assert re.search(r"SIP from \S+ on the metrics listener dropped", lab.log("sbc"))
    assert counters_only(moved(before, scrape(lab))) == {}
    assert lab.options() == 200  # and SIP on the SIP listeners still is


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def alert_queries() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def exposed(lab: RunningLab, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name the SBC exposes once each kind of thing has happened.

    Some series exist only after their first event: a verdict, a ban, a call
    through rtpengine.  This makes one of each, then scrapes.
    """
    guess_passwords(lab, "127.0.0.26", "dave", tmp_path_factory.mktemp("guesses"))
    call_alice_to_bob(lab)
    samples = wait_for(
        lab, grown({}, 1, "sipshield_bans_added_total", scope="user", module="brute_force")
    )
    return {name for name, _ in samples}


def metrics_named(expr: str) -> set[str]:
    return set(re.findall(r"\bsipshield_\w+", expr))


def test_every_dashboard_query_names_a_metric_the_sbc_exposes(exposed: set[str]):
    queries = dashboard_queries()
    assert len(queries) >= len(METRICS) - 2
    named = set()
    for expr in queries:
        metrics = metrics_named(expr)
        assert metrics, f"query names no sipshield metric: {expr}"
        assert metrics <= exposed, f"{expr}: not exposed: {metrics - exposed}"
        named |= metrics
    # Every declared metric is on the dashboard (histograms through their series).
    shown = {re.sub(r"_(bucket|count|sum)$", "", name) for name in named}
    assert {spec.name for spec in METRICS} <= shown


def test_every_alert_names_a_metric_the_sbc_exposes(exposed: set[str]):
    queries = alert_queries()
    assert queries
    for expr in queries:
        metrics = metrics_named(expr)
        assert metrics, f"alert names no sipshield metric: {expr}"
        assert metrics <= exposed, f"{expr}: not exposed: {metrics - exposed}"
