"""The by-hand drop-in with `sipshield install-dropin`, into a temporary root, end to end.

What an operator without Ansible does: install, add the printed include line
(and the route calls) to Debian's stock kamailio.cfg, check with the printed
command, and start Kamailio as Debian's unit does: as the kamailio user, with
the environment of the installed systemd drop-in.  The starter policy watches
(monitor mode); a scanner's probe is answered by the stock routing as before
and its event lands in the events file, which the kamailio user can write.
"""

from __future__ import annotations

import json
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipshield.edge.dropin import add_to_native_config
from sipshield.lab.net import free_port
from sipshield.lab.stack import config_dir
from tests.integration.dropin_peer import final_status_line, request
from tests.integration.lab_fixture import SIPSHIELD
from tests.support.stock_kamailio import StockKamailio, start, stock_text

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """A root any user can reach (pytest's temporary directories are root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="sipshield-install-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def installed(root: Path) -> list[str]:
    done = subprocess.run([*SIPSHIELD, "install-dropin", "--root", str(root)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.stderr == ""
    assert done.returncode == 0
    return done.stdout.splitlines()


def printed_after(lines: list[str], heading: str) -> str:
    """The indented line printed after the line that starts with ``heading``."""
    index = next(n for n, line in enumerate(lines) if line.startswith(heading))
    return lines[index + 1].strip()


def unit_environment(root: Path) -> dict[str, str]:
    unit = root / "etc/systemd/system/kamailio.service.d/sipshield.conf"
    pairs = [
        line.removeprefix("Environment=").split("=", 1)
        for line in unit.read_text().splitlines()
        if line.startswith("Environment=")
    ]
    return dict(pairs)


def test_the_files_are_in_place_with_the_owners_kamailio_needs(root: Path, installed):
    share = root / "usr/share/sipshield"
    for name in ("sipshield-dropin.cfg", "sipshield_kemi.py"):
        assert (share / name).read_bytes() == (config_dir() / name).read_bytes()
    policy = root / "etc/sipshield/policy.yaml"
    starter = (config_dir() / "policy.monitor.yaml").read_text()
    events = root / "var/log/sipshield"
    assert policy.read_text() == starter.replace("/var/log/sipshield", str(events))
    kamailio = pwd.getpwnam("kamailio")
    assert (events.stat().st_uid, events.stat().st_gid) == (kamailio.pw_uid, kamailio.pw_gid)
    assert (policy.stat().st_gid, policy.stat().st_mode & 0o777) == (kamailio.pw_gid, 0o640)
    assert unit_environment(root) == {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SIPSHIELD_POLICY": str(policy),
        "PYTHONPATH": unit_environment(root)["PYTHONPATH"],
    }
    assert installed[:4] == [
        f"installed {share / 'sipshield-dropin.cfg'} and {share / 'sipshield_kemi.py'}",
        f"policy {policy} (the starter: every module in monitor; set domain and peers.pbx)",
        f"events directory {events}, owned by kamailio",
        f"Kamailio's environment: {root / 'etc/systemd/system/kamailio.service.d/sipshield.conf'}"
        " (then systemctl daemon-reload)",
    ]


def test_a_second_run_keeps_the_operators_policy(root: Path, installed):
    policy = root / "etc/sipshield/policy.yaml"
    edited = policy.read_text().replace("example.com", "voice.example.net")
    policy.write_text(edited)
    done = subprocess.run([*SIPSHIELD, "install-dropin", "--root", str(root)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0
    assert f"policy {policy} (kept as it was)" in done.stdout.splitlines()
    assert policy.read_text() == edited


@pytest.fixture(scope="module")
def by_hand(root: Path, installed: list[str]) -> Iterator[StockKamailio]:
    include = printed_after(installed, "In your kamailio.cfg")
    entry_define = printed_after(installed, "and, before it")
    text = add_to_native_config(stock_text(), include.split('"')[1])
    assert include in text
    text = text.replace(include, f"{entry_define}\n{include}")
    # The operator's own value in the starter: where Redis is (nowhere here).
    policy = root / "etc/sipshield/policy.yaml"
    policy.write_text(policy.read_text().replace("127.0.0.1:6379", f"127.0.0.1:{free_port()}"))
    work = root / "kamailio"
    work.mkdir()
    config = work / "kamailio.cfg"
    config.write_text(text)
    check = shlex.split(printed_after(installed, "then the route calls"))
    assert check[:4] == ["sipshield", "dropin", "check", "/etc/kamailio/kamailio.cfg"]
    done = subprocess.run([*SIPSHIELD, *check[1:3], str(config), *check[4:]],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    running = start(work, config=text, env=unit_environment(root), user="kamailio")
    yield running
    running.stop()


def test_the_stock_file_answers_and_the_probe_is_an_event_in_the_file(root: Path, by_hand):
    keepalive = request(by_hand, "OPTIONS", f"sip:{by_hand.domain}")
    assert final_status_line(by_hand, keepalive) == "SIP/2.0 200 Keepalive"
    probe = request(by_hand, "OPTIONS", f"sip:{by_hand.domain}", "User-Agent: friendly-scanner\r\n")
    # Monitor mode: sipshield only writes it down; the stock file drops scanners itself.
    assert final_status_line(by_hand, probe, timeout=1.0) is None
    events = root / "var/log/sipshield/events.jsonl"
    deadline = time.monotonic() + 5
    while not events.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    (event,) = [json.loads(line) for line in events.read_text().splitlines()]
    assert (event["module"], event["mode"], event["method"]) == ("scanner", "monitor", "OPTIONS")
    assert events.stat().st_uid == pwd.getpwnam("kamailio").pw_uid
    assert "PermissionError" not in by_hand.log()
