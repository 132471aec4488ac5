"""The rule that tells growth that levels off from a leak.

A series (time, value) is cut into thirds.  The first is the warm-up, where
everything fills (caches, shared memory pages, Python's arenas, windows of
counts) and is not judged.  In each of the other two the growth is the
series' trend over that third: the Theil-Sen slope (the median of the slopes
between every pair of samples, which one spike or one dip does not move)
times the third's duration.

A series **grows** (a leak) when its growth over the last third is more than
``relative`` times its level there (the median of the last third) and more
than ``absolute`` (in its own unit: a few descriptors or keys up or down are
noise).  Otherwise it **levels off**.  The middle third's growth is reported
beside it: a leak grows about as much in both, while something still filling
up grows less in the last; a series that grows but less than half as much
as in the middle third is marked "slowing", and still fails, since it has
not levelled off within the run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Point = tuple[float, float]
# Each judged third needs at least this many samples for a slope to mean anything.
MIN_POINTS_PER_THIRD = 3


@dataclass(frozen=True)
class Tolerance:
    relative: float
    absolute: float


@dataclass(frozen=True)
class Verdict:
    start: float
    middle: float
    end: float
    growth_middle: float
    growth_last: float
    # The most the last third may grow.
    limit: float
    verdict: str  # "level", "grows", "slowing", "too short"

    @property
    def failed(self) -> bool:
        return self.verdict in ("grows", "slowing")

    def as_json(self) -> dict:
        return {**asdict(self), "failed": self.failed}


def theil_sen_slope(points: Sequence[Point]) -> float:
    """Median of the slopes between every pair of samples (0 for fewer than two)."""
    slopes = [
        (b[1] - a[1]) / (b[0] - a[0])
        for i, a in enumerate(points)
        for b in points[i + 1 :]
        if b[0] != a[0]
    ]
    return statistics.median(slopes) if slopes else 0.0


def growth(points: Sequence[Point]) -> float:
    """The trend's rise over the span of ``points``."""
    if len(points) < 2:
        return 0.0
    return theil_sen_slope(points) * (points[-1][0] - points[0][0])


def thirds(points: Sequence[Point]) -> tuple[list[Point], list[Point], list[Point]]:
    """Warm-up, middle and last thirds, by sample count (the samples are evenly spaced)."""
    n = len(points)
    first, second = n // 3, 2 * n // 3
    return list(points[:first]), list(points[first:second]), list(points[second:])


def judge(points: Sequence[Point], tolerance: Tolerance) -> Verdict:
    ordered = sorted(points)
    _, middle, last = thirds(ordered)
    if not ordered:
        return Verdict(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "too short")
    start, end = ordered[0][1], ordered[-1][1]
    midpoint = ordered[len(ordered) // 2][1]
    if min(len(middle), len(last)) < MIN_POINTS_PER_THIRD:
        return Verdict(start, midpoint, end, 0.0, 0.0, 0.0, "too short")
    grew_middle, grew_last = growth(middle), growth(last)
    level = statistics.median(value for _, value in last)
    limit = max(tolerance.relative * abs(level), tolerance.absolute)
    if grew_last <= limit:
        verdict = "level"
    elif grew_last < grew_middle / 2:
        verdict = "slowing"
    else:
        verdict = "grows"
    return Verdict(start, midpoint, end, grew_middle, grew_last, limit, verdict)
