"""The decision store: where ban decisions live, as an interface.

CrowdSec's shape: detectors raise signals, the decision step stores a
decision (a ban with its scope, TTL and reason), and enforcement only reads
decisions.  Code that makes, enforces or operates bans is written against
:class:`DecisionStore`; :class:`sipshield.core.bans.BanStore` is the Redis
implementation, shared by every node and kept in each worker's memory for the
hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sipshield.core.bans import BanRecord


@runtime_checkable
class DecisionStore(Protocol):
    def banned(self, ip: str, user: str | Callable[[], str] = "") -> str | None:
        """The scope of a ban on this source (or user at it), or None; no round trip.

        ``user`` may be a function giving it, called only when it matters.
        """
        ...

    def add(
        self,
        ip: str,
        reason: str,
        module: str,
        user: str = "",
        ttl_s: int | None = None,
        account: str = "",
    ) -> BanRecord | None:
        """Ban a source (or a user from it, or an account from anywhere); None when the
        source may not be banned."""
        ...

    def remove(self, ip: str, user: str = "", account: str = "") -> bool: ...

    def list(self) -> list[BanRecord]: ...

    def count_hit(self, scope: str, count: int = 1) -> None:
        """Count blocked requests on a ban (for operators); may raise StateUnavailable."""
        ...

    def reset(self) -> None:
        """Forget what a fork must not share (connections, subscriptions)."""
        ...
