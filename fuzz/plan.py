"""How much the fuzz sends: the full run of `make fuzz`, and the quick one."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    total: int  # messages
    bodies: int  # of which body-focused (fuzz.body_mutations)
    # Messages between two health checks (processes, logs, events, an OPTIONS probe).
    batch: int = 2500
    # Senders at once.  UDP starts with udp_workers and grows up to
    # udp_workers_max while the SBC's socket keeps up; it backs off when the
    # socket overflowed (the kernel drops what Kamailio has not read yet).
    udp_workers: int = 64
    udp_workers_max: int = 192
    tcp_workers: int = 150
    # How long a sender waits for a final reply before sending its next
    # message: what gets none (dropped by a module, discarded by Kamailio's
    # parser) costs this much of one sender.  A UDP reply that comes later
    # still counts (late), until the batch ends; a TCP connection is closed.
    udp_wait_s: float = 0.1
    tcp_wait_s: float = 0.3
    udp_share: float = 0.6
    # Loopback source addresses the senders spread over: 127.0.1.1 onwards.
    sources: int = 250


FULL = Plan(total=200_000, bodies=50_000)
QUICK = Plan(total=4_000, bodies=1_000, batch=1000)


def with_count(plan: Plan, total: int, bodies_only: bool) -> Plan:
    """``plan`` resized to ``total`` messages, keeping its share of bodies (all, if asked)."""
    bodies = total if bodies_only else total * plan.bodies // plan.total
    return replace(plan, total=total, bodies=bodies)
