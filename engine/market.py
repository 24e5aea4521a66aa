"""One symbol's market kept incrementally: its closed 1m, 5m and 15m candles and the
indicators deciders and guardrails read, updated once per closed candle.

A decision cycle costs a few additions per new candle instead of recomputing EMAs,
RSI and ATR over 100 candles × 3 timeframes × every symbol. 5m and 15m candles are
folded from the closed 1m candles (their OHLCV is exactly what the venue would
report), so after the first load only 1m candles are fetched, and only once one has
closed. The indicators are the textbook recursions of engine.indicators (EMA seeded
with its first value, Wilder's ATR and RSI seeded with a simple mean), run over all
the candles seen rather than re-seeded on a sliding window.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone

from engine.models import Kline, SymbolFeatures, Ticker
from engine.venues.base import AuthError, Venue, VenueError

# (start, open, high, low, close, volume): a closed candle
Row = tuple[float, float, float, float, float, float]

KEEP_1M = 200  # closed 1m candles kept (15 min returns, 1 h sparkline, volume windows)
KEEP_5M = 100
KEEP_15M = 100
# What a cold start reads from the venue: the deciders want 100 × 15m of history.
LOAD = {1: KEEP_1M, 5: KEEP_5M, 15: KEEP_15M}
ATR_MEDIAN_1M = 1440  # ATR(1m) samples (one per closed 1m candle: 24 h) behind its median
FLAT_PCT = 0.02  # a fast EMA within this many percent of the slow one is no trend
# The mean the price is stretched from: the EMA(60) of 1m closes (its weights centre half an hour back).
# On the calibrated market (engine/venues/simfeed.py: overshoots that fade over minutes
# to hours, jumps that partly retrace) a price far from it tends to come back some way.
MEAN_1M = 60
MINUTE = 60


class Ema:
    """Exponential moving average, seeded with the first value."""

    __slots__ = ("k", "value", "prev")

    def __init__(self, period: int) -> None:
        self.k = 2.0 / (period + 1)
        self.value: float | None = None
        self.prev: float | None = None

    def add(self, x: float) -> None:
        self.prev = self.value
        self.value = x if self.value is None else self.value + self.k * (x - self.value)


class Wilder:
    """Wilder's smoothing: the mean of the first `period` samples, then (v·(n−1)+x)/n."""

    __slots__ = ("period", "n", "value")

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self.n = 0
        self.value = 0.0

    def add(self, x: float) -> None:
        if self.n < self.period:
            self.n += 1
            self.value += (x - self.value) / self.n
        else:
            self.value = (self.value * (self.period - 1) + x) / self.period


class Frame:
    """One timeframe's closed candles and indicators."""

    __slots__ = ("rows", "fast", "slow", "atr", "gain", "loss", "prev_close")

    def __init__(self, keep: int) -> None:
        self.rows: deque[Row] = deque(maxlen=keep)
        self.fast, self.slow = Ema(9), Ema(21)
        self.atr, self.gain, self.loss = Wilder(), Wilder(), Wilder()
        self.prev_close: float | None = None

    def add(self, row: Row) -> None:
        _, _, high, low, close, _ = row
        pc = self.prev_close
        tr = high - low
        if pc is not None:
            tr = max(tr, abs(high - pc), abs(low - pc))
            delta = close - pc
            self.gain.add(delta if delta > 0 else 0.0)
            self.loss.add(-delta if delta < 0 else 0.0)
        self.atr.add(tr)
        self.fast.add(close)
        self.slow.add(close)
        self.prev_close = close
        self.rows.append(row)

    @property
    def last_start(self) -> float | None:
        return self.rows[-1][0] if self.rows else None

    def closes(self) -> list[float]:
        return [r[4] for r in self.rows]

    def rsi(self) -> float:
        if self.gain.n == 0:
            return 50.0
        if self.loss.value == 0:
            return 100.0 if self.gain.value > 0 else 50.0
        return 100.0 - 100.0 / (1.0 + self.gain.value / self.loss.value)

    def trend(self) -> int:
        f, s = self.fast.value, self.slow.value
        if f is None or s is None or not s or len(self.rows) < 2:
            return 0
        gap = (f / s - 1.0) * 100.0
        return 1 if gap > FLAT_PCT else -1 if gap < -FLAT_PCT else 0

    def slope_pct(self) -> float:
        f, p = self.fast.value, self.fast.prev
        if f is None or not p:
            return 0.0
        return (f / p - 1.0) * 100.0


