"""Counters every process of one node shares, as an interface.

Kamailio runs each request in one of several worker processes; a count that
must hold for the node (requests from a source in this window) lives in
memory they share.  Inside Kamailio that is an htable in shared memory
(:class:`sipshield.edge.htable_counters.HtableCounters`): an increment is
atomic and costs one KSR call, no round trip.  :class:`ProcessCounters` is the
same contract for a single process (tools, unit tests of the algorithms).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable


@runtime_checkable
class NodeCounters(Protocol):
    def incr(self, key: str) -> int:
        """Add one to ``key`` (created at 0) and return the new value, atomically."""
        ...

    def value(self, key: str) -> int:
        """The value of ``key``; 0 when it is not set."""
        ...

    def put(self, key: str, value: int) -> None: ...

    def remove(self, key: str) -> None: ...

    def items(self) -> Iterator[tuple[str, int]]:
        """Every key and value (a snapshot: the caller may change the counters meanwhile)."""
        ...


class ProcessCounters:
    """:class:`NodeCounters` in this process's memory."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def incr(self, key: str) -> int:
        value = self._values[key] = self._values.get(key, 0) + 1
        return value

    def value(self, key: str) -> int:
        return self._values.get(key, 0)

    def put(self, key: str, value: int) -> None:
        self._values[key] = value

    def remove(self, key: str) -> None:
        self._values.pop(key, None)

    def items(self) -> Iterator[tuple[str, int]]:
        return iter(list(self._values.items()))
