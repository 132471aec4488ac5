"""Every Kamailio that embeds sipshield's Python gets the same clean PATH."""

import shutil

from sipshield.edge.kamailio_env import CLEAN_PATH, kamailio_environment
from tests.conftest import REPO


def test_the_clean_path_leads_to_the_python_kamailio_embeds():
    assert shutil.which("python3", path=CLEAN_PATH) == "/usr/bin/python3"


def test_the_ansible_unit_gives_kamailio_the_clean_path():
    unit = (REPO / "ansible/roles/kamailio/templates/sipshield.conf.j2").read_text()
    assert f"Environment=PATH={CLEAN_PATH}\n" in unit


def test_the_environment_names_the_policy_and_where_sipshield_is():
    env = kamailio_environment("/etc/sipshield/policy.yaml", "/opt/venv/site-packages")
    assert env == {
        "PATH": CLEAN_PATH,
        "SIPSHIELD_POLICY": "/etc/sipshield/policy.yaml",
        "PYTHONPATH": "/opt/venv/site-packages",
    }
