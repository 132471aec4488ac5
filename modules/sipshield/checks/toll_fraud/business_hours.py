"""Whether a moment is inside an account's business hours, in its own time zone."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def within(moment: float, zone: ZoneInfo, days: frozenset[str], start: time, end: time) -> bool:
    """True when the wall-clock time of ``moment`` (a Unix time) in ``zone`` is on one of
    ``days`` between ``start`` and ``end`` (end excluded; an end before the start spans
    midnight, the day being the one the hours began on)."""
    local = datetime.fromtimestamp(moment, zone)
    clock = local.time().replace(tzinfo=None)
    day = DAYS[local.weekday()]
    if start <= end:
        return day in days and start <= clock < end
    if clock >= start:
        return day in days
    return DAYS[(local.weekday() - 1) % 7] in days and clock < end
