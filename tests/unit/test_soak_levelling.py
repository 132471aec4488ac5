"""The soak's rule (soak.levelling): growth that levels off passes, a leak fails.

Series here are what the soak samples: 90 points ten seconds apart (a
fifteen-minute run), judged on their middle and last thirds.
"""

import math

import pytest

from soak.levelling import Tolerance, growth, judge, theil_sen_slope, thirds

MEMORY = Tolerance(relative=0.02, absolute=1024)
STEP_S = 10.0
POINTS = 90


def series(value, points=POINTS):
    return [(i * STEP_S, float(value(i))) for i in range(points)]


def wobble(i):
    """Deterministic noise of +-300, as RSS shows between samples."""
    return 300 * math.sin(i * 1.7)


def test_theil_sen_slope_of_a_line_is_its_slope_and_ignores_one_spike():
    line = series(lambda i: 5 * i)
    assert theil_sen_slope(line) == pytest.approx(0.5)
    spiked = [(t, v + (100_000 if n == 40 else 0)) for n, (t, v) in enumerate(line)]
    assert theil_sen_slope(spiked) == pytest.approx(0.5)


def test_thirds_cut_by_sample_count_and_growth_spans_the_third():
    warm, middle, last = thirds(series(lambda i: i))
    assert (len(warm), len(middle), len(last)) == (30, 30, 30)
    # 30 samples span 29 intervals of 10 s; the value rises by 1 per sample.
    assert growth(last) == pytest.approx(29)


def test_a_flat_noisy_series_levels_off():
    verdict = judge(series(lambda i: 60_000 + wobble(i)), MEMORY)
    assert verdict.verdict == "level"
    assert not verdict.failed


def test_a_steady_leak_grows_and_fails():
    # 60 kB a sample: 1.7 MB over the last third, above 2% of ~66 MB.
    verdict = judge(series(lambda i: 60_000 + 60 * i + wobble(i)), MEMORY)
    assert verdict.verdict == "grows"
    assert verdict.failed
    assert verdict.growth_last == pytest.approx(verdict.growth_middle, rel=0.1)


def test_growth_that_ends_in_the_middle_third_levels_off():
    # Caches filling: up 20 MB until the middle of the run, flat afterwards.
    verdict = judge(series(lambda i: 40_000 + 20_000 * min(i, 45) / 45 + wobble(i)), MEMORY)
    assert verdict.growth_middle > 5_000
    assert verdict.verdict == "level"


def test_growth_that_slows_but_goes_on_still_fails():
    # Filling towards a bound far beyond the run: the last third grows less than
    # half as much as the middle one, yet more than the tolerance.
    verdict = judge(series(lambda i: 40_000 + 20_000 * (1 - math.exp(-i / 35))), MEMORY)
    assert 0 < verdict.growth_last < verdict.growth_middle / 2
    assert verdict.verdict == "slowing"
    assert verdict.failed


def test_growth_under_the_absolute_floor_is_noise():
    # Three descriptors more over a third of 30: 10% of the level, but under 5 descriptors.
    descriptors = Tolerance(relative=0.05, absolute=5)
    verdict = judge(series(lambda i: 30 + (3 if i > 75 else 0)), descriptors)
    assert verdict.verdict == "level"


def test_a_shrinking_series_levels_off():
    verdict = judge(series(lambda i: 100_000 - 100 * i), MEMORY)
    assert verdict.growth_last < 0
    assert verdict.verdict == "level"


def test_too_few_samples_are_not_judged():
    verdict = judge(series(lambda i: 1000 * i, points=6), MEMORY)
    assert verdict.verdict == "too short"
    assert not verdict.failed


def test_start_middle_and_end_are_the_samples_themselves():
    verdict = judge(series(lambda i: i), MEMORY)
    assert (verdict.start, verdict.middle, verdict.end) == (0, 45, 89)
