"""Statistics of a market's 1-minute candles: what makes a market look real.

Pure functions over a list of contiguous 1-minute candles, each a tuple
(open_time, open, high, low, close) with open_time in epoch seconds. The simulated
market is calibrated to these figures measured on real BTC and ETH candles
(issue 14), and both its test and bench/bench_market.py compute them here, so the
two always agree on what a figure means.

Returns are close-to-close log returns of consecutive candles; correlations are
the usual sample autocorrelations (deviations from the mean, over the sample's
variance).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields

Candle = tuple[float, float, float, float, float]  # open_time, open, high, low, close

DAY_SEC = 86_400
MINUTES_PER_DAY = 1440


def returns(candles: Sequence[Candle]) -> list[float]:
    """Close-to-close log returns of consecutive candles."""
    return [math.log(c[4] / p[4]) for p, c in zip(candles, candles[1:])]


def return_std(rets: Sequence[float]) -> float:
    """Standard deviation of the returns (population)."""
    return statistics.pstdev(rets)


def median_range(candles: Sequence[Candle]) -> float:
    """Median of (high - low) / open over the candles."""
    return statistics.median((c[2] - c[3]) / c[1] for c in candles)


def median_daily_range(candles: Sequence[Candle]) -> float:
    """Median of (high - low) / open of each whole UTC day the candles cover.

    A day counts only with all 1440 of its minutes, so the part-days at both ends
    do not pull the median down."""
    days: dict[int, list[float]] = {}  # day -> [open, high, low, minutes]
    for t, o, h, lo, _ in candles:
        d = days.get(int(t // DAY_SEC))
        if d is None:
            days[int(t // DAY_SEC)] = [o, h, lo, 1]
        else:
            d[1] = max(d[1], h)
            d[2] = min(d[2], lo)
            d[3] += 1
    full = [(h - lo) / o for o, h, lo, n in days.values() if n == MINUTES_PER_DAY]
    if not full:
        raise ValueError("no whole UTC day in the candles")
    return statistics.median(full)


def excess_kurtosis(rets: Sequence[float]) -> float:
    """Fourth standardised moment minus 3 (0 for a normal distribution)."""
    mean = math.fsum(rets) / len(rets)
    m2 = math.fsum((r - mean) ** 2 for r in rets) / len(rets)
    m4 = math.fsum((r - mean) ** 4 for r in rets) / len(rets)
    return m4 / (m2 * m2) - 3.0


def largest_move(rets: Sequence[float]) -> float:
    """The largest 1-minute move as a simple return, either way (0.05 is 5 %)."""
    return math.expm1(max(abs(r) for r in rets))


def autocorrelation(xs: Sequence[float], lag: int) -> float:
    """Sample autocorrelation of `xs` at `lag`."""
    if not 0 < lag < len(xs):
        raise ValueError(f"lag {lag} outside 1..{len(xs) - 1}")
    mean = math.fsum(xs) / len(xs)
    d = [x - mean for x in xs]
    var = math.fsum(x * x for x in d)
    return math.fsum(a * b for a, b in zip(d, d[lag:])) / var


def autocorrelation_se(xs: Sequence[float], lag: int) -> float:
    """Standard error of autocorrelation(xs, lag) that holds when the variance changes
    over time (as a market's does), under no true autocorrelation:
    sqrt(sum(d_t^2 d_{t-lag}^2)) / sum(d_t^2), d the deviations from the mean."""
    mean = math.fsum(xs) / len(xs)
    d = [x - mean for x in xs]
    var = math.fsum(x * x for x in d)
    return math.sqrt(math.fsum((a * b) ** 2 for a, b in zip(d, d[lag:]))) / var


def variance_ratio(rets: Sequence[float], q: int) -> float:
    """Variance of overlapping q-period returns over q times the 1-period variance.

    1 for a random walk; below 1 when moves partly revert within q periods."""
    n = len(rets)
    if not 1 < q < n:
        raise ValueError(f"q {q} outside 2..{n - 1}")
    mean = math.fsum(rets) / n
    var1 = math.fsum((r - mean) ** 2 for r in rets) / n
    cum = [0.0]
    for r in rets:
        cum.append(cum[-1] + r)
    varq = math.fsum((cum[i + q] - cum[i] - q * mean) ** 2 for i in range(n - q + 1)) / (n - q + 1)
    return varq / (q * var1)


@dataclass(frozen=True)
class MarketStats:
    """The figures issue 14 compares; fractions, not percent (0.0011 is 0.11 %)."""

    return_std: float
    median_range: float
    median_daily_range: float
    excess_kurtosis: float
    largest_move: float
    autocorr_1: float
    variance_ratio_60: float
    abs_autocorr_30m: float
    abs_autocorr_1d: float


def market_stats(candles: Sequence[Candle]) -> MarketStats:
    """Every figure of MarketStats over contiguous 1-minute candles (a few days at least)."""
    rets = returns(candles)
    absolute = [abs(r) for r in rets]
    return MarketStats(
        return_std=return_std(rets),
        median_range=median_range(candles),
        median_daily_range=median_daily_range(candles),
        excess_kurtosis=excess_kurtosis(rets),
        largest_move=largest_move(rets),
        autocorr_1=autocorrelation(rets, 1),
        variance_ratio_60=variance_ratio(rets, 60),
        abs_autocorr_30m=autocorrelation(absolute, 30),
        abs_autocorr_1d=autocorrelation(absolute, MINUTES_PER_DAY),
    )


STAT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(MarketStats))

LABELS: dict[str, str] = {
    "return_std": "1-min return standard deviation",
    "median_range": "median 1-min range (high-low)/open",
    "median_daily_range": "median daily range",
    "excess_kurtosis": "excess kurtosis of 1-min returns",
    "largest_move": "largest 1-min move",
    "autocorr_1": "autocorrelation of 1-min returns, lag 1",
    "variance_ratio_60": "variance ratio, 60 min",
    "abs_autocorr_30m": "autocorrelation of |return|, lag 30 min",
    "abs_autocorr_1d": "autocorrelation of |return|, lag 1 day",
}
PERCENT = frozenset({"return_std", "median_range", "median_daily_range", "largest_move"})  # shown in %

# The real figures the simulated market is calibrated to: 1-minute spot candles of
# 2020 (a volatile year), from issue 14, as (low, high); one figure is low == high.
# The issue gives the largest 1-minute move once, 7.5-8.8 %, under BTC; ETH is held to it too.
REAL_2020: dict[str, dict[str, tuple[float, float]]] = {
    "BTCUSDT": {
        "return_std": (0.0011, 0.0011),
        "median_range": (0.00077, 0.00077),
        "median_daily_range": (0.040, 0.040),
        "excess_kurtosis": (335.0, 335.0),
        "largest_move": (0.075, 0.088),
        "autocorr_1": (-0.01, -0.01),
        "variance_ratio_60": (0.85, 0.85),
        "abs_autocorr_30m": (0.29, 0.29),
        "abs_autocorr_1d": (0.16, 0.16),
    },
    "ETHUSDT": {
        "return_std": (0.0014, 0.0014),
        "median_range": (0.0010, 0.0010),
        "median_daily_range": (0.055, 0.055),
        "excess_kurtosis": (227.0, 227.0),
        "largest_move": (0.075, 0.088),
        "autocorr_1": (-0.01, -0.01),
        "variance_ratio_60": (0.86, 0.86),
        "abs_autocorr_30m": (0.27, 0.27),
        "abs_autocorr_1d": (0.13, 0.13),
    },
}
# Tails are compared within a factor of 2, everything else within +-25 % (issue 14).
WITHIN_FACTOR_2 = frozenset({"excess_kurtosis", "largest_move"})


def band(name: str, real: tuple[float, float], stderr: float = 0.0) -> tuple[float, float]:
    """The interval a simulated figure must fall in to count as true to `real`.

    Within a factor of 2 for the tails, within 25 % of the figure's size for the rest;
    a tolerance narrower than twice the estimate's own standard error `stderr` is
    widened to that, since no market, real or simulated, can be held to a figure
    more tightly than its sample measures it. Over 30 days of minutes that is the
    case of the lag-1 autocorrelation only: 25 % of -0.01 is 0.0025, its standard
    error ~0.01."""
    lo, hi = real
    if name in WITHIN_FACTOR_2:
        return lo / 2, hi * 2
    tol = max(0.25 * max(abs(lo), abs(hi)), 2 * stderr)
    return lo - tol, hi + tol
