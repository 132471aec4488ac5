"""A second SBC node beside a lab's own, and the lab PBX restarted to answer both.

Node A is the lab's SBC.  Node B is a second Kamailio started with the lab's
own command line, on its own ports and runtime directory, with the same Redis
and a copy of the policy that names it "node-b", so that its events say which
node acted.  The cluster tests (test_two_nodes*, test_topology_hiding_two_nodes,
test_toll_fraud_cluster, test_toll_fraud_runs) start theirs with
``two_node_lab``; ``restart_sbc`` and ``restart_pbx_with`` restart a lab's own
processes with other signals or defines.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from sipshield.lab.net import free_port
from sipshield.lab.sip_probe import send_request
from sipshield.lab.stack import group_members
from tests.integration.lab_fixture import PLUGINS, RunningLab, lab_with_policy

# Each node binds its own: the SIP listeners and the metrics listener.
LISTENERS = ("SIP_UDP", "SIP_TCP", "SIP_TLS", "METRICS")


@dataclass
class Node:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    port: int
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log.read_text()[-3000:]}"
            if self.options(timeout=0.3) == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + 10
            while group_members(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not group_members(self.proc.pid):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None

    def options(self, source_ip: str = "127.0.0.1", timeout: float = 1.0) -> int | None:
        return send_request(("127.0.0.1", self.port), timeout=timeout, source_ip=source_ip)


def python_path() -> str:
    """What the lab gives its SBC: this venv's packages and the test plugins."""
    return os.pathsep.join((sysconfig.get_paths()["purelib"], str(PLUGINS)))


def restart_sbc(lab: RunningLab, how: signal.Signals) -> Node:
    """Stop the lab's SBC with ``how`` and start it again with its own command."""
    env = {"SIPSHIELD_POLICY": lab.info["policy"], "PYTHONPATH": python_path()}
    node = Node("the SBC", lab.info["commands"]["sbc"], env, lab.directory,
                Path(lab.info["logs"]["sbc"]), lab.sip()[1])  # fmt: skip
    os.killpg(lab.info["pids"]["sbc"], how)
    while group_members(lab.info["pids"]["sbc"]):
        time.sleep(0.05)
    node.start()
    # `lab down` must stop the new process.
    lab.info["pids"]["sbc"] = node.proc.pid  # type: ignore[union-attr]
    (lab.directory / "lab.json").write_text(json.dumps(lab.info))
    return node


def node_b(
    lab: RunningLab, policy_changes: dict | None = None, defines: tuple[str, ...] = ()
) -> Node:
    """Node B: the lab's SBC command, with its own listeners, runtime directory and name.

    ``policy_changes`` go into node B's copy of the lab policy, ``defines`` are
    extra ``-A NAME=VALUE`` pairs for its Kamailio.
    """
    udp, tls, metrics = free_port(), free_port(), free_port()
    ports = {"SIP_UDP": f"udp:127.0.0.1:{udp}", "SIP_TCP": f"tcp:127.0.0.1:{udp}",
             "SIP_TLS": f"tls:127.0.0.1:{tls}",
             "METRICS": f"tcp:127.0.0.1:{metrics}"}  # fmt: skip
    argv = list(lab.info["commands"]["sbc"])
    for index, value in enumerate(argv):
        name = value.split("=", 1)[0]
        if name in LISTENERS:
            argv[index] = f"{name}={ports[name]}"
        elif argv[index - 1] == "-Y":
            argv[index] = str(lab.directory / "run-sbc-b")
    argv += [item for name in defines for item in ("-A", name)]
    (lab.directory / "run-sbc-b").mkdir(exist_ok=True)
    policy = yaml.safe_load(Path(lab.info["policy"]).read_text())
    policy["node"] = "node-b"
    policy["listeners"] = {"udp": f"127.0.0.1:{udp}", "tcp": f"127.0.0.1:{udp}",
                           "tls": f"127.0.0.1:{tls}"}  # fmt: skip
    policy |= policy_changes or {}
    policy_b = lab.directory / "policy-b.yaml"
    policy_b.write_text(yaml.safe_dump(policy, sort_keys=False))
    return Node(
        "node B",
        argv,
        {"SIPSHIELD_POLICY": str(policy_b), "PYTHONPATH": python_path()},
        lab.directory,
        lab.directory / "sbc-b.log",
        udp,
    )


def shared_address_node_b(lab: RunningLab) -> Node:
    """Node B answering for node A's address (the cluster's shared Record-Route).

    In production that is a VIP or a shared name; here node B aliases node A's
    address (define CLUSTER_ADDRESS) and record-routes with it (policy
    ``record_route_address``).  The same dialog-token key file as node A: the
    lab's policy names it by its absolute path.
    """
    cluster_address = lab.sip_target()
    return node_b(
        lab,
        {"record_route_address": cluster_address},
        (f"CLUSTER_ADDRESS={cluster_address}",),
    )


def _bound(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def restart_pbx_for(lab: RunningLab, sbc_ports: list[int]) -> None:
    """Restart the lab PBX so that it answers every SBC node (and still nobody else)."""
    nodes = "|".join(str(port) for port in sbc_ports)
    restart_pbx_with(lab, f'SBC_NODES="^127[.]0[.]0[.]1:({nodes})$"')


def restart_pbx_with(lab: RunningLab, *defines: str) -> None:
    """Restart the lab PBX with more ``-A`` defines (pbx.cfg's)."""
    pbx_host, _, port = lab.info["pbx"]["udp"].rpartition(":")
    pbx_port = int(port)
    argv = [*lab.info["commands"]["pbx"], *(item for d in defines for item in ("-A", d))]
    old = lab.info["pids"]["pbx"]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(old, signal.SIGKILL)
    while group_members(old) or _bound(pbx_host, pbx_port):
        time.sleep(0.05)
    with open(lab.info["logs"]["pbx"], "ab") as log:
        proc = subprocess.Popen(argv, cwd=lab.directory, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 20
    while not _bound(pbx_host, pbx_port):
        assert proc.poll() is None and time.monotonic() < deadline, lab.log("pbx")[-3000:]
        time.sleep(0.05)
    # `lab down` must stop the new PBX.
    lab.info["pids"]["pbx"] = proc.pid
    (lab.directory / "lab.json").write_text(json.dumps(lab.info))


@contextlib.contextmanager
def two_node_lab(
    directory: Path,
    policy_text: str,
    *,
    shared_address: bool = False,
    pbx_answers_both: bool = True,
    extra_pythonpath: Path | None = None,
) -> Iterator[tuple[RunningLab, Node]]:
    """A lab running ``policy_text`` and its node B, both stopped on the way out.

    ``shared_address``: node B answers for node A's address (shared_address_node_b).
    ``pbx_answers_both``: the lab PBX is restarted to answer node B as well as node A.
    """
    with lab_with_policy(directory, policy_text, extra_pythonpath) as lab:
        node = shared_address_node_b(lab) if shared_address else node_b(lab)
        try:
            node.start()
            if pbx_answers_both:
                restart_pbx_for(lab, [lab.sip()[1], node.port])
            yield lab, node
        finally:
            node.stop()
