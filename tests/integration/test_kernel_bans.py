"""Kernel enforcement: `sipshield nft-sync` mirrors IP bans into an nftables set.

The SBC runs inside a network namespace that the test creates, behind a veth
pair; the attacker and a legitimate client send from two addresses on the
host's end of the pair.  nft-sync runs inside the namespace too, so every
nftables change lands in the namespace's own ruleset: the host's tables are
never touched.

Kamailio writes one event for every request that the Python ban check drops,
so the events file counts exactly the banned packets that reached Kamailio.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sipshield.sipp import run_sipp
from tests.integration.lab_fixture import SIPSHIELD, RunningLab, lab_down

pytestmark = pytest.mark.integration

POLICY = """\
domain: sipshield.lab
peers:
  pbx: {address: 127.0.0.1:5090}
modules:
  - {name: bans}
"""
FLOOD = 200


@dataclass
class Namespace:
    name: str
    veth: str
    inner: str  # the SBC, inside the namespace
    attacker: str  # host end of the veth pair
    legit: str  # host end too, a second address

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*argv), capture_output=True, text=True, timeout=60, check=check
        )


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], capture_output=True, text=True, check=True, timeout=10)


def _unused_subnet() -> ipaddress.IPv4Network:
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout
    for _ in range(50):
        subnet = ipaddress.ip_network(
            f"10.231.{secrets.randbelow(256)}.{8 * secrets.randbelow(32)}/29"
        )
        if f"{subnet.network_address}" not in routes:
            return subnet
    raise AssertionError("no free /29 in 10.231.0.0/16")


@pytest.fixture(scope="module")
def netns() -> Iterator[Namespace]:
    suffix = secrets.token_hex(3)
    name = f"sipshield-test-{suffix}"
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if added.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here: {added.stderr.strip()}")
    subnet = _unused_subnet()
    hosts = [str(h) for h in subnet.hosts()]
    ns = Namespace(name, f"ssh{suffix}h", hosts[1], hosts[0], hosts[2])
    try:
        _ip("link", "add", ns.veth, "type", "veth", "peer", "name", f"ssh{suffix}n", "netns", name)
        _ip("addr", "add", f"{ns.attacker}/29", "dev", ns.veth)
        _ip("addr", "add", f"{ns.legit}/29", "dev", ns.veth)
        _ip("link", "set", ns.veth, "up")
        _ip("-n", name, "addr", "add", f"{ns.inner}/29", "dev", f"ssh{suffix}n")
        _ip("-n", name, "link", "set", f"ssh{suffix}n", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        # Deleting the namespace destroys its end of the pair, and with it the host's end.
        subprocess.run(["ip", "link", "del", ns.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def edge(netns: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """The lab inside the namespace, its SIP listeners on the namespace's veth address."""
    directory = tmp_path_factory.mktemp("kernel")
    (directory / "policy.yaml").write_text(POLICY)
    up = netns.run(
        *SIPSHIELD, "lab", "up", "--policy", str(directory / "policy.yaml"),
        "--dir", str(directory / "lab"), "--detach", "--sip-address", netns.inner,
        check=False,
    )  # fmt: skip
    lab_json = directory / "lab" / "lab.json"
    running = RunningLab(
        directory / "lab", json.loads(lab_json.read_text()) if lab_json.exists() else {}
    )
    try:
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        yield running
    finally:
        if running.info:
            lab_down(running)


