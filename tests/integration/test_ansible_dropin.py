"""The kamailio role in drop-in mode: the operator's kamailio.cfg is edited, not replaced.

The role runs on a copy of Debian's stock kamailio.cfg in a temporary
directory (the example inventory's SBC host, services off).  It must make
exactly the edit sipshield.edge.dropin makes, change nothing on a second run, and
leave the live file alone when `kamailio -c` refuses the edited copy.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sipshield.edge.dropin import add_to_native_config
from tests.integration.test_ansible import ANSIBLE, REPO, SBC_HOST, ansible_playbook, recap_changed
from tests.support.stock_kamailio import stock_text

pytestmark = pytest.mark.integration


def apply_role(root: Path) -> subprocess.CompletedProcess[str]:
    overrides = {
        "ansible_become": False,
        "kamailio_manage_service": False,
        "sipshield_manage_services": False,
        "kamailio_config_mode": "dropin",
        "kamailio_config_dir": f"{root}/kamailio",
        "kamailio_kemi_entry_path": f"{root}/share/sipshield_kemi.py",
        "kamailio_dropin_path": f"{root}/share/sipshield-dropin.cfg",
        "sipshield_policy_path": f"{root}/sipshield/policy.yaml",
        "sipshield_key_dir": f"{root}/sipshield/keys",
        "sipshield_events_dir": f"{root}/log",
        "sipshield_venv": str(REPO / ".venv"),
    }
    extra_vars = root / "overrides.json"
    extra_vars.write_text(json.dumps(overrides))
    return ansible_playbook(
        "-i", str(ANSIBLE / "inventories" / "example"), "-c", "local", "--limit", SBC_HOST,
        "--skip-tags", "packages,venv", "-e", f"@{extra_vars}",
    )  # fmt: skip


def test_dropin_mode_edits_the_stock_configuration_once_and_checks_it(tmp_path: Path) -> None:
    (tmp_path / "kamailio").mkdir()
    live = tmp_path / "kamailio" / "kamailio.cfg"
    live.write_text(stock_text())
    for attempt in ("first", "second"):
        run = apply_role(tmp_path)
        assert run.returncode == 0, f"{attempt} run failed:\n{run.stdout[-4000:]}{run.stderr}"
    assert recap_changed(run.stdout) == {SBC_HOST: 0}, run.stdout[-4000:]
    dropin = tmp_path / "share" / "sipshield-dropin.cfg"
    assert live.read_text() == add_to_native_config(stock_text(), str(dropin))
    assert f'#!define SIPSHIELD_ENTRY "{tmp_path}/share/sipshield_kemi.py"' in dropin.read_text()
    check = subprocess.run(["kamailio", "-c", "-f", str(live)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_edit_kamailio_refuses_never_reaches_the_live_file(tmp_path: Path) -> None:
    # A configuration that loads app_python3 itself: the drop-in's second
    # loadmodule makes `kamailio -c` fail, so the live file must stay as it was.
    (tmp_path / "kamailio").mkdir()
    live = tmp_path / "kamailio" / "kamailio.cfg"
    original = stock_text().replace(
        'loadmodule "kex.so"\n', 'loadmodule "kex.so"\nloadmodule "app_python3.so"\n', 1
    )
    live.write_text(original)
    run = apply_role(tmp_path)
    assert run.returncode != 0
    assert "Check the edited configuration with kamailio -c" in run.stdout
    assert live.read_text() == original


def test_dropin_mode_joins_the_operators_own_local_response_route(tmp_path: Path) -> None:
    # Kamailio refuses two event_route[sl:local-response] blocks: the role keeps
    # the drop-in's out (a define) and calls sipshield first in the operator's.
    (tmp_path / "kamailio").mkdir()
    live = tmp_path / "kamailio" / "kamailio.cfg"
    original = stock_text() + (
        '\nevent_route[sl:local-response] {\n\txlog("L_INFO", "replied $rs\\n");\n}\n'
    )
    live.write_text(original)
    for attempt in ("first", "second"):
        run = apply_role(tmp_path)
        assert run.returncode == 0, f"{attempt} run failed:\n{run.stdout[-4000:]}{run.stderr}"
    assert recap_changed(run.stdout) == {SBC_HOST: 0}, run.stdout[-4000:]
    dropin = tmp_path / "share" / "sipshield-dropin.cfg"
    assert live.read_text() == add_to_native_config(original, str(dropin))
    assert "#!define SIPSHIELD_HAVE_SL_LOCAL_RESPONSE" in live.read_text()
    check = subprocess.run(["kamailio", "-c", "-f", str(live)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
