"""The Feed protocol: the market a paper venue fills against.

SimFeed (the built-in simulated market), BybitFeed (Bybit's live public prices) and
CandleFeed (a replay's candle files) provide it. Times are feed times; a feed maps
them to the engine's clock (one to one for all three today).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.models import Kline, Ticker


class Feed(Protocol):
    @property
    def now(self) -> float:
        """The feed time the market has reached."""
        ...

    @property
    def symbols(self) -> list[str]: ...

    def feed_time_at(self, clock_now: float) -> float: ...

    def clock_time_at(self, feed_t: float) -> float: ...

    def advance_to(self, t: float) -> None:
        """Bring the market to feed time t (a time in the past changes nothing)."""
        ...

    def price(self, symbol: str) -> float:
        """The last price."""
        ...

    def fill_price(self, symbol: str) -> float:
        """What a market order fills at now, before slippage: the next available price."""
        ...

    def ticker(self, symbol: str) -> Ticker: ...

    def klines(self, symbol: str, interval_min: int, limit: int = 200) -> list[Kline]:
        """The newest `limit` candles, oldest first; the newest may still be forming."""
        ...

    def path_since(self, symbol: str, t: float, side: str | None = None) -> Sequence[tuple[float, ...]]:
        """(time, price[, jumped]) of every price after feed time t, oldest first, in the
        order a position of `side` meets them (see PaperVenue's _Position.scan)."""
        ...
