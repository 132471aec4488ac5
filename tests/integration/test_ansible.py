"""The Ansible roles: idempotent on this machine, and what they render is accepted.

Rendering uses the example inventory with every destination path moved into a
temporary directory and service management off, so the host's /etc is never
touched.  The rendered files are then given to the programs that read them:
Kamailio (the SBC config with its local defines, and tls.cfg with a throwaway
certificate), `sipshield policy check`, rtpengine and Redis, each started
briefly on free loopback ports.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from sipshield.lab.net import free_port
from sipshield.lab.stack import group_members
from sipshield.rtpengine import NgError, RtpengineClient
from tests.conftest import REPO

pytestmark = pytest.mark.integration

ANSIBLE = REPO / "ansible"
TOOLS_BIN = REPO / ".tools" / "bin"
SIPSHIELD = REPO / ".venv" / "bin" / "sipshield"
# The example inventory's SBC and Redis hosts (they share nothing on disk).
SBC_HOST = "sbc1.example.net"
REDIS_HOST = "redis1.example.net"
EXAMPLE_REDIS_PASSWORD = "change-me"


def ansible_playbook(*args: str) -> subprocess.CompletedProcess[str]:
    if not (TOOLS_BIN / "ansible-playbook").exists():
        pytest.fail("ansible-playbook is missing from .tools; run `make setup`")
    env = {**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}"}
    env["ANSIBLE_NOCOLOR"] = "1"
    return subprocess.run(
        [str(TOOLS_BIN / "ansible-playbook"), *args, str(ANSIBLE / "site.yml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def recap_changed(output: str) -> dict[str, int]:
    return {
        host: int(changed)
        for host, changed in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)
    }


def test_make_setup_playbook_is_idempotent_on_this_machine() -> None:
    # What `make setup` runs: packages and .venv only, services off.
    command = ("-i", str(ANSIBLE / "inventories" / "local"), "-c", "local")
    for attempt in ("first", "second"):
        run = ansible_playbook(*command)
        assert run.returncode == 0, f"{attempt} run failed:\n{run.stdout[-4000:]}{run.stderr}"
    changed = recap_changed(run.stdout)
    assert changed == {"localhost": 0}, f"second run changed something:\n{run.stdout[-4000:]}"


# --- rendering from the example inventory -----------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True)
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "1", "-subj", f"/CN={SBC_HOST}"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Apply the roles to the example inventory's SBC and Redis hosts, into a temp dir."""
    root = tmp_path_factory.mktemp("rendered")
    cert, key = make_certificate(root / "tls")
    overrides = {
        "ansible_become": False,
        "redis_manage_service": False,
        "rtpengine_manage_service": False,
        "kamailio_manage_service": False,
        "sipshield_manage_services": False,
        "redis_conf_path": f"{root}/redis/redis.conf",
        "redis_data_dir": f"{root}/redis/data",
        "redis_sentinel": True,
        "redis_sentinel_conf_path": f"{root}/redis/sentinel.conf",
        "rtpengine_conf_path": f"{root}/rtpengine/rtpengine.conf",
        "rtpengine_environment_path": f"{root}/rtpengine/rtpengine-daemon",
        "kamailio_config_dir": f"{root}/kamailio",
        "kamailio_kemi_entry_path": f"{root}/share/sipshield_kemi.py",
        "kamailio_tls_certificate": str(cert),
        "kamailio_tls_private_key": str(key),
        "kamailio_tls_ca_list": str(cert),
        "sipshield_policy_path": f"{root}/sipshield/policy.yaml",
        "sipshield_key_dir": f"{root}/sipshield/keys",
        "sipshield_events_dir": f"{root}/log",
        # The policy is checked with the sipshield that `make setup` installed.
        "sipshield_venv": str(REPO / ".venv"),
    }
    for parent in ("redis", "rtpengine"):
        (root / parent).mkdir()
    extra_vars = root / "overrides.json"
    extra_vars.write_text(json.dumps(overrides))
    run = ansible_playbook(
        "-i",
        str(ANSIBLE / "inventories" / "example"),
        "-c",
        "local",
        "--limit",
        f"{SBC_HOST},{REDIS_HOST}",
        # Packages and the venv are what the idempotence test covers.
        "--skip-tags",
        "packages,venv",
        "-e",
        f"@{extra_vars}",
    )
    assert run.returncode == 0, f"rendering failed:\n{run.stdout[-6000:]}{run.stderr}"
    return root


