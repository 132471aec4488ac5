"""Attack a lab from outside: a network namespace behind a veth pair (needs root).

On loopback every packet is local, and nftables exempts loopback, so kernel
enforcement (``sipshield nft-sync``) cannot be seen there.  Here the lab runs
inside a network namespace of its own, its SIP listeners on the namespace's
end of a veth pair; an attacker and a legitimate client send from two
addresses on the host's end.  ``nft-sync`` runs inside the namespace too, so
every nftables change lands in the namespace's ruleset and the host's tables
are never touched.  Deleting the namespace removes all of it.

Used by the kernel-ban tests, the kernel flood benchmark, and operators who
want to watch kernel enforcement work before deploying it::

    with namespace() as ns, lab_in(ns, Path("policy.yaml"), Path("lab")) as info:
        bans(ns, Path("lab"), "add", ns.attacker, "--ttl", "600")
        with nft_sync(ns, Path("lab")):
            ...  # flood ns.inner from ns.attacker; ns.legit stays welcome

The processes started inside the namespace share the host's pid namespace:
``/proc`` and ``sipshield lab down`` see them as usual.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipshield.lab.stack import LabError, down

SIPSHIELD = [sys.executable, "-m", "sipshield.ops.cli"]
# Test networks are drawn from here, one /29 each (hosts: attacker, inner, legit).
POOL = ipaddress.ip_network("10.231.0.0/16")


class NetnsError(RuntimeError):
    """A step in the namespace failed; the message says which and why."""


class NamespacesRefused(NetnsError):
    """This host does not let us create a network namespace (not root, a confined container)."""


@dataclass(frozen=True)
class Namespace:
    name: str
    veth: str  # host end of the pair
    peer: str  # the namespace's end
    inner: str  # the SBC's address, inside the namespace
    attacker: str  # on the host's end
    legit: str  # on the host's end too, a second address

    def argv(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*argv), capture_output=True, text=True, timeout=timeout, check=check
        )


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def unused_subnet() -> ipaddress.IPv4Network:
    """A random /29 of POOL that no route on this host mentions."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout
    for _ in range(50):
        subnet = ipaddress.ip_network(
            f"{POOL.network_address + 8 * secrets.randbelow(POOL.num_addresses // 8)}/29"
        )
        if f"{subnet.network_address}" not in routes:
            return subnet
    raise NetnsError(f"no free /29 in {POOL}")


@contextlib.contextmanager
def namespace(prefix: str = "sipshield") -> Iterator[Namespace]:
    """A fresh namespace and veth pair, both removed on exit.

    Raises NamespacesRefused, with ``ip``'s own words, when namespaces are
    refused (not root, a container without CAP_SYS_ADMIN).
    """
    suffix = secrets.token_hex(3)
    name = f"{prefix}-{suffix}"
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if added.returncode != 0:
        raise NamespacesRefused(
            f"network namespaces are not permitted here: {added.stderr.strip()}"
        )
    try:
        hosts = [str(h) for h in unused_subnet().hosts()]
        ns = Namespace(name, f"ssh{suffix}h", f"ssh{suffix}n", hosts[1], hosts[0], hosts[2])
        _ip("link", "add", ns.veth, "type", "veth", "peer", "name", ns.peer, "netns", name)
        _ip("addr", "add", f"{ns.attacker}/29", "dev", ns.veth)
        _ip("addr", "add", f"{ns.legit}/29", "dev", ns.veth)
        _ip("link", "set", ns.veth, "up")
        _ip("-n", name, "addr", "add", f"{ns.inner}/29", "dev", ns.peer)
        _ip("-n", name, "link", "set", ns.peer, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        # Deleting the namespace destroys its end of the pair, and with it the host's end.
        subprocess.run(["ip", "link", "del", f"ssh{suffix}h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.contextmanager
def lab_in(
    ns: Namespace, policy: Path, directory: Path, timeout: float = 120
) -> Iterator[dict[str, Any]]:
    """`sipshield lab up` inside the namespace, SIP on ``ns.inner``; yields lab.json.

    The lab is stopped on exit, even when it came up only in part.
    """
    up = ns.run(
        *SIPSHIELD, "lab", "up", "--policy", str(policy), "--dir", str(directory),
        "--detach", "--sip-address", ns.inner, check=False, timeout=timeout,
    )  # fmt: skip
    lab_json = directory / "lab.json"
    info = json.loads(lab_json.read_text()) if lab_json.exists() else {}
    try:
        if up.returncode != 0:
            raise NetnsError(f"lab up failed:\n{up.stdout}\n{up.stderr}")
        yield info
    finally:
        if lab_json.exists():
            with contextlib.suppress(LabError):
                down(directory)


class NftSync:
    """`sipshield nft-sync` for one lab, running inside the namespace until :meth:`stop`."""

    def __init__(self, ns: Namespace, lab_directory: Path):
        self.log = lab_directory / f"nft-sync-{secrets.token_hex(2)}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ns.argv(*SIPSHIELD, "nft-sync", "--lab", str(lab_directory)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, after: int = 0, timeout: float = 10) -> None:
        """Wait until the log shows ``text`` past offset ``after``; NetnsError if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output()[after:]:
                return
            if self.proc.poll() is not None:
                raise NetnsError(f"nft-sync exited:\n{self.output()}")
            time.sleep(0.05)
        raise NetnsError(f"nft-sync never logged {text!r}:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM (a clean stop removes the table), SIGKILL after 10 s; the exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


@contextlib.contextmanager
def nft_sync(ns: Namespace, lab_directory: Path) -> Iterator[NftSync]:
    """nft-sync, once it has loaded the bans; stopped on exit, which must be clean."""
    sync = NftSync(ns, lab_directory)
    try:
        sync.wait_for_log("synchronised")
        yield sync
    finally:
        code = sync.stop()
    if code != 0:
        raise NetnsError(f"nft-sync exited {code}:\n{sync.output()}")


def bans(ns: Namespace, lab_directory: Path, *argv: str) -> str:
    """`sipshield bans --lab DIR ARGV...` inside the namespace; its output."""
    return ns.run(*SIPSHIELD, "bans", "--lab", str(lab_directory), *argv).stdout


def kernel_set(ns: Namespace, name: str = "banned4") -> dict[str, dict] | None:
    """Elements of one of nft-sync's sets, {address: {timeout, expires}}; None without the table."""
    listed = ns.run("nft", "-j", "list", "set", "inet", "sipshield", name, check=False)
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


def kernel_drops(ns: Namespace) -> int:
    """Packets nft-sync's chain has dropped (the sum of its counters)."""
    listed = ns.run("nft", "-j", "list", "chain", "inet", "sipshield", "prerouting")
    packets = 0
    for item in json.loads(listed.stdout)["nftables"]:
        for statement in item.get("rule", {}).get("expr", []):
            if "counter" in statement:
                packets += statement["counter"]["packets"]
    return packets
