"""Which security events ``sipshield events`` shows: by module, action, source or user.

Each option may be given several times (any of its values matches); different
options must all match.  A source is an address or a network (``192.0.2.0/24``)
and matches the event's ``src`` address, whatever its port.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from sipshield.core.event_formats import split_source

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address or network: {text!r}") from None


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (repeat an option for any of several values)")
    group.add_argument("--module", action="append", default=[], help="module that decided")
    group.add_argument("--action", action="append", default=[], help="reject, drop, ban, ...")
    group.add_argument(
        "--source", action="append", default=[], type=_network, help="sender address or network"
    )
    group.add_argument("--user", action="append", default=[], help="the request's From user")


@dataclass(frozen=True)
class EventFilter:
    modules: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    sources: tuple[Network, ...] = ()
    users: frozenset[str] = frozenset()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EventFilter:
        return cls(
            frozenset(args.module), frozenset(args.action), tuple(args.source), frozenset(args.user)
        )

    def matches(self, event: dict[str, Any]) -> bool:
        if self.modules and event.get("module") not in self.modules:
            return False
        if self.actions and event.get("action") not in self.actions:
            return False
        if self.users and event.get("user") not in self.users:
            return False
        return not self.sources or self._from_sources(str(event.get("src", "")))

    def _from_sources(self, src: str) -> bool:
        try:
            address = ipaddress.ip_address(split_source(src)[0])
        except ValueError:
            return False
        return any(address in network for network in self.sources)

    def keeps(self, line: str) -> bool:
        """Whether the event on this JSON line is shown (with a filter, a line that is
        not an event is not; without one, every line is)."""
        if not (self.modules or self.actions or self.sources or self.users):
            return True
        try:
            event = json.loads(line)
        except ValueError:
            return False
        return isinstance(event, dict) and self.matches(event)
