"""How an rtpengine instance is addressed: an (IP literal, port) pair."""

from __future__ import annotations

import ipaddress

Address = tuple[str, int]


def check_address(address: Address) -> Address:
    """Validate an instance address; hostnames are refused on purpose.

    Replies are matched by source address on a connected socket, and resolving names in a
    Kamailio worker would add a blocking DNS lookup to the signalling path.
    """
    host, port = address
    ipaddress.ip_address(host)  # raises ValueError for anything but an IP literal
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return host, port


def format_address(address: Address) -> str:
    host, port = address
    # IPv6 literals need brackets or the port becomes ambiguous in log lines.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
