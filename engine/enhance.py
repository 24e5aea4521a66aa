"""The original system's "future enhancements", each a setting that can be switched off:

- dynamic time limit: the time in trade scales with ATR(1m) against its median of the last
  24 h — a market moving twice as fast reaches its TP or SL in about half the time, so a
  trade that has not by then is stale sooner (and a quiet one gets longer) — within
  time_limit_min_sec–time_limit_max_sec;
- adaptive cooldown: after a loss the symbol's cooldown grows with its losing streak
  (base × cooldown_loss_factor^losses), within cooldown_min_sec–cooldown_max_sec; a win
  resets it;
- multi-timeframe confirmation: two of the 1m/5m/15m trends with the side is the neutral
  case; all three raise the confidence by mtf_confidence_step, and it is cut a step for
  each one short of two and for each against the side. It runs before the guardrails
  derive leverage and size from the confidence (and before LOW_CONFIDENCE judges it). A
  decider that already opens only on three aligned trends (the rules decider) gains one
  step, no more: confirmation should not be a lever on leverage.

Pure functions; the guardrails record what the first and the last changed as clamps (the
decision's detail screen lists them), the position book the cooldown's reason on the trade.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.config import Settings
from engine.models import Clamp, Side, SymbolFeatures, Trade

STREAK_CAP = 20  # losses in a row counted; the cooldown is long capped well before


def mtf_confidence(confidence: float, side: Side, feats: SymbolFeatures, s: Settings) -> tuple[float, Clamp | None]:
    """The confidence after multi-timeframe confirmation, and the clamp saying why (None:
    switched off, or nothing changed)."""
    if not s.mtf_confirmation or s.mtf_confidence_step <= 0:
        return confidence, None
    sign = 1 if side == "long" else -1
    trends = {"1m": feats.trend_1m, "5m": feats.trend_5m, "15m": feats.trend_15m}
    agree = [tf for tf, t in trends.items() if t * sign > 0]
    against = [tf for tf, t in trends.items() if t * sign < 0]
    steps = len(agree) - 2 - len(against)
    out = round(min(max(confidence + s.mtf_confidence_step * steps, 0.0), 1.0), 4)
    if out == confidence:
        return confidence, None
    why = (f"multi-timeframe confirmation: {len(agree)} of 1m/5m/15m with the {side}"
           f"{' (' + ', '.join(agree) + ')' if agree else ''}, {len(against)} against"
           f"{' (' + ', '.join(against) + ')' if against else ''}: {steps:+d} × {s.mtf_confidence_step:g}")
    return out, Clamp(field="confidence", original=confidence, value=out, why=why)


def dynamic_time_limit(limit: int, feats: SymbolFeatures, s: Settings) -> tuple[int, Clamp | None]:
    """The time limit scaled by median ATR(1m) / ATR(1m) now, within the allowed range, and
    the clamp saying why (None: switched off, no ATR history yet, or nothing changed)."""
    atr, median = feats.atr_pct_1m, feats.atr_pct_1m_median
    if not s.dynamic_time_limit or atr <= 0 or median <= 0:
        return limit, None
    ratio = median / atr
    out = int(min(max(round(limit * ratio), s.time_limit_min_sec), s.time_limit_max_sec))
    if out == limit:
        return limit, None
    why = (f"dynamic time limit: ATR(1m) {atr:.3f}% against its 24 h median {median:.3f}% (×{ratio:.2f}), "
           f"allowed {s.time_limit_min_sec}–{s.time_limit_max_sec}s")
    return out, Clamp(field="time_in_trade_limit_sec", original=limit, value=out, why=why)


def losing_streak(trades_newest_first: Iterable[Trade], symbol: str) -> int:
    """Losses in a row of `symbol`'s latest trades (parts closed are not trades of their own)."""
    n = 0
    for t in trades_newest_first:
        if t.symbol != symbol or t.cooldown_sec is None:
            continue
        if t.pnl >= 0 or n >= STREAK_CAP:
            break
        n += 1
    return n


def adaptive_cooldown(base_sec: int, losses: int, symbol: str, s: Settings) -> tuple[int, str]:
    """The cooldown after a close that left `losses` losses in a row (0: a win), and why it
    differs from `base_sec` ("" when it does not, or the enhancement is off)."""
    if not s.adaptive_cooldown or losses <= 0:
        return base_sec, ""
    grown = base_sec * s.cooldown_loss_factor ** min(losses, STREAK_CAP)
    out = int(min(max(round(grown), s.cooldown_min_sec), s.cooldown_max_sec))
    if out == base_sec:
        return base_sec, ""
    nth = "1 loss" if losses == 1 else f"{losses} losses"
    return out, (f"adaptive cooldown: {nth} in a row on {symbol}, {base_sec}s × {s.cooldown_loss_factor:g}^{losses}, "
                 f"allowed {s.cooldown_min_sec}–{s.cooldown_max_sec}s")
