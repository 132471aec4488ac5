"""Policy validation: errors name the file, the line and the field."""

import subprocess
import sys
import textwrap

import pytest

from sipshield.core.policy import PolicyError, load_policy, parse_policy
from tests.conftest import REPO

MINIMAL = """\
domain: example.net
peers:
  pbx: {address: 10.0.0.5:5060}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(textwrap.dedent(text), "p.yaml")
    return caught.value.errors


def test_minimal_policy_gets_safe_defaults():
    policy = parse_policy(MINIMAL)
    assert policy.redis.on_failure == "open"
    assert policy.on_module_error == "open"
    assert policy.listeners.tls == "127.0.0.1:5061"
    assert policy.modules == []


def test_example_policy_is_valid():
    policy = load_policy(REPO / "kamailio-cfg" / "policy.example.yaml")
    assert [m.name for m in policy.modules]


def test_unknown_field_is_refused_with_its_line():
    assert errors_of(MINIMAL + "redis:\n  url: redis://x\n  timeout: 5\n") == [
        "p.yaml:6: redis.timeout: Extra inputs are not permitted"
    ]


def test_module_setting_error_names_the_module_entry_and_line():
    text = MINIMAL + "modules:\n  - name: flood\n    limits: {invite: 0}\n"
    assert errors_of(text) == ["p.yaml:6: modules[0].limits.invite: Input should be greater than 0"]


def test_unknown_module_is_refused():
    (error,) = errors_of(MINIMAL + "modules:\n  - name: antivirus\n")
    assert error.startswith("p.yaml:5: modules[0]:")
    assert "antivirus" in error


def test_missing_required_field_points_at_its_parent():
    assert errors_of("domain: x\npeers:\n  trunks: []\n") == ["p.yaml:2: peers.pbx: Field required"]


def test_bad_address_and_mode():
    errors = errors_of(
        MINIMAL.replace("10.0.0.5:5060", "10.0.0.5")
        + "modules:\n  - {name: flood, mode: enforcing}\n"
    )
    assert errors[0].startswith("p.yaml:3: peers.pbx.address: Value error, expected HOST:PORT")
    assert errors[1].startswith("p.yaml:5: modules[0].mode: Input should be 'off', 'monitor'")


def test_duplicate_keys_are_refused():
    assert errors_of(MINIMAL + "domain: other.net\n") == ["p.yaml:4: domain: key given twice"]


def test_yaml_syntax_error_has_a_line():
    (error,) = errors_of(MINIMAL + "modules: [\n")
    assert error.startswith("p.yaml:")
    assert "not valid YAML" in error


def test_duplicate_trunk_names():
    text = MINIMAL + textwrap.indent(
        "trunks:\n  - {name: a, target: 192.0.2.1:5060}\n  - {name: a, target: 192.0.2.2:5060}\n",
        "  ",
    )
    (error,) = errors_of(text)
    assert "trunk names must be unique, repeated: a" in error


def test_a_trunk_number_prefix_is_digits_after_an_optional_plus():
    text = MINIMAL + textwrap.indent(
        "trunks:\n  - {name: a, target: 192.0.2.1:5060, numbers: ['+44', '00 44']}\n", "  "
    )
    (error,) = errors_of(text)
    assert error == (
        "p.yaml:5: peers.trunks[0].numbers[1]: Value error, '00 44' is no number prefix: "
        "digits, optionally after one '+'"
    )


def test_policy_check_command_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "modules:\n  - name: flood\n    window_s: -1\n")
    run = [sys.executable, "-m", "sipshield.ops.cli", "policy", "check"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([*run, str(bad)], capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert f"{bad}:6: modules[0].window_s: Input should be greater than 0" in refused.stderr
    missing = subprocess.run([*run, str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "cannot read the policy" in missing.stderr
