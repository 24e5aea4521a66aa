"""CandleFeed: historical 1-minute candles as the paper venue's market (replay).

Time is the replay's ManualClock, one to one. At time t the market is what had
happened by t:

- a candle is known once it has closed (open_time + 60 <= t); the price, the ticker
  and the klines are those of closed candles (the newest kline row is the forming
  one, as on Bybit, carrying the last close and nothing of the future);
- a market order fills at the next available price: the open of the first candle
  starting at or after t (plus the venue's slippage). An order that falls in a gap
  of the data is refused (no fill is ever invented across a gap); after the last
  candle, the last close;
- TP, SL, trailing stops and liquidation trigger on each closed candle's high and
  low. Within a candle the price is taken to visit the open, then the extreme that
  goes against the position, then the one in its favour, then the close — so when
  a take profit and a stop loss both lie inside one candle, the stop (the worse) is
  hit first.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence

from engine.candles import MINUTE, CandleSeries
from engine.models import Kline, Ticker
from engine.venues.base import OrderRejected, VenueError

# Where in a candle its four prices are taken to happen (seconds after the open).
_AT = (0.0, 15.0, 30.0, 59.0)


class CandleFeed:
    """The market of a set of candle series, moved by the replay's clock."""

    def __init__(self, series: Sequence[CandleSeries], start: float, *, spread_bps: float = 1.0,
                 funding_rate: float = 0.0001) -> None:
        self._series = {s.symbol: s for s in series}
        self._half_spread = spread_bps / 20_000
        self._funding = funding_rate
        self._now = float(start)
        self._closed = {sym: self._count_closed(s, self._now) for sym, s in self._series.items()}

    @staticmethod
    def _count_closed(s: CandleSeries, t: float) -> int:
        """How many candles of `s` have closed by time t."""
        return bisect.bisect_right(s.open_time, t - MINUTE)

    # --- time (the replay's clock is the feed's) ---------------------------------

    @property
    def now(self) -> float:
        return self._now

    @property
    def symbols(self) -> list[str]:
        return list(self._series)

    def feed_time_at(self, clock_now: float) -> float:
        return clock_now

    def clock_time_at(self, feed_t: float) -> float:
        return feed_t

    def advance_to(self, t: float) -> None:
        if t <= self._now:
            return
        self._now = t
        for sym, s in self._series.items():
            i = self._closed[sym]
            ot = s.open_time
            n = len(ot)
            while i < n and ot[i] + MINUTE <= t:
                i += 1
            self._closed[sym] = i

    # --- prices -----------------------------------------------------------------------

    def _series_of(self, symbol: str) -> CandleSeries:
        try:
            return self._series[symbol]
        except KeyError:
            raise KeyError(f"no candles for {symbol!r}") from None

    def _last(self, symbol: str) -> int:
        i = self._closed[symbol] - 1
        if i < 0:
            raise VenueError(f"{symbol}: no candle has closed yet at this time of the replay")
        return i

    def price(self, symbol: str) -> float:
        """The last price: the close of the newest closed candle."""
        s = self._series_of(symbol)
        return s.close[self._last(symbol)]

    def fill_price(self, symbol: str) -> float:
        """The next available price for a market order now (see the module's rules)."""
        s = self._series_of(symbol)
        i = bisect.bisect_left(s.open_time, self._now)
        if i >= len(s):
            return s.close[-1]  # the data has ended: the last price there was
        if s.open_time[i] - self._now >= MINUTE:
            raise OrderRejected(
                f"{symbol}: no market at this time (gap in the candles until {s.open_time[i]:.0f}); order not filled"
            )
        return s.open[i]

    def ticker(self, symbol: str) -> Ticker:
        last = self.price(symbol)
        half = last * self._half_spread
        return Ticker(symbol=symbol, last=last, mark=last, bid=last - half, ask=last + half,
                      funding_rate=self._funding)

    def klines(self, symbol: str, interval_min: int, limit: int = 200) -> list[Kline]:
        """The newest `limit` candles, oldest first; the last is the forming one (the
        newest close, nothing of the future). 5m and 15m are folded from 1m."""
        s = self._series_of(symbol)
        end = self._closed[symbol]
        span = interval_min * MINUTE
        forming_start = self._now - self._now % span
        closed = _fold(s, end, span, forming_start, limit - 1) if limit > 1 else []
        last = s.close[end - 1] if end else s.open[0]
        forming = Kline(start=forming_start, open=last, high=last, low=last, close=last, volume=0.0)
        return closed + [forming]

    def path_since(self, symbol: str, t: float, side: str | None = None) -> list[tuple[float, float, bool]]:
        """(time, price, jumped) of the candles that closed after feed time t, each as
        open (reached by a jump from the previous close), adverse extreme, favourable
        extreme, close (traded through) for a position of `side`: a long meets the low
        first, a short the high."""
        s = self._series_of(symbol)
        first = self._count_closed(s, t)
        out: list[tuple[float, float, bool]] = []
        ot, op, hi, lo, cl = s.open_time, s.open, s.high, s.low, s.close
        low_first = side != "short"
        for i in range(first, self._closed[symbol]):
            start = ot[i]
            a, b = (lo[i], hi[i]) if low_first else (hi[i], lo[i])
            out += ((start + _AT[0], op[i], True), (start + _AT[1], a, False), (start + _AT[2], b, False),
                    (start + _AT[3], cl[i], False))
        return out


def _fold(s: CandleSeries, end: int, span: int, before: float, limit: int) -> list[Kline]:
    """The newest `limit` candles of length `span` from the 1m candles [0, end) that start
    before `before`, oldest first."""
    ot: array = s.open_time
    if span == MINUTE:
        lo = max(0, end - limit)
        return [s.kline(i) for i in range(lo, end)]
    out: list[Kline] = []
    i = end - 1
    while i >= 0 and len(out) < limit:
        bucket = ot[i] - ot[i] % span
        if bucket >= before:
            i -= 1
            continue
        j = i
        while j >= 0 and ot[j] >= bucket:
            j -= 1
        rows = range(j + 1, i + 1)
        out.append(Kline(
            start=bucket, open=s.open[j + 1], high=max(s.high[k] for k in rows), low=min(s.low[k] for k in rows),
            close=s.close[i], volume=sum(s.volume[k] for k in rows),
        ))
        i = j
    out.reverse()
    return out
