"""Summaries of the market for deciders and guardrails (pure: klines in, features out)."""

from __future__ import annotations

from collections.abc import Sequence

from engine import indicators as ind
from engine.models import Kline, SymbolFeatures, Ticker


def _closed(klines: Sequence[Kline]) -> list[Kline]:
    # The newest candle is still forming; signals use closed candles only.
    return list(klines[:-1]) if len(klines) > 1 else list(klines)


def symbol_features(
    ticker: Ticker, k1: Sequence[Kline], k5: Sequence[Kline], k15: Sequence[Kline]
) -> SymbolFeatures:
    """Compact features of one symbol from its 1m/5m/15m candles and ticker."""
    c1, c5, c15 = _closed(k1), _closed(k5), _closed(k15)
    closes1 = [k.close for k in c1]
    closes5 = [k.close for k in c5]
    closes15 = [k.close for k in c15]
    price = ticker.last
    last = c1[-1] if c1 else None
    vol_recent = sum(k.volume for k in c1[-5:])
    vol_before = sum(k.volume for k in c1[-25:-5]) / 4 if len(c1) > 5 else 0.0
    mid = (ticker.bid + ticker.ask) / 2 or price

    def pct(x: float) -> float:
        return x / price * 100.0 if price else 0.0

    return SymbolFeatures(
        symbol=ticker.symbol,
        price=price,
        bid=ticker.bid,
        ask=ticker.ask,
        spread_pct=(ticker.ask - ticker.bid) / mid * 100.0 if mid else 0.0,
        funding_rate=ticker.funding_rate,
        atr_pct_1m=pct(ind.atr(c1[-50:])),
        atr_pct_5m=pct(ind.atr(c5[-50:])),
        ret_1m_pct=ind.pct_return(closes1, 1),
        ret_5m_pct=ind.pct_return(closes1, 5),
        ret_15m_pct=ind.pct_return(closes1, 15),
        ret_1h_pct=ind.pct_return(closes5, 12),
        last_range_1m_pct=pct(last.high - last.low) if last else 0.0,
        rsi_1m=ind.rsi(closes1[-100:]),
        rsi_5m=ind.rsi(closes5[-100:]),
        ema_slope_1m=ind.ema_slope_pct(closes1[-100:], 9),
        ema_slope_5m=ind.ema_slope_pct(closes5[-100:], 9),
        ema_slope_15m=ind.ema_slope_pct(closes15[-100:], 9),
        trend_1m=ind.trend(closes1[-100:]),
        trend_5m=ind.trend(closes5[-100:]),
        trend_15m=ind.trend(closes15[-100:]),
        volume_change_pct=(vol_recent / vol_before - 1.0) * 100.0 if vol_before else 0.0,
    )
