"""The sipshield role's scheduled selftest: the unit it renders runs and keeps its reports.

The role runs on the example inventory's SBC host into a temporary directory
(services off), with the selftest enabled against a lab.  The test then runs
the command of the rendered service as systemd would, and its clean-up.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import EXAMPLE_POLICY
from tests.integration.lab_fixture import RunningLab, lab_with_policy
from tests.integration.test_ansible import ANSIBLE, REPO, SBC_HOST, ansible_playbook

pytestmark = pytest.mark.integration

SOURCES = ["127.0.0.60", "127.0.0.61", "127.0.0.62"]
ONLY = ["fingerprint-sbc", "flood-options"]


def apply_role(root: Path, lab: RunningLab) -> subprocess.CompletedProcess[str]:
    overrides = {
        "ansible_become": False,
        "kamailio_manage_service": False,
        "sipshield_manage_services": False,
        "kamailio_config_dir": f"{root}/kamailio",
        "kamailio_kemi_entry_path": f"{root}/share/sipshield_kemi.py",
        "sipshield_policy_path": f"{root}/sipshield/policy.yaml",
        "sipshield_key_dir": f"{root}/sipshield/keys",
        "sipshield_events_dir": f"{root}/log",
        "sipshield_venv": str(REPO / ".venv"),
        "sipshield_selftest_enabled": True,
        "sipshield_selftest_target": lab.sip_target("udp"),
        "sipshield_selftest_sources": SOURCES,
        "sipshield_selftest_accounts": [{"user": "alice", "password": lab.password("alice")}],
        "sipshield_selftest_policy_path": lab.info["policy"],
        "sipshield_selftest_only": ONLY,
        "sipshield_selftest_report_dir": f"{root}/reports",
        "sipshield_selftest_unit_dir": f"{root}/systemd",
        "sipshield_selftest_keep_reports": 2,
    }
    (root / "systemd").mkdir(parents=True)
    extra_vars = root / "overrides.json"
    extra_vars.write_text(json.dumps(overrides))
    return ansible_playbook(
        "-i", str(ANSIBLE / "inventories" / "example"), "-c", "local", "--limit", SBC_HOST,
        "--skip-tags", "packages,venv", "-e", f"@{extra_vars}",
    )  # fmt: skip


def unit_command(service: str, key: str) -> list[str]:
    """A command line of the unit (ExecStart=, ExecStopPost=), as systemd runs it."""
    line = next(line for line in service.splitlines() if line.startswith(f"{key}="))
    return shlex.split(line.partition("=")[2].replace("%%", "%"))


def test_the_scheduled_selftest_runs_and_keeps_its_reports(tmp_path: Path) -> None:
    with lab_with_policy(tmp_path / "lab", EXAMPLE_POLICY.read_text()) as lab:
        root = tmp_path / "rendered"
        run = apply_role(root, lab)
        assert run.returncode == 0, f"the role failed:\n{run.stdout[-4000:]}{run.stderr}"

        args = root / "sipshield" / "selftest.args"
        assert oct(args.stat().st_mode & 0o777) == "0o600"  # it holds the accounts' passwords
        assert f"--account=alice:{lab.password('alice')}" in args.read_text().splitlines()
        timer = (root / "systemd" / "sipshield-selftest.timer").read_text()
        assert "OnCalendar=Sun *-*-* 03:00:00" in timer
        service = (root / "systemd" / "sipshield-selftest.service").read_text()

        reports = root / "reports"
        for name in ("selftest-20000101T000000Z.json", "selftest-20000102T000000Z.json"):
            (reports / name).write_text("{}")
            os.utime(reports / name, (946684800, 946684800))
        done = subprocess.run(
            unit_command(service, "ExecStart"), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        subprocess.run(unit_command(service, "ExecStopPost"), check=True, timeout=30)

    kept = sorted(p.name for p in reports.iterdir())
    assert len(kept) == 2 and kept[0] in ("selftest-20000101T000000Z.json",
                                          "selftest-20000102T000000Z.json")  # fmt: skip
    report = json.loads((reports / kept[1]).read_text())
    assert [r["attack"] for r in report["results"]] == ONLY
    assert [r["status"] for r in report["results"]] == ["pass", "pass"]
    assert "lifted bans: ip:127.0.0.62" in done.stderr