class NftSync:
    """`sipshield nft-sync` running inside the namespace, stopped with SIGTERM."""

    def __init__(self, netns: Namespace, lab: RunningLab):
        self.netns = netns
        self.log = lab.directory / f"nft-sync-{secrets.token_hex(2)}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                netns.argv(*SIPSHIELD, "nft-sync", "--lab", str(lab.directory)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, after: int = 0, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output()[after:]:
                return
            assert self.proc.poll() is None, f"nft-sync exited:\n{self.output()}"
            time.sleep(0.05)
        raise AssertionError(f"nft-sync never logged {text!r}:\n{self.output()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


@contextlib.contextmanager
def nft_sync(netns: Namespace, lab: RunningLab) -> Iterator[NftSync]:
    sync = NftSync(netns, lab)
    try:
        sync.wait_for_log("synchronised")
        yield sync
    finally:
        code = sync.stop()
    assert code == 0, f"nft-sync exited {code}:\n{sync.output()}"


def cli_bans(netns: Namespace, lab: RunningLab, *argv: str) -> str:
    return netns.run(*SIPSHIELD, "bans", "--lab", str(lab.directory), *argv).stdout


def kernel_set(netns: Namespace, name: str = "banned4") -> dict[str, dict] | None:
    """Elements of one set, {address: {timeout, expires}}; None without the table."""
    listed = netns.run("nft", "-j", "list", "set", "inet", "sipshield", name, check=False)
    if listed.returncode != 0:
        return None
    elements: dict[str, dict] = {}
    for item in json.loads(listed.stdout)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                elements[str(elem["elem"]["val"])] = elem["elem"]
            else:
                elements[str(elem)] = {}
    return elements


def dropped_counter(netns: Namespace) -> int:
    listed = netns.run("nft", "-j", "list", "chain", "inet", "sipshield", "prerouting")
    packets = 0
    for item in json.loads(listed.stdout)["nftables"]:
        for statement in item.get("rule", {}).get("expr", []):
            if "counter" in statement:
                packets += statement["counter"]["packets"]
    return packets


def poll(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def ban_drops_seen_by_kamailio(lab: RunningLab, ip: str) -> int:
    return sum(
        1
        for event in lab.events()
        if event.get("module") == "bans" and str(event.get("src", "")).startswith(f"{ip}:")
    )


def flood(lab: RunningLab, source: str) -> None:
    """FLOOD OPTIONS from ``source``; no reply is expected (the source is banned)."""
    run_sipp("options_sweep", lab.sip_target(), local_ip=source, calls=FLOOD, rate=200,
             keys={"domain": lab.domain}, timeout_s=10)  # fmt: skip


def test_without_kernel_enforcement_the_flood_reaches_kamailio(netns: Namespace, edge: RunningLab):
    assert kernel_set(netns) is None  # no nft-sync, no table
    cli_bans(netns, edge, "add", netns.attacker, "--ttl", "600")
    try:
        # The legitimate client is served (and the neighbour entry exists before the flood).
        assert edge.options(source_ip=netns.legit) == 200
        before = ban_drops_seen_by_kamailio(edge, netns.attacker)
        flood(edge, netns.attacker)
        # The packets reached Kamailio, where the Python ban check dropped them.
        assert poll(
            lambda: ban_drops_seen_by_kamailio(edge, netns.attacker) - before >= FLOOD * 0.95
        )
    finally:
        cli_bans(netns, edge, "remove", netns.attacker)


def test_kernel_enforcement_drops_the_flood_before_kamailio(netns: Namespace, edge: RunningLab):
    # The ban exists before nft-sync starts: its first load must carry it.
    cli_bans(netns, edge, "add", netns.attacker, "--ttl", "600")
    try:
        with nft_sync(netns, edge) as sync:
            assert "synchronised 1 ip bans" in sync.output()
            element = kernel_set(netns)[netns.attacker]
            assert 590 <= element["timeout"] <= 600
            counted = dropped_counter(netns)
            before = ban_drops_seen_by_kamailio(edge, netns.attacker)
            flood(edge, netns.attacker)
            assert dropped_counter(netns) - counted >= FLOOD
            # The legitimate client beside it is served.
            assert [edge.options(source_ip=netns.legit) for _ in range(5)] == [200] * 5
            time.sleep(1)  # events of anything that slipped through would be written by now
            assert ban_drops_seen_by_kamailio(edge, netns.attacker) == before
        # A clean stop removes the table; the Python ban check still enforces the ban.
        assert kernel_set(netns) is None
        assert edge.options(source_ip=netns.attacker, timeout=0.5) is None
        assert ban_drops_seen_by_kamailio(edge, netns.attacker) > before
    finally:
        cli_bans(netns, edge, "remove", netns.attacker)


def test_kernel_set_follows_adds_removals_and_expiry(netns: Namespace, edge: RunningLab):
    with nft_sync(netns, edge) as sync:
        assert edge.options(source_ip=netns.attacker) == 200
        cli_bans(netns, edge, "add", netns.attacker, "--ttl", "600")
        assert poll(lambda: netns.attacker in kernel_set(netns), timeout=1)
        assert 590 <= kernel_set(netns)[netns.attacker]["timeout"] <= 600
        assert edge.options(source_ip=netns.attacker, timeout=0.5) is None

        cli_bans(netns, edge, "remove", netns.attacker)
        assert poll(lambda: netns.attacker not in kernel_set(netns), timeout=1)
        assert edge.options(source_ip=netns.attacker) == 200

        # Expiry needs no message: nft's own timeout removes the element.
        cli_bans(netns, edge, "add", netns.attacker, "--ttl", "3")
        assert poll(lambda: netns.attacker in kernel_set(netns), timeout=1)
        assert kernel_set(netns)[netns.attacker]["timeout"] <= 3
        assert poll(lambda: netns.attacker not in kernel_set(netns), timeout=6)
        assert edge.options(source_ip=netns.attacker) == 200

        # A user ban stays in SIP (the address's other users are welcome); IPv6 has its own set.
        cli_bans(netns, edge, "add", netns.legit, "--user", "carol", "--ttl", "600")
        cli_bans(netns, edge, "add", "2001:db8::7", "--ttl", "600")
        assert poll(lambda: "2001:db8::7" in kernel_set(netns, "banned6"), timeout=1)
        assert netns.legit not in kernel_set(netns)
        assert "banned 2001:db8::7 in the kernel" in sync.output()
        cli_bans(netns, edge, "remove", netns.legit, "--user", "carol")
        cli_bans(netns, edge, "remove", "2001:db8::7")
        assert poll(lambda: not kernel_set(netns, "banned6"), timeout=1)


def test_nft_sync_resynchronises_after_a_redis_restart(netns: Namespace, edge: RunningLab):
    with nft_sync(netns, edge) as sync:
        os.killpg(edge.info["pids"]["redis"], signal.SIGKILL)
        mark = len(sync.output())
        sync.wait_for_log("unreachable", after=mark)
        redis_proc = subprocess.Popen(
            netns.argv(*edge.info["commands"]["redis"]),
            cwd=edge.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # `lab down` must stop the new Redis too.
        edge.info["pids"]["redis"] = redis_proc.pid
        (edge.directory / "lab.json").write_text(json.dumps(edge.info))
        sync.wait_for_log("synchronised", after=mark, timeout=20)
        cli_bans(netns, edge, "add", "192.0.2.77", "--ttl", "600")
        try:
            assert poll(lambda: "192.0.2.77" in kernel_set(netns), timeout=1)
        finally:
            cli_bans(netns, edge, "remove", "192.0.2.77")
