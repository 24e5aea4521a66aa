"""Bybit V5 answers to engine models, and engine numbers to Bybit strings (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.units import floor_step_text, plain, round_tick_text
from engine.models import (
    ClosedTrade,
    CloseReason,
    Instrument,
    Kline,
    OrderInfo,
    Ticker,
    VenuePosition,
    side_of_bybit,
)

# Orders that will not change any more (BYBIT_V5.md §4, order status enum).
TERMINAL = {"Filled", "Cancelled", "Rejected", "PartiallyFilledCanceled", "Deactivated"}

# The closing order's createType says why a position closed (closed-pnl never does).
CREATE_TYPE_REASON = {
    "CreateByTakeProfit": CloseReason.TAKE_PROFIT,
    "CreateByPartialTakeProfit": CloseReason.TAKE_PROFIT,
    "CreateByStopLoss": CloseReason.STOP_LOSS,
    "CreateByPartialStopLoss": CloseReason.STOP_LOSS,
    "CreateByTrailingStop": CloseReason.TRAILING_STOP,
    "CreateByTrailingProfit": CloseReason.TRAILING_STOP,
    "CreateByLiq": CloseReason.LIQUIDATION,
    "CreateByLiquidate": CloseReason.LIQUIDATION,
    "CreateByTakeOver_PassThrough": CloseReason.LIQUIDATION,
    "CreateByTakeOverPassThrough": CloseReason.LIQUIDATION,
    "CreateByTakeover": CloseReason.LIQUIDATION,
}
STOP_ORDER_REASON = {
    "TakeProfit": CloseReason.TAKE_PROFIT,
    "PartialTakeProfit": CloseReason.TAKE_PROFIT,
    "StopLoss": CloseReason.STOP_LOSS,
    "PartialStopLoss": CloseReason.STOP_LOSS,
    "TrailingStop": CloseReason.TRAILING_STOP,
}


def f(value: Any, default: float = 0.0) -> float:
    """A Bybit number string ("", "0", None allowed) as a float."""
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def opt(value: Any) -> float | None:
    """A price that "0" or "" means unset."""
    x = f(value)
    return x if x else None


floor_step = floor_step_text  # the exact strings Bybit wants (engine.units)
round_tick = round_tick_text


def number(value: float) -> str:
    """A float as a short decimal string (no exponent, no float dust)."""
    return plain(Decimal(repr(value)))


def instrument(row: dict[str, Any]) -> Instrument:
    lot, price, lev = row.get("lotSizeFilter", {}), row.get("priceFilter", {}), row.get("leverageFilter", {})
    return Instrument(
        symbol=row["symbol"],
        qty_step=f(lot.get("qtyStep"), 0.001),
        min_qty=f(lot.get("minOrderQty"), 0.001),
        min_notional=f(lot.get("minNotionalValue"), 5.0),
        tick_size=f(price.get("tickSize"), 0.01),
        max_leverage=f(lev.get("maxLeverage"), 100.0) or 100.0,
    )


def kline(row: list[Any]) -> Kline:
    return Kline(start=int(row[0]) / 1000, open=f(row[1]), high=f(row[2]), low=f(row[3]), close=f(row[4]),
                 volume=f(row[5]))


def ws_kline(row: dict[str, Any]) -> Kline:
    """A candle of the kline stream ({start, open, high, low, close, volume, confirm, ...})."""
    return Kline(start=int(row["start"]) / 1000, open=f(row.get("open")), high=f(row.get("high")),
                 low=f(row.get("low")), close=f(row.get("close")), volume=f(row.get("volume")))


def ticker(row: dict[str, Any]) -> Ticker:
    last = f(row.get("lastPrice"))
    return Ticker(
        symbol=row["symbol"],
        last=last,
        mark=f(row.get("markPrice"), last),
        bid=f(row.get("bid1Price"), last),
        ask=f(row.get("ask1Price"), last),
        funding_rate=f(row.get("fundingRate")),
    )


def position(row: dict[str, Any]) -> VenuePosition | None:
    """An open position, or None for a flat slot (size "0", side ""). The REST list says
    avgPrice, the position stream entryPrice."""
    size = f(row.get("size"))
    if size <= 0 or row.get("side") not in ("Buy", "Sell"):
        return None
    return VenuePosition(
        symbol=row["symbol"],
        side=side_of_bybit(row["side"]),
        size=size,
        entry_price=f(row.get("avgPrice")) or f(row.get("entryPrice")),
        mark_price=f(row.get("markPrice")),
        leverage=f(row.get("leverage"), 1.0) or 1.0,
        unrealised_pnl=f(row.get("unrealisedPnl")),
        liq_price=opt(row.get("liqPrice")),
        take_profit=opt(row.get("takeProfit")),
        stop_loss=opt(row.get("stopLoss")),
        trailing_stop=opt(row.get("trailingStop")),
        position_idx=int(row.get("positionIdx") or 0),
    )


def order(row: dict[str, Any]) -> OrderInfo:
    reject = row.get("rejectReason") or ""
    status = row.get("orderStatus") or "New"
    return OrderInfo(
        order_link_id=row.get("orderLinkId") or "",
        order_id=row.get("orderId") or "",
        symbol=row["symbol"],
        side="Buy" if row.get("side") == "Buy" else "Sell",
        status=status,
        qty=f(row.get("qty")),
        filled_qty=f(row.get("cumExecQty")),
        avg_price=f(row.get("avgPrice")),
        reduce_only=bool(row.get("reduceOnly")),
        fee=f(row.get("cumExecFee")),
        reject_reason="" if reject in ("", "EC_NoError") else f"{reject} ({status})",
    )


def order_from_executions(rows: list[dict[str, Any]]) -> OrderInfo:
    """An order as its fills in the execution list show it (newest first). Our orders are
    market IOC: whatever did not fill at once was cancelled, so a remainder means
    PartiallyFilledCanceled."""
    qty = sum(f(r.get("execQty")) for r in rows)
    value = sum(f(r.get("execPrice")) * f(r.get("execQty")) for r in rows)
    last = rows[0]
    ordered = f(last.get("orderQty")) or qty
    status = "Filled" if f(last.get("leavesQty")) <= 0 and qty >= ordered - 1e-12 else "PartiallyFilledCanceled"
    return OrderInfo(
        order_link_id=last.get("orderLinkId") or "",
        order_id=last.get("orderId") or "",
        symbol=last["symbol"],
        side="Buy" if last.get("side") == "Buy" else "Sell",
        status=status,
        qty=ordered,
        filled_qty=qty,
        avg_price=value / qty if qty else 0.0,
        reduce_only=False,
        fee=sum(f(r.get("execFee")) for r in rows),
    )


def close_reason(create_type: str, stop_order_type: str = "", exec_type: str = "") -> CloseReason:
    if create_type in CREATE_TYPE_REASON:
        return CREATE_TYPE_REASON[create_type]
    if "Liq" in create_type or "TakeOver" in create_type or exec_type == "BustTrade":
        return CloseReason.LIQUIDATION
    return STOP_ORDER_REASON.get(stop_order_type, CloseReason.UNKNOWN)


def closed_trade(row: dict[str, Any], reason: CloseReason, closing_side: str | None = None) -> ClosedTrade:
    """A closed-pnl row. Its `side` is the closing order's side, so the position's is the
    other one; the closing order's own side (when looked up) wins."""
    closing = closing_side or row.get("side") or "Sell"
    return ClosedTrade(
        symbol=row["symbol"],
        side="short" if closing == "Buy" else "long",
        qty=f(row.get("closedSize")) or f(row.get("qty")),
        entry_price=f(row.get("avgEntryPrice")),
        exit_price=f(row.get("avgExitPrice")),
        pnl=f(row.get("closedPnl")),
        reason=reason,
        closed_at=int(row.get("updatedTime") or row.get("createdTime") or 0) / 1000,
        order_id=row.get("orderId") or "",
        fees=f(row.get("openFee")) + f(row.get("closeFee")),
    )
