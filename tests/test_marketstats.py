"""marketstats: the figures of a market's 1-minute candles, on inputs whose answer is known."""

from __future__ import annotations

import math
import random

import pytest

from engine import marketstats as ms

DAY = 86_400


def _walk(n: int, seed: int = 1, sigma: float = 0.001) -> list[ms.Candle]:
    """Candles of a Gaussian random walk, one price a minute (open = high = low = close)."""
    rng = random.Random(seed)
    p, out = 100.0, []
    for i in range(n):
        p *= math.exp(rng.gauss(0.0, sigma))
        out.append((i * 60.0, p, p, p, p))
    return out


def test_returns_are_close_to_close_logs_and_the_largest_move_is_simple() -> None:
    c = [(0.0, 100, 101, 99, 100), (60.0, 100, 111, 100, 110), (120.0, 110, 110, 98, 99)]
    assert ms.returns(c) == pytest.approx([math.log(1.1), math.log(0.9)])
    assert ms.largest_move(ms.returns(c)) == pytest.approx(1 / 0.9 - 1)  # the fall, as large a move as +11.1 %


def test_median_range_is_high_minus_low_over_open() -> None:
    c = [(0.0, 100, 101, 99, 100), (60.0, 200, 201, 200, 200), (120.0, 50, 53, 50, 51)]
    assert ms.median_range(c) == pytest.approx(0.02)


def test_median_daily_range_counts_whole_days_only() -> None:
    start = 19_000 * DAY + 23 * 3600  # an hour before midnight: a part-day first
    c = [(start + 60.0 * i, 100.0, 100.0, 100.0, 100.0) for i in range(60 + 1440 + 30)]
    whole = [i for i, k in enumerate(c) if 19_001 * DAY <= k[0] < 19_002 * DAY]
    c[whole[10]] = (c[whole[10]][0], 100.0, 104.0, 99.0, 100.0)
    c[5] = (c[5][0], 100.0, 150.0, 50.0, 100.0)  # in the part-day: ignored
    assert ms.median_daily_range(c) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        ms.median_daily_range(c[:100])


def test_a_random_walk_is_normal_uncorrelated_and_a_random_walk() -> None:
    r = ms.returns(_walk(40_000))
    assert abs(ms.excess_kurtosis(r)) < 0.15
    assert abs(ms.autocorrelation(r, 1)) < 3 * ms.autocorrelation_se(r, 1)
    assert ms.autocorrelation_se(r, 1) == pytest.approx(1 / math.sqrt(len(r)), rel=0.05)
    assert ms.variance_ratio(r, 60) == pytest.approx(1.0, abs=0.15)
    assert abs(ms.autocorrelation([abs(x) for x in r], 30)) < 0.03


def test_correlation_and_variance_ratio_see_reversion_and_persistence() -> None:
    rng = random.Random(2)
    ar, x = [], 0.0
    for _ in range(20_000):
        x = 0.5 * x + rng.gauss(0.0, 1.0)
        ar.append(x)
    assert ms.autocorrelation(ar, 1) == pytest.approx(0.5, abs=0.03)
    assert ms.autocorrelation(ar, 2) == pytest.approx(0.25, abs=0.03)
    assert ms.variance_ratio(ar, 60) > 2.5  # persistent moves add up faster than time
    bounce = [(-1) ** i * 0.001 + rng.gauss(0.0, 0.0001) for i in range(5000)]
    assert ms.autocorrelation(bounce, 1) < -0.9
    assert ms.variance_ratio(bounce, 60) < 0.05  # a bounce goes nowhere


def test_fat_tails_raise_the_kurtosis() -> None:
    rng = random.Random(3)
    r = [rng.gauss(0.0, 0.001) for _ in range(10_000)]
    r[5000] = 0.05  # one 50-sigma minute in 10,000: 50^4 / 10^4 / (1 + 50^2 / 10^4)^2 = 400
    assert ms.excess_kurtosis(r) == pytest.approx(400, rel=0.1)


def test_market_stats_gathers_every_figure() -> None:
    s = ms.market_stats(_walk(3 * 1440))
    assert set(ms.STAT_NAMES) == set(ms.LABELS) == set(ms.REAL_2020["BTCUSDT"]) == set(ms.REAL_2020["ETHUSDT"])
    assert s.return_std == pytest.approx(0.001, rel=0.05)
    assert s.median_range == 0.0  # one price a minute


def test_bands_are_a_quarter_either_way_the_tails_a_factor_of_two() -> None:
    assert ms.band("return_std", (0.0011, 0.0011)) == pytest.approx((0.000825, 0.001375))
    assert ms.band("variance_ratio_60", (0.85, 0.85)) == pytest.approx((0.6375, 1.0625))
    assert ms.band("excess_kurtosis", (335.0, 335.0)) == pytest.approx((167.5, 670.0))
    assert ms.band("largest_move", (0.075, 0.088)) == pytest.approx((0.0375, 0.176))
    # A tolerance tighter than the estimate's own noise is widened to 2 standard errors.
    assert ms.band("autocorr_1", (-0.01, -0.01)) == pytest.approx((-0.0125, -0.0075))
    assert ms.band("autocorr_1", (-0.01, -0.01), stderr=0.01) == pytest.approx((-0.03, 0.01))
    assert ms.band("return_std", (0.0011, 0.0011), stderr=1e-6) == pytest.approx((0.000825, 0.001375))
