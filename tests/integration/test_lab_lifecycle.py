"""The lab itself: a bad policy stops Kamailio, two labs run at once, nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipshield.lab.stack import config_dir, group_members
from tests.conftest import REPO
from tests.integration.lab_fixture import SIPSHIELD

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "kamailio-cfg" / "policy.example.yaml"


def test_kamailio_refuses_to_start_on_an_invalid_policy(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: x\npeers:\n  pbx: {address: 127.0.0.1:5090}\nmodules: [{name: nope}]\n")
    cfg = config_dir()
    import sysconfig

    from sipshield.lab.net import free_port

    port = free_port()
    proc = subprocess.run(
        [
            "kamailio", "-f", str(cfg / "kamailio.cfg"), "-DD", "-E", "-Y", str(tmp_path),
            "-A", f"SIP_UDP=udp:127.0.0.1:{port}",
            "-A", f'SIPSHIELD_ENTRY="{cfg / "sipshield_kemi.py"}"', "-A", "WORKERS=1",
        ],
        env={**os.environ, "SIPSHIELD_POLICY": str(bad),
             "PYTHONPATH": sysconfig.get_paths()["purelib"]},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"sipshield: invalid policy: {bad}:4: modules[0]:" in proc.stderr
    assert "refusing to start" in proc.stderr


def test_lab_up_refuses_an_invalid_policy_with_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: x\n")
    proc = subprocess.run(
        [*SIPSHIELD, "lab", "up", "--policy", str(bad), "--dir", str(tmp_path / "lab")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "peers: Field required" in proc.stderr


def test_two_labs_run_side_by_side_and_down_leaves_nothing(make_lab):
    policy = EXAMPLE.read_text()
    first, second = make_lab(policy), make_lab(policy)
    assert first.sip() != second.sip()
    assert first.options() == 200
    assert second.options() == 200
    pids = list(first.info["pids"].values())
    subprocess.run([*SIPSHIELD, "lab", "down", "--dir", str(first.directory)], check=True)
    assert not any(group_members(pid) for pid in pids)
    assert second.options() == 200


def test_foreground_lab_prints_where_it_listens_and_stops_cleanly_on_ctrl_c(tmp_path: Path):
    """What `make run` does: lab up in the foreground, events followed, Ctrl-C stops all."""
    directory = tmp_path / "fg"
    proc = subprocess.Popen(
        [*SIPSHIELD, "lab", "up", "--policy", str(EXAMPLE), "--dir", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        output.append(line)
        if "security events follow" in line or not line:
            break
    text = "".join(output)
    assert "SBC SIP udp" in text, text
    assert "Redis" in text and "rtpengine ng" in text
    import json

    pids = list(json.loads((directory / "lab.json").read_text())["pids"].values())
    assert all(group_members(pid) for pid in pids)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "no process left behind" in rest
    assert not any(group_members(pid) for pid in pids)
    assert sys.executable  # the CLI ran under this interpreter
