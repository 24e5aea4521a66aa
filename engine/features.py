"""Summaries of the market for deciders and guardrails (klines in, features out).

The engine keeps each symbol's market incrementally (engine.market); this is the same
computation from whole candle lists, for one-off snapshots and tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.market import SymbolMarket
from engine.models import Kline, SymbolFeatures, Ticker


def symbol_features(
    ticker: Ticker, k1: Sequence[Kline], k5: Sequence[Kline], k15: Sequence[Kline]
) -> SymbolFeatures:
    """Compact features of one symbol from its 1m/5m/15m candles (the newest of each
    still forming) and ticker."""
    return SymbolMarket.from_klines(ticker.symbol, k1, k5, k15).features(ticker)
