"""Median and spread of repeated measurements, and ratios that respect the spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread | None:
        """None when there is nothing to summarise (every run failed)."""
        values = list(values)
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))

    def overlaps(self, other: Spread) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self, digits: int = 0) -> str:
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def ratio(a: Spread | None, b: Spread | None) -> dict[str, float] | None:
    """a / b: the medians' ratio and the widest the spreads allow; None where undefined."""
    if a is None or b is None or b.low <= 0:
        return None
    return {"median": a.median / b.median, "low": a.low / b.high, "high": a.high / b.low}


def ratio_text(a: Spread | None, b: Spread | None) -> str:
    """The ratio of the medians and its range, or "no difference" when the spreads overlap."""
    if a is None or b is None:
        return "n/a"
    if a.overlaps(b):
        return "no difference"
    r = ratio(a, b)
    if r is None:
        return "n/a"
    return f"{r['median']:.2f}x ({r['low']:.2f}-{r['high']:.2f})"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
