"""`sipshield events --follow` with filters, reading the real SBC's event stream.

The events the filter must hide are made first, the one it must show last:
the stream keeps their order, so had the command printed a hidden one, it
would have printed it before the one it waits for.
"""

from __future__ import annotations

import json
import select
import subprocess
import time

import pytest

from tests.integration.lab_fixture import SIPSHIELD, RunningLab, lab_with_policy
from tests.integration.sip_messages import options

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: bans}
  - {name: scanner}
  - {name: flood, window_s: 60, limits: {options: 2}, response: reject}
"""
FLOODER, OTHER_FLOODER, SCANNER = "127.0.0.31", "127.0.0.32", "127.0.0.33"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with lab_with_policy(tmp_path_factory.mktemp("events-cli"), POLICY) as running:
        yield running


def events_command(lab: RunningLab, *options: str) -> list[str]:
    return [*SIPSHIELD, "events", "--lab", str(lab.directory), *options]


def read_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline()
    raise AssertionError("no event printed")


def flood(lab: RunningLab, source: str) -> None:
    assert [lab.options(source_ip=source) for _ in range(3)] == [200, 200, 503]


def test_follow_shows_only_what_the_filters_match(lab: RunningLab):
    follow = subprocess.Popen(
        events_command(lab, "--follow", "--module", "flood", "--source", FLOODER),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Hidden: another module, another source; legitimate traffic makes no event.
        assert lab.options(source_ip="127.0.0.34") == 200
        scan, _ = options(lab.sip_target(), "User-Agent: sipvicious\r\n")
        assert lab.send(scan, source_ip=SCANNER, timeout=0.5) is None
        lab.wait_for_event(module="scanner")
        flood(lab, OTHER_FLOODER)
        # Shown (each event reaches the stream before its request is answered).
        flood(lab, FLOODER)
        shown = json.loads(read_line(follow))
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    assert shown["module"] == "flood" and shown["src"].startswith(FLOODER + ":")
    assert shown["action"] == "reject"


def test_past_events_filtered_by_action_and_user(lab: RunningLab):
    scan, _ = options(lab.sip_target(), "User-Agent: friendly-scanner\r\n")
    assert lab.send(scan, source_ip="127.0.0.35", timeout=0.5) is None
    lab.wait_for_event(module="scanner", action="ban")
    everything = subprocess.run(
        events_command(lab), capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()
    bans = subprocess.run(
        events_command(lab, "--action", "ban"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    expected = [line for line in everything if json.loads(line)["action"] == "ban"]
    assert bans == expected
    assert any(json.loads(line)["src"].startswith("127.0.0.35:") for line in bans)
    nobody = subprocess.run(
        events_command(lab, "--user", "nobody-sends-this"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert nobody == ""
