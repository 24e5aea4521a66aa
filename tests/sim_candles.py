"""1-minute candle series made from the simulated market (replay tests and benches)."""

from __future__ import annotations

from pathlib import Path

from engine.candles import CandleSeries
from engine.venues.simfeed import SimFeed

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def sim_series(symbols: list[str], days: float, seed: int = 7, start: float = T0) -> list[CandleSeries]:
    """`days` of closed 1m candles per symbol from `start`, as a candle file would hold them."""
    feed = SimFeed(symbols, seed=seed, start=start, history_sec=0)
    out = {s: CandleSeries(s, Path(f"{s}.csv")) for s in symbols}
    end = start + days * 86_400
    t = start
    while t < end:
        t = min(t + 12 * 3600, end)
        feed.advance_to(t)
        for sym in symbols:
            cs = out[sym]
            for k in feed.klines(sym, 1, 1000)[:-1]:
                if k.start < start or (len(cs) and k.start <= cs.open_time[-1]):
                    continue
                for col, v in zip((cs.open_time, cs.open, cs.high, cs.low, cs.close, cs.volume),
                                  (k.start, k.open, k.high, k.low, k.close, k.volume)):
                    col.append(v)
    return list(out.values())
