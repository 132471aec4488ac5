"""Who is who at this edge: the PBX and the trunks, worked out once from the policy.

"Is this request from the PBX?" and "which trunk sent it?" used to be answered
in each module with its own table and its own ``host:port`` split.  The
:class:`Site` answers them once; the message view carries the answer
(``msg.from_pbx``, ``msg.trunk``), and a module's ``bind`` step receives the
site, not the whole policy.

It imports nothing of the policy at run time, so every module may import it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipshield.core.policy import Policy, Trunk

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_REMEMBERED_SOURCES = 4096
# A dialled number as a Request-URI user: digits, optionally after one "+"
# (the lab PBX's rule for what leaves it, kamailio-cfg/pbx.cfg).
DIALLED_NUMBER = re.compile(r"\+?[0-9]+")


def is_dialled_number(user: str) -> bool:
    return DIALLED_NUMBER.fullmatch(user) is not None


def split_host_port(address: str) -> tuple[str, int]:
    """``"host:port"`` (IPv6 in brackets allowed) as ``(host, port)``, brackets removed."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class TrunkSite:
    config: Trunk
    networks: tuple[IPNetwork, ...]  # where it may send from
    host: str  # where calls to it go (its target)
    port: int

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class Site:
    domain: str  # lower case
    pbx: tuple[str, int]
    pbx_transport: str
    pbx_inspect: bool  # the PBX's requests meet the request phase too
    trunks: tuple[TrunkSite, ...] = ()
    tls_min_version: str = "1.2"
    ca_list: Path | None = None
    node: str = ""  # this node's name (the policy's node)
    _trunks_by_source: dict[str, tuple[TrunkSite, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_policy(cls, policy: Policy) -> Site:
        pbx = policy.peers.pbx
        return cls(
            domain=policy.domain.lower(),
            pbx=split_host_port(pbx.address),
            pbx_transport=pbx.transport,
            pbx_inspect=pbx.inspect,
            trunks=tuple(
                TrunkSite(
                    trunk,
                    tuple(ipaddress.ip_network(source) for source in trunk.sources),
                    *split_host_port(trunk.target),
                )
                for trunk in policy.peers.trunks
            ),
            tls_min_version=policy.tls.min_version,
            ca_list=policy.tls.ca_list,
            node=policy.node,
        )

    @property
    def pbx_uri(self) -> str:
        host, port = self.pbx
        host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URI
        return f"sip:{host}:{port};transport={self.pbx_transport}"

    def is_pbx(self, ip: str, port: int) -> bool:
        return (ip, port) == self.pbx

    def trunk_of(self, ip: str) -> TrunkSite | None:
        """The first trunk listed whose source networks hold ``ip``, or None."""
        found = self.trunks_of(ip)
        return found[0] if found else None

    def trunks_of(self, ip: str) -> tuple[TrunkSite, ...]:
        """Every trunk whose source networks hold ``ip`` (trunks of one carrier may share)."""
        # Remembered per source: the same few send most requests, and a match
        # is an address parse plus a test per network.  Bounded, as sources
        # are the attacker's to choose.
        if ip in self._trunks_by_source:
            return self._trunks_by_source[ip]
        if len(self._trunks_by_source) >= MAX_REMEMBERED_SOURCES:
            self._trunks_by_source.clear()
        found = self._trunks_by_source[ip] = self._match(ip)
        return found

    def _match(self, ip: str) -> tuple[TrunkSite, ...]:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return ()
        return tuple(t for t in self.trunks if any(address in n for n in t.networks))

    def trunk_for_number(self, number: str) -> TrunkSite | None:
        """The trunk whose ``numbers`` prefix is the longest that starts ``number``
        (the first listed of equals), or None; None too when it is no number."""
        if not is_dialled_number(number):
            return None
        best: tuple[int, TrunkSite] | None = None
        for trunk in self.trunks:
            for prefix in trunk.config.numbers:
                if number.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), trunk)
        return best[1] if best else None

    def trunk_at(self, host: str) -> TrunkSite | None:
        """The first trunk listed that a request sent to ``host`` reaches: its target, or
        one of its sources."""
        sources = self.trunks_of(host)
        return next((t for t in self.trunks if host == t.host or t in sources), None)
