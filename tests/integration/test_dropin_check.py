"""`sipshield dropin check` on Debian's stock kamailio.cfg, beside what `kamailio -c` says.

The stock file comes from the kamailio package and is copied.  The include in
the right place is the edit test_dropin_stock.py runs (and shows working); the
other cases are the mistakes an operator makes by hand.  Where `kamailio -c`
accepts a configuration that cannot work (the include inside the stock file's
WITH_DEBUG block, route calls without the include), the test shows it
accepting it, and the check refusing it with exit 2 and a line that says why.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sipshield.edge.dropin import add_to_native_config
from sipshield.edge.kamailio_env import kamailio_environment
from sipshield.lab.stack import config_dir
from tests.integration.lab_fixture import SIPSHIELD
from tests.support.stock_kamailio import stock_text

pytestmark = pytest.mark.integration

ENTRY = config_dir() / "sipshield_kemi.py"
QUOTED_ENTRY = f'SIPSHIELD_ENTRY="{ENTRY}"'
POLICY = {
    "domain": "127.0.0.1",
    "peers": {"pbx": {"address": "127.0.0.1:9"}},
    "events": {"file": None},
    "modules": [{"name": "validation"}, {"name": "flood", "window_s": 10}],
}
# Where "after your last loadmodule/modparam line" lands in the stock file.
LAST_MODPARAM = 'modparam("debugger", "log_level_name", "exec")\n'


def shielded() -> str:
    return add_to_native_config(stock_text(), str(config_dir() / "sipshield-dropin.cfg"))


def include_line(text: str) -> str:
    (line,) = [line for line in text.splitlines(keepends=True) if line.startswith("include_file")]
    return line


def write(tmp_path: Path, text: str, policy: dict | None = None) -> tuple[Path, Path]:
    config = tmp_path / "kamailio.cfg"
    config.write_text(text)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy or POLICY))
    return config, policy_file


def dropin_check(config: Path, policy: Path, *defines: str) -> subprocess.CompletedProcess:
    arguments = [arg for define in defines for arg in ("-A", define)]
    return subprocess.run(
        [*SIPSHIELD, "dropin", "check", str(config), "--policy", str(policy), *arguments],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def kamailio_check(config: Path, *defines: str) -> subprocess.CompletedProcess:
    arguments = [arg for define in defines for arg in ("-A", define)]
    return subprocess.run(
        ["kamailio", "-c", "-f", str(config), *arguments],
        env=kamailio_environment("/nonexistent"), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_the_include_before_request_route_passes(tmp_path):
    config, policy = write(tmp_path, shielded())
    done = dropin_check(config, policy, QUOTED_ENTRY)
    assert done.stderr == ""
    assert done.returncode == 0
    line = shielded().splitlines().index(include_line(shielded()).rstrip("\n")) + 1
    assert done.stdout == (
        f"{config}: the drop-in is in place: include at {config}:{line}, every route call, "
        f"entry {ENTRY}, policy {policy}: validation(enforce), flood(enforce)\n"
    )


def test_the_include_inside_the_with_debug_block_fails_although_kamailio_c_passes(tmp_path):
    text = shielded()
    include = include_line(text)
    text = text.replace(include, "").replace(LAST_MODPARAM, LAST_MODPARAM + include)
    config, policy = write(tmp_path, text)
    assert kamailio_check(config, QUOTED_ENTRY).returncode == 0
    done = dropin_check(config, policy, QUOTED_ENTRY)
    assert done.returncode == 2
    lines = text.splitlines(keepends=True)
    at, opened = lines.index(include) + 1, lines.index("#!ifdef WITH_DEBUG\n", 400) + 1
    assert done.stderr == (
        f"{config}:{at}: the include is inside #!ifdef WITH_DEBUG ({config}:{opened}): "
        "Kamailio skips it unless that condition holds, and the start fails with "
        'route "SIPSHIELD" not found; move it to the line just before `request_route {`, '
        "outside every #!ifdef block\n"
    )


def test_route_calls_without_the_include_fail_although_kamailio_c_passes(tmp_path):
    text = shielded().replace(include_line(shielded()), "")
    config, policy = write(tmp_path, text)
    assert kamailio_check(config).returncode == 0
    done = dropin_check(config, policy, QUOTED_ENTRY)
    assert done.returncode == 2
    assert done.stderr == (
        f'{config}: no include of sipshield-dropin.cfg: put include_file "/usr/share/sipshield/'
        'sipshield-dropin.cfg" on the line just before `request_route {`, outside every '
        "#!ifdef block\n"
    )


def test_a_missing_entry_file_fails(tmp_path):
    config, policy = write(tmp_path, shielded())
    missing = tmp_path / "nowhere" / "sipshield_kemi.py"
    done = dropin_check(config, policy, f'SIPSHIELD_ENTRY="{missing}"')
    assert done.returncode == 2
    assert done.stderr == (
        f"SIPSHIELD_ENTRY {missing}: cannot read the KEMI entry: No such file or directory\n"
    )


def test_the_unquoted_entry_define_fails_where_kamailio_points_into_the_dropin(tmp_path):
    config, policy = write(tmp_path, shielded())
    unquoted = f"SIPSHIELD_ENTRY={ENTRY}"
    refused = kamailio_check(config, unquoted)
    assert refused.returncode != 0
    assert "sipshield-dropin.cfg, line" in refused.stderr  # not a word about -A
    done = dropin_check(config, policy, unquoted)
    assert done.returncode == 2
    assert done.stderr == (
        f"-A {unquoted}: not a string, and Kamailio's error will point into the drop-in: "
        f"quote it, -A '{QUOTED_ENTRY}'\n"
    )


def test_a_bad_policy_fails_with_the_field_named(tmp_path):
    bad = {**POLICY, "modules": [{"name": "flood", "window_s": -1}]}
    config, policy = write(tmp_path, shielded(), bad)
    done = dropin_check(config, policy, QUOTED_ENTRY)
    assert done.returncode == 2
    at = 1 + next(n for n, line in enumerate(policy.read_text().splitlines()) if "window_s" in line)
    assert done.stderr == (
        f"SIPSHIELD_POLICY: {policy}:{at}: modules[0].window_s: Input should be greater than 0\n"
    )