def test_kamailio_accepts_the_rendered_configuration(rendered: Path) -> None:
    cfg_dir = rendered / "kamailio"
    local = (cfg_dir / "sipshield-local.cfg").read_text()
    assert "#!define SIP_TLS tls:192.0.2.11:5061" in local
    assert f'#!define TLS_CFG "{cfg_dir / "tls.cfg"}"' in local
    assert (cfg_dir / "kamailio.cfg").read_bytes() == (
        REPO / "kamailio-cfg" / "kamailio.cfg"
    ).read_bytes()
    check = subprocess.run(
        ["kamailio", "-c", "-f", str(cfg_dir / "kamailio.cfg")], capture_output=True, text=True
    )
    output = check.stdout + check.stderr
    assert check.returncode == 0, output
    # The listeners come from the rendered defines, not from kamailio.cfg's defaults.
    assert "udp: 192.0.2.11 [192.0.2.11]:5060" in output, output
    assert (rendered / "share" / "sipshield_kemi.py").is_file()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start a daemon in its own process group; every one is killed at teardown."""
    started: list[subprocess.Popen] = []

    def run(argv: list[str], log: str) -> subprocess.Popen:
        with open(tmp_path / log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
            )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        for pid in group_members(proc.pid):
            os.kill(pid, 9)
        proc.wait(timeout=10)


def wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}:\n{log.read_text()}"
        try:
            if check():
                return
        except (OSError, redis.RedisError):
            pass  # not answering yet
        time.sleep(0.1)
    pytest.fail(f"{what} did not answer:\n{log.read_text()}")


def test_kamailio_serves_tls_with_the_rendered_tls_cfg(
    rendered: Path, start: Callable[..., subprocess.Popen], tmp_path: Path
) -> None:
    # `kamailio -c` does not load tls.cfg, so a minimal Kamailio with the tls
    # module and the rendered tls.cfg must serve a handshake.
    port = free_port()
    cfg = tmp_path / "tls-only.cfg"
    cfg.write_text(
        "#!KAMAILIO\n"
        "children=1\ntcp_children=1\nauto_aliases=no\n"
        f"listen=tls:127.0.0.1:{port}\nenable_tls=yes\n"
        'loadmodule "tls.so"\n'
        f'modparam("tls", "config", "{rendered / "kamailio" / "tls.cfg"}")\n'
        "request_route { drop; }\n"
    )
    (tmp_path / "run").mkdir()
    argv = [
        "kamailio",
        "-f",
        str(cfg),
        "-DD",
        "-E",
        "-Y",
        str(tmp_path / "run"),
        "-w",
        str(tmp_path),
    ]
    proc = start(argv, "kamailio.log")
    context = ssl.create_default_context(cafile=rendered / "tls" / "server.pem")
    context.check_hostname = False

    def handshake() -> bool:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            context.wrap_socket(raw) as tls,
        ):
            return tls.version() in ("TLSv1.2", "TLSv1.3")

    wait_for("kamailio (TLS)", handshake, proc, tmp_path / "kamailio.log")


def test_rendered_policy_passes_policy_check(rendered: Path) -> None:
    policy = rendered / "sipshield" / "policy.yaml"
    check = subprocess.run([str(SIPSHIELD), "policy", "check", str(policy)], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    assert "domain: voice.example.net" in policy.read_text()
    key = rendered / "sipshield" / "keys" / "rr-token.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_rtpengine_runs_with_the_rendered_config(
    rendered: Path, start: Callable[..., subprocess.Popen], tmp_path: Path
) -> None:
    conf = rendered / "rtpengine" / "rtpengine.conf"
    text = conf.read_text()
    assert "table = -1" in text  # userspace forwarding by default
    assert "interface = internal/10.0.0.11;external/192.0.2.11" in text
    # Command-line options win over the file: the example's addresses are not
    # on this machine, everything else (values rtpengine refuses included) is
    # read from the rendered file.
    ng = free_port()
    proc = start(
        [
            "rtpengine",
            f"--config-file={conf}",
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{ng}",
            "--port-min=41000",
            "--port-max=41099",
            "--foreground",
            "--log-stderr",
            f"--pidfile={tmp_path / 'rtpengine.pid'}",
        ],
        "rtpengine.log",
    )

    def pong() -> bool:
        client = RtpengineClient([("127.0.0.1", ng)], timeout=0.3, retries=0)
        try:
            client.ping()
        except NgError:
            return False
        finally:
            client.close()
        return True

    wait_for("rtpengine", pong, proc, tmp_path / "rtpengine.log")


def test_redis_runs_with_the_rendered_config(
    rendered: Path, start: Callable[..., subprocess.Popen], tmp_path: Path
) -> None:
    conf = rendered / "redis" / "redis.conf"
    assert f"requirepass {EXAMPLE_REDIS_PASSWORD}" in conf.read_text()
    port = free_port()
    proc = start(
        ["redis-server", str(conf), "--bind", "127.0.0.1", "--port", str(port)]
        + ["--dir", str(tmp_path), "--logfile", "", "--pidfile", str(tmp_path / "redis.pid")],
        "redis.log",
    )
    client = redis.Redis(port=port, password=EXAMPLE_REDIS_PASSWORD, socket_timeout=0.5)
    wait_for("redis", client.ping, proc, tmp_path / "redis.log")
    assert client.config_get("appendonly") == {"appendonly": "yes"}


def test_redis_sentinel_runs_with_the_rendered_config(
    rendered: Path, start: Callable[..., subprocess.Popen], tmp_path: Path
) -> None:
    # Sentinel rewrites its config file, so it gets a copy.
    conf = tmp_path / "sentinel.conf"
    conf.write_text((rendered / "redis" / "sentinel.conf").read_text())
    assert "sentinel monitor sipshield 127.0.0.1 6379 2" in conf.read_text()
    port = free_port()
    proc = start(
        ["redis-server", str(conf), "--sentinel", "--bind", "127.0.0.1", "--port", str(port)]
        + ["--dir", str(tmp_path), "--logfile", "", "--pidfile", str(tmp_path / "sentinel.pid")],
        "sentinel.log",
    )
    client = redis.Redis(port=port, socket_timeout=0.5)
    wait_for("redis sentinel", client.ping, proc, tmp_path / "sentinel.log")
    assert client.execute_command("SENTINEL", "MASTER", "sipshield")
