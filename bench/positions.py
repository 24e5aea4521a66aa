"""Open positions for the benches: one per symbol, alternating long and short, about
1,000 USDT each at 5x, opened through the executor as an approved decision would be."""

from __future__ import annotations

from collections.abc import Callable


def open_positions(engine, venue, symbols: list[str], *, limit_sec: Callable[[int], int],
                   band: float, digits: int) -> None:
    """TP and SL `band` (a fraction of the price) either side, rounded to `digits`;
    limit_sec(i) is the i-th position's time limit."""
    from engine.models import Action, Decision, OrderPlan, Review, Verdict

    for i, sym in enumerate(symbols):
        px = venue.ticker(sym).last
        side = "long" if i % 2 else "short"
        qty = max(round(1000 / px, 2), 0.01)
        sign = 1 if side == "long" else -1
        d = Decision(symbol=sym, action=Action.OPEN_LONG if side == "long" else Action.OPEN_SHORT,
                     confidence=0.8, time_in_trade_limit_sec=limit_sec(i), rationale="bench")
        plan = OrderPlan(symbol=sym, side=side, qty=qty, price=px, leverage=5,
                         take_profit=round(px * (1 + sign * band), digits),
                         stop_loss=round(px * (1 - sign * band), digits),
                         margin=qty * px / 5, notional=qty * px)
        engine.executor.open(Review(verdict=Verdict.EXECUTE, decision=d, order=plan))
