"""The guardrails: a pure review of a Decision against the engine's state.

review() returns a Review: EXECUTE, CONVERTED, BLOCKED or HOLD, with reason codes,
a line per reason an operator understands, each clamp, and for an open the sized
order. Guardrails block entries only; a CLOSE always goes through when there is
something to close.

The order for an open: multi-timeframe confirmation moves the confidence (engine.enhance);
the entry rules (this module's and the account-wide limits of engine.risk) and
LOW_CONFIDENCE judge it; the parameters are clamped, leverage and size derived from that
confidence, the time limit scaled by volatility; FEES_EXCEED_EDGE refuses a take profit
that does not clear the round trip's costs; the order is sized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine import enhance, risk
from engine.config import Settings
from engine.units import floor_to_step, round_to_tick
from engine.models import (
    Action,
    Balance,
    Clamp,
    Cooldown,
    Decision,
    EntryBlock,
    Instrument,
    OrderPlan,
    Review,
    RiskState,
    Side,
    SymbolFeatures,
    Verdict,
)

# Reason codes (stable: logs, the console and tests use them).
UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
NO_POSITION = "NO_POSITION"
REVERSE_DISABLED = "REVERSE_DISABLED"
COOLDOWN = "COOLDOWN"
ONE_WAY = "ONE_WAY"
POSITION_OPEN = "POSITION_OPEN"
MAX_POSITIONS = "MAX_POSITIONS"
INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN"
CRASH_GUARD = "CRASH_GUARD"
CONFLICTING_SIGNALS = "CONFLICTING_SIGNALS"
LOW_CONFIDENCE = "LOW_CONFIDENCE"
QTY_TOO_SMALL = "QTY_TOO_SMALL"
PAUSED = "PAUSED"
BAD_PRICE = "BAD_PRICE"
ORDER_IN_FLIGHT = "ORDER_IN_FLIGHT"
NO_MARKET_DATA = "NO_MARKET_DATA"
DAILY_LOSS_LIMIT = risk.DAILY_LOSS_LIMIT
MAX_DRAWDOWN = risk.MAX_DRAWDOWN
MAX_TRADES_PER_DAY = risk.MAX_TRADES_PER_DAY
FEES_EXCEED_EDGE = risk.FEES_EXCEED_EDGE


@dataclass(frozen=True)
class ReviewContext:
    """What the guardrails look at; the engine builds it, tests write it by hand."""

    now: float
    balance: Balance
    positions: dict[str, Side] = field(default_factory=dict)  # symbol -> side of open positions
    cooldowns: dict[str, Cooldown] = field(default_factory=dict)
    features: dict[str, SymbolFeatures] = field(default_factory=dict)
    instruments: dict[str, Instrument] = field(default_factory=dict)
    paused: bool = False
    # symbol -> an order of ours whose outcome is not known yet (it may still land),
    # as a line for the operator; no entry of that symbol, either side, meanwhile.
    in_flight: dict[str, str] = field(default_factory=dict)
    # the account-wide limits' memory (day's start, opens, peak, a drawdown pause); None: no limits
    limits: RiskState | None = None


def _clamp(
    name: str, value: float | None, lo: float, hi: float, clamps: list[Clamp], why: str = ""
) -> float:
    assert value is not None
    out = min(max(value, lo), hi)
    if out != value:
        clamps.append(Clamp(field=name, original=value, value=out, why=why or f"allowed {lo:g}–{hi:g}"))
    return out


def _confidence_scale(confidence: float, s: Settings) -> float:
    """0 at min_confidence, 1 at full confidence: leverage and size grow along it."""
    span = 1.0 - s.min_confidence
    return 1.0 if span <= 0 else min(max((confidence - s.min_confidence) / span, 0.0), 1.0)


def review(decision: Decision, ctx: ReviewContext, s: Settings) -> Review:
    """Review one decision. Pure: same input, same Review."""
    sym = decision.symbol
    feats = ctx.features.get(sym)
    inst = ctx.instruments.get(sym)
    held = ctx.positions.get(sym)

    if decision.action is Action.HOLD:
        return Review(verdict=Verdict.HOLD, decision=decision)
    if feats is None or inst is None:
        return _blocked(decision, [UNKNOWN_SYMBOL], [f"{sym} is not a configured, tradable symbol"])

    if decision.action is Action.REVERSE and not s.enable_reverse:
        closing = decision.model_copy(update={"action": Action.CLOSE})
        if held is None:
            return _blocked(closing, [REVERSE_DISABLED, NO_POSITION], [f"REVERSE→CLOSE: no {sym} position to close"])
        return Review(
            verdict=Verdict.CONVERTED,
            reasons=[REVERSE_DISABLED],
            detail=["REVERSE→CLOSE (POSITION_MANAGER_ENABLE_REVERSE=false)"],
            decision=closing,
        )
    if decision.action is Action.CLOSE:
        if held is None:
            return _blocked(decision, [NO_POSITION], [f"no {sym} position to close"])
        return Review(verdict=Verdict.EXECUTE, decision=decision)

    # An open, or an enabled REVERSE (close, then open the other side).
    reversing = decision.action is Action.REVERSE
    if reversing and held is None:
        return _blocked(decision, [NO_POSITION], [f"REVERSE: no {sym} position to reverse"])
    side: Side = ("short" if held == "long" else "long") if reversing else decision.action.side  # type: ignore[assignment]

    reasons: list[str] = []
    detail: list[str] = []
    clamps: list[Clamp] = []

    def block(code: str, text: str) -> None:
        reasons.append(code)
        detail.append(text)

    # Confirmation first: the confidence it leaves is the one judged and sized on.
    confidence, mtf = enhance.mtf_confidence(decision.confidence, side, feats, s)
    if mtf is not None:
        clamps.append(mtf)
        decision = decision.model_copy(update={"confidence": confidence})

    for b in _entry_checks(sym, side, feats, ctx, s, reversing):
        block(b.code, b.text)
    if decision.confidence < s.min_confidence:
        was = f" ({mtf.original:.2f} as proposed, before multi-timeframe confirmation)" if mtf is not None else ""
        block(LOW_CONFIDENCE, f"confidence {decision.confidence:.2f} under {s.min_confidence:g}{was}")

    final = _clamped(decision, feats, inst, s, clamps)
    floor = risk.fee_floor_pct(s)
    if final.tp_pct is not None and final.tp_pct < floor:
        # Refused, not clamped: a wider TP than the decider chose is a different trade.
        block(FEES_EXCEED_EDGE, f"FEES_EXCEED_EDGE: TP {final.tp_pct:g}% does not clear {s.fee_edge_multiple:g}× "
              f"the round trip {risk.round_trip_pct(s):.3f}% (taker fee {s.taker_fee_pct:g}% and slippage "
              f"{s.slippage_bps:g} bps, both sides) = {floor:.3f}%")
    plan, size_reasons = _size(final, side, feats, inst, ctx.balance, s)
    for code, text in size_reasons:
        block(code, text)

    if reasons:
        return Review(verdict=Verdict.BLOCKED, reasons=reasons, detail=detail, clamps=clamps, decision=final)
    return Review(verdict=Verdict.EXECUTE, clamps=clamps, decision=final, order=plan)


def _entry_checks(sym: str, side: Side, feats: SymbolFeatures, ctx: ReviewContext, s: Settings,
                  reversing: bool = False) -> list[EntryBlock]:
    """What blocks opening `side` on `sym` now, whatever the decision says (its confidence
    and size are review()'s): the one set of entry rules review() and entry_blocks() share."""
    out: list[EntryBlock] = []

    def block(code: str, text: str, until: float | None = None) -> None:
        out.append(EntryBlock(code=code, text=text, until=until))

    held = ctx.positions.get(sym)
    if ctx.paused:
        block(PAUSED, "new entries are paused")
    flying = ctx.in_flight.get(sym)
    if flying is not None:
        block(ORDER_IN_FLIGHT, f"ORDER IN FLIGHT: {sym} {flying}; no {sym} entry until it is found or can no longer land")
    cd = ctx.cooldowns.get(sym)
    if cd is not None and cd.active(ctx.now) and not reversing:
        block(COOLDOWN, f"COOLDOWN: {sym} after {cd.reason}, {int(cd.seconds_left(ctx.now))}s left", cd.until)
    if held is not None and not reversing:
        if held != side:
            block(ONE_WAY, f"ONE-WAY MODE: Cannot open {side} while {held} position exists")
        else:
            block(POSITION_OPEN, f"{sym} {held} position already open (no pyramiding)")
    open_after = len(ctx.positions) - (1 if reversing else 0)
    if open_after >= s.max_open_positions:
        block(MAX_POSITIONS, f"{open_after} positions open, at most {s.max_open_positions}")
    if ctx.balance.available < s.min_margin_usdt:
        block(
            INSUFFICIENT_MARGIN,
            f"available margin {ctx.balance.available:.2f} USDT under the minimum {s.min_margin_usdt:g}",
        )
    atr1 = feats.atr_pct_1m
    if atr1 > 0:
        if abs(feats.ret_5m_pct) > s.crash_return_atr_mult * atr1:
            block(
                CRASH_GUARD,
                f"CRASH_GUARD: 5m move {feats.ret_5m_pct:+.2f}% beyond "
                f"{s.crash_return_atr_mult:g}×ATR(1m) {atr1:.3f}%",
            )
        elif feats.last_range_1m_pct > s.crash_range_atr_mult * atr1:
            block(
                CRASH_GUARD,
                f"CRASH_GUARD: last 1m range {feats.last_range_1m_pct:.2f}% beyond "
                f"{s.crash_range_atr_mult:g}×ATR(1m) {atr1:.3f}%",
            )
    if feats.trend_1m * feats.trend_15m < 0:
        block(
            CONFLICTING_SIGNALS,
            f"CONFLICTING_SIGNALS: 1m trend {feats.trend_1m:+d} against 15m trend {feats.trend_15m:+d}",
        )
    out += risk.limit_blocks(ctx.limits, ctx.balance.equity, ctx.now, s)
    return out


def entry_blocks(symbol: str, ctx: ReviewContext, s: Settings) -> list[EntryBlock]:
    """What an OPEN of `symbol` (long or short) would meet now: cooldown, pause, an open
    position (no pyramiding, one-way), max positions, margin, crash guard, conflicting
    signals, the account-wide risk limits. Empty when nothing blocks an entry (a decision can still be refused for its
    own confidence or size). For the console's market watch; review() applies the same rules."""
    feats = ctx.features.get(symbol)
    if feats is None or symbol not in ctx.instruments:
        return [EntryBlock(code=UNKNOWN_SYMBOL, text=f"{symbol}: no market data or instrument")]
    seen: dict[tuple[str, str], EntryBlock] = {}
    held = ctx.positions.get(symbol)
    for side in (held, "short" if held == "long" else "long") if held else ("long", "short"):
        for b in _entry_checks(symbol, side, feats, ctx, s):  # type: ignore[arg-type]
            seen.setdefault((b.code, b.text), b)
    return list(seen.values())


def no_market_data(decision: Decision, why: str) -> Review:
    """Blocked: the symbol's market could not be read when the decision was to be sent."""
    return _blocked(decision, [NO_MARKET_DATA], [why])


def _blocked(decision: Decision, reasons: list[str], detail: list[str]) -> Review:
    return Review(verdict=Verdict.BLOCKED, reasons=reasons, detail=detail, decision=decision)


def _clamped(
    d: Decision, feats: SymbolFeatures, inst: Instrument, s: Settings, clamps: list[Clamp]
) -> Decision:
    """The decision with every parameter inside the allowed ranges (each change recorded)."""
    scale = _confidence_scale(d.confidence, s)
    lev_cap = min(s.leverage_min + (s.leverage_max - s.leverage_min) * scale, inst.max_leverage)
    size_cap = s.size_pct_min + (s.size_pct_max - s.size_pct_min) * scale
    conf_why = f"confidence {d.confidence:.2f} allows at most"

    if d.leverage is None:
        leverage = lev_cap
    else:
        leverage = _clamp("leverage", d.leverage, s.leverage_min, s.leverage_max, clamps)
        if leverage > lev_cap:
            clamps.append(Clamp(field="leverage", original=leverage, value=lev_cap, why=f"{conf_why} {lev_cap:.1f}x"))
            leverage = lev_cap
    # Whole leverage steps read better and Bybit accepts them on every symbol.
    leverage = float(max(math.floor(leverage), min(s.leverage_min, inst.max_leverage)))

    if d.size_pct is None:
        size_pct = size_cap
    else:
        size_pct = _clamp("size_pct", d.size_pct, s.size_pct_min, s.size_pct_max, clamps)
        if size_pct > size_cap:
            clamps.append(Clamp(field="size_pct", original=size_pct, value=size_cap, why=f"{conf_why} {size_cap:.1f}%"))
            size_pct = size_cap

    def pct_from_atr(name: str, given: float | None, mult: float, lo: float, hi: float) -> float:
        if given is not None:
            return _clamp(name, given, lo, hi, clamps)
        raw = mult * feats.atr_pct_5m
        value = min(max(raw, lo), hi)
        clamps.append(
            Clamp(field=name, original=None, value=value, why=f"missing: {mult:g}×ATR(5m) {feats.atr_pct_5m:.3f}%")
        )
        return value

    tp_pct = pct_from_atr("tp_pct", d.tp_pct, s.tp_atr_mult, s.tp_pct_min, s.tp_pct_max)
    sl_pct = pct_from_atr("sl_pct", d.sl_pct, s.sl_atr_mult, s.sl_pct_min, s.sl_pct_max)

    if d.time_in_trade_limit_sec is None:
        limit = s.default_time_in_trade_limit_sec
    else:
        limit = int(_clamp("time_in_trade_limit_sec", d.time_in_trade_limit_sec, s.time_limit_min_sec, s.time_limit_max_sec, clamps))
    # The decider's limit or the default alike: neither knew how fast this hour moves against the day.
    limit, dyn = enhance.dynamic_time_limit(limit, feats, s)
    if dyn is not None:
        clamps.append(dyn)
    if d.cooldown_sec is None:
        cooldown = min(max(s.default_cooldown_sec, s.cooldown_min_sec), s.cooldown_max_sec)
    else:
        cooldown = int(_clamp("cooldown_sec", d.cooldown_sec, s.cooldown_min_sec, s.cooldown_max_sec, clamps))

    # Trailing must arm before the take profit would fill, or it never matters.
    tp_roi = tp_pct * leverage
    if d.trail_activation_roi is None:
        trail = round(tp_roi / 2, 2)
    else:
        trail = _clamp("trail_activation_roi", d.trail_activation_roi, 0.1, tp_roi, clamps, f"allowed 0.1–{tp_roi:g} (TP's ROI)")

    return d.model_copy(
        update=dict(
            leverage=leverage,
            size_pct=round(size_pct, 4),
            tp_pct=round(tp_pct, 4),
            sl_pct=round(sl_pct, 4),
            time_in_trade_limit_sec=limit,
            cooldown_sec=cooldown,
            trail_activation_roi=trail,
        )
    )


def _size(
    d: Decision, side: Side, feats: SymbolFeatures, inst: Instrument, bal: Balance, s: Settings
) -> tuple[OrderPlan | None, list[tuple[str, str]]]:
    """Quantity from equity × size % × leverage, rounded to the instrument's filters."""
    assert d.leverage and d.size_pct and d.tp_pct and d.sl_pct
    price = feats.ask if side == "long" else feats.bid
    price = price or feats.price
    margin_budget = max(bal.equity, 0.0) * d.size_pct / 100.0
    qty = floor_to_step(margin_budget * d.leverage / price, inst.qty_step) if price > 0 else 0.0
    notional = qty * price
    if qty < inst.min_qty or notional < inst.min_notional or qty <= 0:
        return None, [
            (
                QTY_TOO_SMALL,
                f"{d.size_pct:g}% of {bal.equity:.2f} USDT at {d.leverage:g}x is {qty:g} {d.symbol}; "
                f"minimum {inst.min_qty:g} and {inst.min_notional:g} USDT notional",
            )
        ]
    margin = notional / d.leverage
    if margin > bal.available:
        return None, [
            (INSUFFICIENT_MARGIN, f"needs {margin:.2f} USDT margin, {bal.available:.2f} available")
        ]
    sign = 1 if side == "long" else -1
    tp = round_to_tick(price * (1 + sign * d.tp_pct / 100), inst.tick_size)
    sl = round_to_tick(price * (1 - sign * d.sl_pct / 100), inst.tick_size)
    if min(tp, sl) <= 0 or (tp - price) * sign <= 0 or (price - sl) * sign <= 0:
        return None, [(BAD_PRICE, f"TP {tp:g} / SL {sl:g} do not bracket {price:g} at tick {inst.tick_size:g}")]
    plan = OrderPlan(
        symbol=d.symbol,
        side=side,
        qty=qty,
        price=price,
        leverage=d.leverage,
        take_profit=tp,
        stop_loss=sl,
        margin=round(margin, 8),
        notional=round(notional, 8),
    )
    return plan, []
