"""What a venue's streams say, parsed, and who hears it: shared by the Bybit streams
(engine.venues.bybit_ws, which needs pybit) and the engine's ticking marks (engine.marks,
which runs on the simulated market too, without pybit)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.models import Balance, Kline, Ticker, VenuePosition

LIVE, STALE, POLLING = "live", "stale", "polling"


@dataclass(frozen=True)
class Execution:
    """One fill from the execution stream."""

    symbol: str
    exec_id: str
    order_id: str
    order_link_id: str  # ours (an intent id) when the order was ours; "" for TP/SL/liquidation
    side: str
    price: float
    qty: float
    closed_size: float
    exec_type: str
    create_type: str
    stop_order_type: str


@dataclass(frozen=True)
class OrderUpdate:
    symbol: str
    order_id: str
    order_link_id: str
    status: str
    create_type: str


@dataclass(frozen=True)
class PositionUpdate:
    symbol: str
    position: VenuePosition | None  # None: flat


class StreamSink:
    """What the streams hand on; every method is called from pybit's threads. The
    defaults ignore it."""

    def on_ticker(self, ticker: Ticker) -> None: ...

    def on_kline(self, symbol: str, kline: Kline, confirmed: bool) -> None: ...

    def on_positions(self, updates: list[PositionUpdate]) -> None: ...

    def on_executions(self, fills: list[Execution]) -> None: ...

    def on_orders(self, orders: list[OrderUpdate]) -> None: ...

    def on_wallet(self, balance: Balance) -> None: ...

    def on_status(self, status: str) -> None:
        """live, stale or polling (see BybitStreams.status)."""

    def on_resync(self) -> None:
        """The private stream is up (again): reconcile once over REST."""
