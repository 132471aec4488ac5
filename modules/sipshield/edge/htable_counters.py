"""Node counters in a Kamailio htable: shared memory every process of the node sees.

The table is declared by the configuration (kamailio.cfg and the drop-in):
``modparam("htable", "htable", "sipshield=>size=14;autoexpire=7200;initval=0;")``.
``initval=0`` makes ``sht_inc`` create a missing item at 1 atomically (without
it, the increment of a missing item fails) and ``sht_get`` return 0 for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# The htable the configuration declares for sipshield.
TABLE = "sipshield"
# sht_inc's answer when the item cannot be incremented (htable's -255).
_FAILED = -255


def table_declared(ksr: Any, table: str = TABLE) -> bool:
    """Whether the configuration loads htable and declares ``table`` (at mod_init)."""
    htable = getattr(ksr, "htable", None)
    if htable is None or htable.sht_iterator_start("sipshield-probe", table) < 0:
        return False
    htable.sht_iterator_end("sipshield-probe")
    return True


class HtableCounters:
    """:class:`sipshield.core.node_counters.NodeCounters` on ``KSR.htable``."""

    def __init__(self, ksr: Any, table: str = TABLE) -> None:
        self._htable = ksr.htable
        self._pv = ksr.pv
        self.table = table

    def incr(self, key: str) -> int:
        value = self._htable.sht_inc(self.table, key)
        if value == _FAILED:
            raise RuntimeError(
                f"htable {self.table!r} cannot count {key!r}: is it declared with initval=0?"
            )
        return int(value)

    def value(self, key: str) -> int:
        return int(self._htable.sht_get(self.table, key) or 0)

    def put(self, key: str, value: int) -> None:
        self._htable.sht_seti(self.table, key, value)

    def remove(self, key: str) -> None:
        self._htable.sht_rm(self.table, key)

    def items(self) -> Iterator[tuple[str, int]]:
        # Read everything before anyone writes: the iterator holds a slot's
        # lock while it stands on it.
        iterator, htable, pv = "sipshield", self._htable, self._pv
        found: list[tuple[str, int]] = []
        if htable.sht_iterator_start(iterator, self.table) < 0:
            raise RuntimeError(f"htable {self.table!r} cannot be iterated")
        try:
            while htable.sht_iterator_next(iterator) > 0:
                value = pv.get(f"$shtitval({iterator})")
                if isinstance(value, int):
                    found.append((str(pv.get(f"$shtitkey({iterator})")), value))
        finally:
            htable.sht_iterator_end(iterator)
        return iter(found)
