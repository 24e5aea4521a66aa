"""BybitFeed: live Bybit prices for the paper venue (simulated fills on real prices).

It offers what PaperVenue reads from a SimFeed (now, symbols, feed_time_at,
clock_time_at, advance_to, path_since, price, ticker, klines) from Bybit's public
market endpoints through pybit, without keys. Feed time is clock time.

With a stream (Bybit's public WebSocket, engine.venues.bybit_ws; the engine's ticking
marks start and stop it) every ticker pushed is a tick of the price path, so a TP or SL
fills where the live price crossed it. While the stream is not live (not started,
connecting, stale), advance_to() polls the REST tickers at most once per poll interval;
when it has not looked for a while (longer than a minute), the 1m candles of the gap are
replayed as open, then low and high (in the order the candle most likely took), then
close, so a TP or SL crossed while nobody looked still fills at its level, as on the venue.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from engine.models import Instrument, Kline, Ticker
from engine.venues import bybit_parse as parse
from engine.venues.base import VenueError
from engine.venues.bybit_http import BybitClient, Busy, NoAnswer, Refused
from engine.venues.bybit_ws import BybitStreams, stream_urls
from engine.venues.streams import LIVE, StreamSink

TICKS_KEPT = 20_000
GAP_REPLAY_SEC = 60.0


class BybitFeed(StreamSink):
    """Live market data for PaperVenue; thread-safe."""

    def __init__(self, symbols: list[str], client: BybitClient, poll_sec: float = 1.0, *,
                 ws_url: str | None = None, stale_sec: float = 10.0) -> None:
        self._symbols = [s.upper() for s in dict.fromkeys(symbols)]
        self.client = client
        self.poll_sec = poll_sec
        self._lock = threading.RLock()
        self._ticks: dict[str, deque[tuple[float, float]]] = {s: deque(maxlen=TICKS_KEPT) for s in self._symbols}
        self._tickers: dict[str, Ticker] = {}
        self._polled_at = 0.0
        self._now = time.time()  # wall clock: live prices are stamped in wall time
        self._poll(self._now)
        self.stream: BybitStreams | None = None  # public prices pushed (started by the engine's marks)
        if ws_url is not None:
            self.stream = BybitStreams(stream_urls("live", ws_url=ws_url), self._symbols, self, stale_sec=stale_sec)

    @classmethod
    def from_settings(cls, settings: Any) -> "BybitFeed":
        # Paper trades on mainnet prices unless BYBIT_BASE_URL points elsewhere.
        client = BybitClient("live", None, base_url=settings.bybit_base_url, timeout_sec=settings.bybit_timeout_sec)
        ws_url = None
        if settings.bybit_ws:
            public = stream_urls("live", settings.bybit_base_url, settings.bybit_ws_url).public
            ws_url = public  # None: not a Bybit host and no BYBIT_WS_URL; polled
        return cls(list(settings.symbols), client, ws_url=ws_url, stale_sec=settings.ws_stale_sec)

    def _get(self, method: str, **params: Any) -> dict[str, Any]:
        try:
            return self.client.call(method, private=False, category="linear", **params)
        except (Refused, Busy, NoAnswer) as e:
            raise VenueError(f"Bybit market data ({method}): {e}") from None

    # --- time -----------------------------------------------------------------------

    @property
    def now(self) -> float:
        with self._lock:
            return self._now

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def feed_time_at(self, clock_now: float) -> float:
        return clock_now

    def clock_time_at(self, feed_t: float) -> float:
        return feed_t

    def advance_to(self, t: float) -> None:
        with self._lock:
            if t <= self._now:
                return
            if self.stream is not None and self.stream.status == LIVE:
                self._polled_at = t  # the stream brought every tick up to now
            elif t - self._polled_at >= self.poll_sec:
                self._poll(t)
            self._now = t

    def on_ticker(self, ticker: Ticker) -> None:
        """A price pushed by the stream (pybit's thread): the next tick of the path."""
        with self._lock:
            if ticker.symbol not in self._ticks:
                return
            # Stamped after the feed time reached: the paper venue scans ticks after it.
            at = max(time.time(), self._now + 1e-6)  # wall clock: feed time is clock time
            self._tickers[ticker.symbol] = ticker
            self._ticks[ticker.symbol].append((at, ticker.last))

    def _poll(self, t: float) -> None:
        gap = t - self._polled_at
        for sym in self._symbols:
            if self._polled_at and gap > GAP_REPLAY_SEC:
                self._replay(sym, self._polled_at, t)
            rows = self._get("get_tickers", symbol=sym).get("list", [])
            if not rows:
                raise VenueError(f"no Bybit ticker for {sym}")
            tk = parse.ticker(rows[0])
            self._tickers[sym] = tk
            self._ticks[sym].append((t, tk.last))
        self._polled_at = t

    def _replay(self, sym: str, since: float, until: float) -> None:
        """The 1m candles closed in (since, until) as a price path."""
        limit = min(int((until - since) / 60) + 2, 1000)
        for k in self.klines(sym, 1, limit)[:-1]:
            if k.start <= since or k.start + 60 > until:
                continue
            first, second = (k.low, k.high) if k.close >= k.open else (k.high, k.low)
            for dt, price in ((1, k.open), (20, first), (40, second), (59, k.close)):
                self._ticks[sym].append((k.start + dt, price))

    # --- reading ----------------------------------------------------------------------

    def path_since(self, symbol: str, t: float, side: str | None = None) -> list[tuple[float, float]]:
        with self._lock:
            return [(ts, p) for ts, p in self._ticks[symbol] if ts > t]

    def price(self, symbol: str) -> float:
        with self._lock:
            return self._ticks[symbol][-1][1]

    def fill_price(self, symbol: str) -> float:
        """A market order fills at the live last price."""
        return self.price(symbol)

    def ticker(self, symbol: str) -> Ticker:
        with self._lock:
            return self._tickers[symbol]

    def klines(self, symbol: str, interval_min: int, limit: int = 200) -> list[Kline]:
        rows = self._get("get_kline", symbol=symbol, interval=str(interval_min), limit=max(1, min(limit, 1000)))
        return [parse.kline(r) for r in reversed(rows.get("list", []))]

    def instruments(self) -> dict[str, Instrument]:
        out = {}
        for sym in self._symbols:
            rows = self._get("get_instruments_info", symbol=sym).get("list", [])
            row = next((r for r in rows if r.get("symbol") == sym and r.get("status") == "Trading"), None)
            if row is not None:
                out[sym] = parse.instrument(row)
        return out
