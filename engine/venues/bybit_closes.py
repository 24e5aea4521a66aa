"""Closes on Bybit: closed-pnl rows with the reason taken from the closing order.

closed-pnl says how much and at what price, never why (its execType is Trade,
BustTrade, ...). The why is the closing order's createType (CreateByTakeProfit,
CreateByStopLoss, CreateByTrailingStop, CreateByLiq, ...), found in the order history,
else in the executions. Both lag a close by a moment, so the look-ups wait briefly.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from engine.models import ClosedTrade, CloseReason
from engine.venues import bybit_parse as parse

CATEGORY = "linear"
CLOSED_PNL_WAIT_SEC = 4.0  # closed-pnl and order history lag a close by a moment
MAX_REASON_LOOKUPS = 10
WEEK_MS = 7 * 86_400_000  # closed-pnl answers a 7-day window at most

Request = Callable[..., dict[str, Any]]


def closed_trades(req: Request, now_ms: int, symbol: str, since: float) -> list[ClosedTrade]:
    """Closes of `symbol` since `since`, newest first, each with its reason."""
    start = max(int(since * 1000), now_ms - WEEK_MS + 60_000)
    until = time.monotonic() + CLOSED_PNL_WAIT_SEC
    while True:
        rows = req("get_closed_pnl", category=CATEGORY, symbol=symbol, startTime=start, limit=50).get("list", [])
        if rows or time.monotonic() >= until:
            break
        time.sleep(0.25)
    out = []
    for i, row in enumerate(rows):
        reason, closing_side, link = CloseReason.UNKNOWN, None, ""
        if i < MAX_REASON_LOOKUPS and row.get("orderId"):
            reason, closing_side, link = close_reason(req, symbol, row, until)
        out.append(parse.closed_trade(row, reason, closing_side).model_copy(update={"order_link_id": link}))
    return out


def close_reason(req: Request, symbol: str, row: dict[str, Any], until: float) -> tuple[CloseReason, str | None, str]:
    """Why the row's closing order closed the position, that order's side, and its
    orderLinkId (ours when the order was ours: a close, or a late open that netted it)."""
    oid = row["orderId"]
    while True:
        orders = req("get_order_history", category=CATEGORY, symbol=symbol, orderId=oid).get("list", [])
        o = next((r for r in orders if r.get("orderId") == oid), None)
        if o is not None:
            why = parse.close_reason(o.get("createType", ""), o.get("stopOrderType", ""), row.get("execType", ""))
            return why, o.get("side"), o.get("orderLinkId") or ""
        execs = req("get_executions", category=CATEGORY, symbol=symbol, orderId=oid).get("list", [])
        x = next((r for r in execs if r.get("orderId") == oid), None)
        if x is not None:
            why = parse.close_reason(x.get("createType", ""), x.get("stopOrderType", ""), x.get("execType", ""))
            return why, x.get("side"), x.get("orderLinkId") or ""
        if time.monotonic() >= until:
            return parse.close_reason("", "", row.get("execType", "")), None, ""
        time.sleep(0.25)
