"""Pipeline rules inside the real Kamailio: crashes fail open or closed, modes, flood."""

from __future__ import annotations

import pytest

from tests.integration.sip_messages import options

pytestmark = pytest.mark.integration

BASE = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
"""


@pytest.mark.parametrize(("on_error", "expected"), [("open", 200), ("closed", 500)])
def test_module_crash_fails_as_the_policy_says(make_lab, on_error, expected):
    lab = make_lab(
        BASE
        + f"""\
modules:
  - name: plugin
    target: exploding:Exploding
    on_error: {on_error}
"""
    )
    target = lab.sip_target()
    boom, call_id = options(target, "X-Explode: yes\r\n")
    assert lab.send(boom) == expected
    event = lab.wait_for_event(module="plugin:Exploding", action="error", call_id=call_id)
    assert event["reason"] == "RuntimeError: exploding on request"
    # The crash was logged with its traceback, and Kamailio keeps serving.
    assert "exploding on request" in lab.log("sbc")
    assert lab.send(options(target)[0]) == 200


def test_flood_enforced_drops_the_flooder_but_not_its_neighbour(make_lab):
    lab = make_lab(
        BASE
        + """\
modules:
  - name: flood
    window_s: 60
    limits: {options: 5}
    response: reject
"""
    )
    flooder, neighbour = "127.0.0.3", "127.0.0.4"
    codes = [lab.options(source_ip=flooder) for _ in range(8)]
    assert codes == [200] * 5 + [503] * 3
    assert lab.options(source_ip=neighbour) == 200
    event = lab.wait_for_event(module="flood", action="reject")
    assert event["src"].startswith(flooder + ":")
    assert event["mode"] == "enforce"


def test_flood_drop_response_is_silent(make_lab):
    lab = make_lab(
        BASE + "modules:\n  - {name: flood, window_s: 60, limits: {options: 2}, response: drop}\n"
    )
    codes = [lab.options(source_ip="127.0.0.5", timeout=0.5) for _ in range(3)]
    assert codes == [200, 200, None]


def test_monitor_mode_reports_without_blocking(make_lab):
    lab = make_lab(
        BASE
        + """\
modules:
  - name: flood
    mode: monitor
    window_s: 60
    limits: {options: 2}
    response: reject
"""
    )
    codes = [lab.options(source_ip="127.0.0.6") for _ in range(4)]
    assert codes == [200] * 4
    event = lab.wait_for_event(module="flood", mode="monitor")
    assert event["action"] == "reject"


def test_events_reach_the_redis_stream_and_the_cli(make_lab):
    import subprocess
    import sys

    lab = make_lab(BASE + "modules:\n  - {name: plugin, target: 'exploding:Exploding'}\n")
    boom, call_id = options(lab.sip_target(), "X-Explode: 1\r\n")
    lab.send(boom)
    lab.wait_for_event(call_id=call_id)
    out = subprocess.run(
        [sys.executable, "-m", "sipshield.ops.cli", "events", "--lab", str(lab.directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert call_id in out
