"""The Venue protocol and the errors a venue raises.

Venue calls are blocking (pybit is): the engine runs them in threads. Errors tell
the executor what is known about an order's fate, which decides the intent status:
a rejection is FAILED, an unknown outcome stays EXECUTING until it is looked up.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.models import (
    Balance,
    ClosedTrade,
    Instrument,
    Kline,
    OrderInfo,
    OrderRequest,
    Ticker,
    VenuePosition,
)


class VenueError(Exception):
    """A venue call failed. `code` is the venue's (Bybit retCode) where there is one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})" if self.code is not None else self.message


class OrderRejected(VenueError):
    """The venue certainly did not take the order (insufficient balance, bad qty, ...)."""


class OutcomeUnknown(VenueError):
    """The request may or may not have reached the venue (timeout, connection lost, 5xx)."""


class AuthError(VenueError):
    """Keys refused: stop trading, never retry in a loop."""


@runtime_checkable
class Venue(Protocol):
    name: str  # sim, paper, testnet, demo, live

    def instruments(self, symbols: list[str]) -> dict[str, Instrument]: ...

    def klines(self, symbol: str, interval_min: int, limit: int) -> list[Kline]:
        """Closed and current candles, oldest first."""
        ...

    def ticker(self, symbol: str) -> Ticker: ...

    def balance(self) -> Balance: ...

    def positions(self) -> list[VenuePosition]:
        """Open positions only (size > 0)."""
        ...

    def set_leverage(self, symbol: str, leverage: float) -> None:
        """The symbol's leverage, made so before every open: a venue behind a network
        keeps what it last set or saw and sends nothing when it is already right."""
        ...

    def place_order(self, order: OrderRequest) -> OrderInfo:
        """Send a market order with orderLinkId = order.order_link_id."""
        ...

    def order_by_link_id(self, symbol: str, order_link_id: str) -> OrderInfo | None:
        """The order with that orderLinkId, or None when the venue has none."""
        ...

    def set_trading_stop(
        self,
        symbol: str,
        *,
        trailing_stop: float | None = None,
        active_price: float | None = None,
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> None: ...

    def closed_trades(self, symbol: str, since: float) -> list[ClosedTrade]:
        """Closes of `symbol` since `since`, newest first, with the venue's reason."""
        ...
