"""IP controls: allow and deny lists, and per-trunk source rules.

Meant to run first, because it is the cheapest check and needs no Redis:
- a source on the allow list is accepted without further checks and is never
  banned;
- a source on the deny list is dropped (or refused);
- a source inside a trunk's ``sources`` must use that trunk's transport;
- a request whose From domain is a trunk's domain must come from that trunk's
  sources (nobody else may pretend to be the carrier).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from sipshield.core.module import ModuleConfig, SecurityModule
from sipshield.core.policy_types import Network
from sipshield.core.verdict import CONTINUE, Accept, Drop, Outcome, Reject

if TYPE_CHECKING:
    from sipshield.core.site import Site, TrunkSite
    from sipshield.core.state import SharedState
    from sipshield.sip.message import SipRequest

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALLOWED, DENIED, UNPARSABLE = "allowed", "denied", "unparsable"
# Sources whose listing a worker remembers (the lists are fixed at start-up).
LISTINGS_REMEMBERED = 65536


class IpControlsConfig(ModuleConfig):
    name: Literal["ip_controls"] = "ip_controls"
    # Sources accepted without the other checks, and never banned.
    allow: list[Network] = Field(default_factory=list)
    # Sources refused outright.
    deny: list[Network] = Field(default_factory=list)
    # drop: no answer (a scanner learns nothing); reject: 403.
    deny_response: Literal["drop", "reject"] = "drop"


def _networks(values: list[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _contains(networks: tuple[IPNetwork, ...], address: ipaddress._BaseAddress) -> bool:
    return any(address in network for network in networks)


def _domain_of(from_header: str) -> str:
    uri = from_header.split("<", 1)[-1].split(">", 1)[0]
    host = uri.split("@", 1)[-1].split(";", 1)[0].split(":", 1)[0]
    return host.lower()


class IpControls(SecurityModule):
    name = "ip_controls"
    Config = IpControlsConfig
    response_setting = "deny_response"

    def __init__(self, config: IpControlsConfig) -> None:
        super().__init__(config)
        self.settings = config
        self.allow = _networks(config.allow)
        self.deny = _networks(config.deny)
        self.trunk_domains: dict[str, TrunkSite] = {}
        self.site: Site | None = None
        self._listings: dict[str, str] = {}

    def bind(self, site: Site) -> None:
        self.site = site
        for trunk in site.trunks:
            for domain in trunk.config.domains:
                self.trunk_domains[domain.lower()] = trunk

    def _listing(self, source: str) -> str:
        """Where ``source`` is listed: ALLOWED, DENIED, UNPARSABLE or "" (remembered)."""
        listing = self._listings.get(source)
        if listing is None:
            try:
                address = ipaddress.ip_address(source)
            except ValueError:
                listing = UNPARSABLE
            else:
                listing = (
                    ALLOWED
                    if _contains(self.allow, address)
                    else DENIED
                    if _contains(self.deny, address)
                    else ""
                )
            if len(self._listings) >= LISTINGS_REMEMBERED:
                self._listings.clear()  # a sweep of many sources must not grow it forever
            self._listings[source] = listing
        return listing

    def check(self, msg: SipRequest, state: SharedState) -> Outcome:
        source = msg.src_ip
        listing = self._listing(source)
        if listing == UNPARSABLE:
            return Drop(f"unparsable source address {source!r}")
        if listing == ALLOWED:
            return Accept(f"{source} is allowlisted")
        if listing == DENIED:
            return Reject(f"{source} is on the deny list", droppable=True)
        for trunk in self.site.trunks_of(msg.src_ip) if self.site else ():
            if msg.transport != trunk.config.transport:
                return Reject(
                    f"trunk {trunk.name} must use {trunk.config.transport}, "
                    f"{msg.src_ip} used {msg.transport}",
                    code=403,
                )
        if self.trunk_domains:
            claimed = self.trunk_domains.get(_domain_of(msg.header("from") or ""))
            if claimed and not _contains(claimed.networks, ipaddress.ip_address(source)):
                return Reject(
                    f"From claims trunk {claimed.name} but {msg.src_ip} is not one of its sources",
                    code=403,
                )
        return CONTINUE
