"""Indicators over klines: pure functions, no I/O, no state."""

from __future__ import annotations

from collections.abc import Sequence

from engine.models import Kline


def ema(values: Sequence[float], period: int) -> list[float]:
    """Exponential moving average, seeded with the first value; same length as values."""
    if period < 1:
        raise ValueError("period must be >= 1")
    if not values:
        return []
    k = 2.0 / (period + 1)
    out = [float(values[0])]
    for v in values[1:]:
        out.append(out[-1] + k * (v - out[-1]))
    return out


def true_ranges(klines: Sequence[Kline]) -> list[float]:
    out = []
    prev_close = None
    for k in klines:
        tr = k.high - k.low
        if prev_close is not None:
            tr = max(tr, abs(k.high - prev_close), abs(k.low - prev_close))
        out.append(tr)
        prev_close = k.close
    return out


def atr(klines: Sequence[Kline], period: int = 14) -> float:
    """Wilder's average true range of the last candles; 0 with no candles."""
    trs = true_ranges(klines)
    if not trs:
        return 0.0
    value = sum(trs[:period]) / min(period, len(trs))
    for tr in trs[period:]:
        value = (value * (period - 1) + tr) / period
    return value


def rsi(closes: Sequence[float], period: int = 14) -> float:
    """Wilder's RSI of the closes; 50 when there is not enough data or no movement."""
    if len(closes) < 2:
        return 50.0
    gains = losses = 0.0
    deltas = [b - a for a, b in zip(closes, closes[1:])]
    first = deltas[:period]
    gains = sum(d for d in first if d > 0) / len(first)
    losses = sum(-d for d in first if d < 0) / len(first)
    for d in deltas[period:]:
        gains = (gains * (period - 1) + max(d, 0.0)) / period
        losses = (losses * (period - 1) + max(-d, 0.0)) / period
    if losses == 0:
        return 100.0 if gains > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + gains / losses)


def pct_return(closes: Sequence[float], bars: int) -> float:
    """Return over the last `bars` bars, in percent; 0 when there is not enough data."""
    if len(closes) <= bars or bars < 1 or closes[-1 - bars] == 0:
        return 0.0
    return (closes[-1] / closes[-1 - bars] - 1.0) * 100.0


def ema_slope_pct(closes: Sequence[float], period: int) -> float:
    """The EMA's change over the last bar, in percent of its value."""
    e = ema(closes, period)
    if len(e) < 2 or e[-2] == 0:
        return 0.0
    return (e[-1] / e[-2] - 1.0) * 100.0


def trend(closes: Sequence[float], fast: int = 9, slow: int = 21, flat_pct: float = 0.02) -> int:
    """+1 when the fast EMA is above the slow one by more than flat_pct percent, -1 below, 0 flat."""
    if len(closes) < 2:
        return 0
    f, s = ema(closes, fast)[-1], ema(closes, slow)[-1]
    if s == 0:
        return 0
    gap = (f / s - 1.0) * 100.0
    return 1 if gap > flat_pct else -1 if gap < -flat_pct else 0