class _Fold:
    """Folds closed 1m candles into the candle of a longer span being formed."""

    __slots__ = ("span", "frame", "row")

    def __init__(self, span: int, frame: Frame) -> None:
        self.span = span
        self.frame = frame
        self.row: list[float] | None = None

    def add(self, r: Row) -> None:
        start = r[0] - r[0] % self.span
        last = self.frame.last_start
        if last is not None and start <= last:
            return  # already in a closed candle of this span
        cur = self.row
        if cur is not None and cur[0] != start:
            self._close()  # a gap: the candle in progress ended short
            cur = None
        if cur is None:
            self.row = [start, r[1], r[2], r[3], r[4], r[5]]
        else:
            cur[2] = max(cur[2], r[2])
            cur[3] = min(cur[3], r[3])
            cur[4] = r[4]
            cur[5] += r[5]
        if r[0] + 60 >= start + self.span:  # its last minute is in: the candle is closed
            self._close()

    def _close(self) -> None:
        if self.row is not None:
            self.frame.add(tuple(self.row))  # type: ignore[arg-type]
            self.row = None


class SymbolMarket:
    """Closed candles of one symbol on 1m/5m/15m and their indicators."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.m1, self.m5, self.m15 = Frame(KEEP_1M), Frame(KEEP_5M), Frame(KEEP_15M)
        self._f5, self._f15 = _Fold(300, self.m5), _Fold(900, self.m15)
        # ATR(1m) in percent of the close, per closed 1m candle once the ATR is seeded: the
        # dynamic time limit compares the ATR now with its median of the last 24 h.
        self.atr_hist: deque[float] = deque(maxlen=ATR_MEDIAN_1M)
        self._median: tuple[float | None, float] = (None, 0.0)  # (last_1m it was taken at, median)
        self.mean_1m = Ema(MEAN_1M)

    @classmethod
    def from_klines(cls, symbol: str, k1: Sequence[Kline], k5: Sequence[Kline], k15: Sequence[Kline]) -> SymbolMarket:
        """A market from the venue's candle lists (oldest first; the newest of each is
        still forming and left out)."""
        m = cls(symbol)
        for frame, rows in ((m.m15, k15), (m.m5, k5)):
            for k in _closed(rows):
                frame.add(_row(k))
        m.add_1m(_row(k) for k in _closed(k1))
        return m

    @property
    def last_1m(self) -> float | None:
        """Start of the newest closed 1m candle."""
        return self.m1.last_start

    def add_1m(self, rows: Iterable[Row]) -> int:
        """Closed 1m candles, oldest first; ones already seen are skipped. Returns how many were new."""
        n = 0
        for r in rows:
            last = self.m1.last_start
            if last is not None and r[0] <= last:
                continue
            self.m1.add(r)
            if self.m1.atr.n >= self.m1.atr.period and r[4] > 0:
                self.atr_hist.append(self.m1.atr.value / r[4] * 100.0)
            self.mean_1m.add(r[4])
            self._f5.add(r)
            self._f15.add(r)
            n += 1
        return n

    def atr_median_1m(self) -> float:
        """Median ATR(1m) % of the last 24 h of candles (fewer after a cold start), taken
        once per closed candle: one sort of at most 1,440 numbers a minute."""
        at, value = self._median
        if at != self.last_1m:
            h = sorted(self.atr_hist)
            n = len(h)
            value = 0.0 if n == 0 else h[n // 2] if n % 2 else (h[n // 2 - 1] + h[n // 2]) / 2
            self._median = (self.last_1m, value)
        return value

    def closes_1m(self, last: int = 60) -> list[float]:
        rows = self.m1.rows
        return [r[4] for r in list(rows)[-last:]]

    def features(self, ticker: Ticker) -> SymbolFeatures:
        price = ticker.last
        m1, m5, m15 = self.m1, self.m5, self.m15
        rows1 = m1.rows
        closes1 = [r[4] for r in list(rows1)[-16:]]
        closes5 = [r[4] for r in list(m5.rows)[-13:]]
        vols = [r[5] for r in list(rows1)[-25:]]
        vol_recent = sum(vols[-5:])
        vol_before = sum(vols[:-5]) / 4 if len(vols) > 5 else 0.0
        mid = (ticker.bid + ticker.ask) / 2 or price
        last = rows1[-1] if rows1 else None
        mean = self.mean_1m.value

        def pct(x: float) -> float:
            return x / price * 100.0 if price else 0.0

        return SymbolFeatures(
            symbol=ticker.symbol,
            price=price,
            bid=ticker.bid,
            ask=ticker.ask,
            spread_pct=(ticker.ask - ticker.bid) / mid * 100.0 if mid else 0.0,
            funding_rate=ticker.funding_rate,
            atr_pct_1m=pct(m1.atr.value),
            atr_pct_1m_median=self.atr_median_1m(),
            atr_pct_5m=pct(m5.atr.value),
            ret_1m_pct=_ret(closes1, 1),
            ret_5m_pct=_ret(closes1, 5),
            ret_15m_pct=_ret(closes1, 15),
            ret_1h_pct=_ret(closes5, 12),
            last_range_1m_pct=pct(last[2] - last[3]) if last else 0.0,
            rsi_1m=m1.rsi(),
            rsi_5m=m5.rsi(),
            ema_slope_1m=m1.slope_pct(),
            ema_slope_5m=m5.slope_pct(),
            ema_slope_15m=m15.slope_pct(),
            trend_1m=m1.trend(),
            trend_5m=m5.trend(),
            trend_15m=m15.trend(),
            volume_change_pct=(vol_recent / vol_before - 1.0) * 100.0 if vol_before else 0.0,
            stretch_pct=(price / mean - 1.0) * 100.0 if mean and price else 0.0,
        )


def _ret(closes: Sequence[float], bars: int) -> float:
    if len(closes) <= bars or closes[-1 - bars] == 0:
        return 0.0
    return (closes[-1] / closes[-1 - bars] - 1.0) * 100.0


def _row(k: Kline) -> Row:
    return (k.start, k.open, k.high, k.low, k.close, k.volume)


def _closed(klines: Sequence[Kline]) -> Sequence[Kline]:
    # The newest candle is still forming; signals use closed candles only.
    return klines[:-1] if len(klines) > 1 else klines


class Markets:
    """Every symbol's SymbolMarket, kept from the venue: tickers in one request where the
    venue can, 1m candles fetched only once one has closed (the whole history on the
    first look or after a long absence). A symbol whose data fails or goes stale (no
    closed candle for a few minutes: an outage, a gap in a replay's files) is left out,
    said once, and said again when it is back."""

    STALE_CANDLES = 3  # closed 1m candles missing before a symbol's data counts as stale
    REFETCH_MAX = 1000  # 1m candles missed beyond this reload the symbol's market whole

    def __init__(self, venue: Venue, say: Callable[[str, str, str], None]) -> None:
        self.venue = venue
        self.say = say  # (level, message, code)
        self.symbols: dict[str, SymbolMarket] = {}
        self._failed: set[str] = set()
        # A cycle and an approval (or an AUTO entry's second look) may read the market from
        # two worker threads at once: a closed candle must be folded into the indicators once.
        self._lock = threading.Lock()
        # Closed 1m candles a stream brought (engine.marks), when it has them: (symbol, after) -> candles.
        self.pushed: Callable[[str, float], list[Kline] | None] | None = None

    def __getitem__(self, symbol: str) -> SymbolMarket:
        return self.symbols[symbol]

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.symbols

    def features(self, symbols: list[str], now: float,
                 tickers: dict[str, Ticker] | None = None) -> dict[str, SymbolFeatures]:
        """Features of every symbol whose market data answered; raises VenueError when none
        did. tickers: the prices to use (a live stream's), else the venue is asked."""
        tickers = self._tickers(symbols) if tickers is None else tickers
        feats = {}
        for sym in symbols:
            ticker = tickers.get(sym)
            if ticker is None:
                continue
            try:
                with self._lock:
                    m = self._market(sym, now)
            except VenueError as e:
                if isinstance(e, AuthError):
                    raise
                self._failure(sym, str(e))
                continue
            last = m.last_1m
            if last is not None and now - last > (self.STALE_CANDLES + 1) * MINUTE:
                self._failure(sym, f"no closed 1m candle since {_hm(last + MINUTE)} UTC")
                continue
            feats[sym] = m.features(ticker)
            if sym in self._failed:
                self._failed.discard(sym)
                self.say("info", f"{sym}: market data is back", "MARKET_DATA")
        if not feats:
            raise VenueError("no market data for any symbol")
        return feats

    def _tickers(self, symbols: list[str]) -> dict[str, Ticker]:
        bulk = getattr(self.venue, "tickers", None)
        if bulk is not None:
            return bulk(symbols)
        out = {}
        for sym in symbols:
            try:
                out[sym] = self.venue.ticker(sym)
            except VenueError as e:
                if isinstance(e, AuthError):
                    raise
                self._failure(sym, str(e))
        return out

    def _market(self, symbol: str, now: float) -> SymbolMarket:
        m = self.symbols.get(symbol)
        last_closed = now - now % MINUTE - MINUTE  # start of the newest 1m candle that has closed
        if m is None or m.last_1m is None or last_closed - m.last_1m > self.REFETCH_MAX * MINUTE:
            v = self.venue
            m = SymbolMarket.from_klines(symbol, v.klines(symbol, 1, LOAD[1]), v.klines(symbol, 5, LOAD[5]),
                                         v.klines(symbol, 15, LOAD[15]))
            self.symbols[symbol] = m
        elif last_closed > m.last_1m:
            # The kline stream's closed candles when it brought every one since, else REST.
            pushed = self.pushed(symbol, m.last_1m) if self.pushed is not None else None
            if pushed and pushed[-1].start >= last_closed:
                closed = [k for k in pushed if k.start <= last_closed]
            else:
                missing = int((last_closed - m.last_1m) // MINUTE)
                closed = self.venue.klines(symbol, 1, missing + 2)[:-1]  # less the forming one; one overlaps
            m.add_1m((k.start, k.open, k.high, k.low, k.close, k.volume) for k in closed)
        return m

    def _failure(self, symbol: str, why: str) -> None:
        if symbol not in self._failed:
            self._failed.add(symbol)
            self.say("warning", f"{symbol}: market data unavailable ({why}); no decision for it until it is back",
                     "MARKET_DATA")


def _hm(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M")
