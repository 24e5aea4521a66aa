"""Pure text formatting for the panels: money, prices, countdowns, verdicts.

Kept apart from the widgets so it is testable without a screen, and so every
panel writes a number the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal

from engine.models import Action, DecisionRecord, Verdict

# Each symbol's price tick, as the engine last said (MarketUpdated): a price is written
# with the decimals of its instrument's tick. Ticks never differ between two consoles of
# one venue, so one table for the process is enough.
TICKS: dict[str, float] = {}
MINUS = "−"  # U+2212: a minus as wide as the plus, for columns of signed numbers


def clock(ts: float) -> str:
    """HH:MM:SS in UTC (the engine's clock, so snapshots are deterministic)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S")


def countdown(seconds: float | None) -> str:
    """mm:ss (h:mm:ss from an hour); never negative; '—' when unknown."""
    if seconds is None:
        return "—"
    sec = int(max(seconds, 0.0) + 0.999)  # 0.2 s left still shows 00:01
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def duration(seconds: int | float | None) -> str:
    """A time limit: 30m, 1h, 90s, 1h30m."""
    if seconds is None:
        return "—"
    sec = int(seconds)
    if sec < 60 or sec % 60:
        return f"{sec}s" if sec < 3600 else f"{sec // 3600}h{sec % 3600 // 60:02d}m"
    m = sec // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if m else f"{h}h"


def money(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+,.2f}" if signed else f"{value:,.2f}"


def pct(value: float | None, signed: bool = True, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}%" if signed else f"{value:.{digits}f}%"


def set_ticks(ticks: Mapping[str, float]) -> None:
    TICKS.update({s: t for s, t in ticks.items() if t > 0})


def tick_decimals(tick: float) -> int:
    """0.1 → 1, 0.0001 → 4, 0.5 → 1, 1 → 0."""
    exponent = Decimal(repr(tick)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def price(value: float | None, symbol: str | None = None) -> str:
    """With the decimals of the symbol's tick, thousands separated; without a known tick,
    enough decimals for the price's size, like an exchange ticker."""
    if value is None or value == 0:
        return "—"
    tick = TICKS.get(symbol) if symbol else None
    if tick:
        return f"{value:,.{tick_decimals(tick)}f}"
    a = abs(value)
    if a >= 10_000:
        return f"{value:,.1f}"
    if a >= 100:
        return f"{value:,.2f}"
    if a >= 1:
        return f"{value:,.3f}"
    return f"{value:.5g}"


def qty(value: float) -> str:
    """A quantity as given (no float noise, no exponent), thousands separated: 1,200.5."""
    d = Decimal(repr(float(value))).normalize()
    if d == d.to_integral_value():
        return f"{int(d):,}"
    return f"{d:,f}"


def signed_pct(value: float | None, digits: int = 1) -> str:
    """+1.0% / −1.0% with a true minus sign; — when unknown."""
    if value is None:
        return "—"
    text = f"{abs(value):,.{digits}f}%"
    if round(value, digits) == 0:
        return text
    return ("+" if value > 0 else MINUS) + text


def elapsed(seconds: float | None) -> str:
    """How long something lasted: 31:07, 1:02:03 (whole seconds, rounded down)."""
    if seconds is None:
        return "—"
    sec = int(max(seconds, 0.0))
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def verdict(record: DecisionRecord) -> str:
    """The guardrails' verdict: EXECUTE, BLOCKED: COOLDOWN, CONVERTED: REVERSE→CLOSE."""
    review = record.review
    if review is None:
        return record.status
    if review.verdict is Verdict.CONVERTED:
        return f"CONVERTED: {record.decision.action.value}→{review.decision.action.value}"
    if review.reasons:
        return f"{review.verdict.value}: {', '.join(review.reasons)}"
    return review.verdict.value


def reasons(record: DecisionRecord) -> str:
    """Reason codes, clamps and the decider's flags, one short line."""
    parts: list[str] = []
    review = record.review
    if review is not None:
        if review.verdict is Verdict.CONVERTED:
            parts.extend(review.reasons)
        if review.clamps:
            fields = ", ".join(dict.fromkeys(c.field for c in review.clamps))
            parts.append(f"clamped {fields}")
    parts.extend(f"⚑{f}" for f in record.decision.flags)
    return "; ".join(parts) or "—"


def _tail(message: str, marker: str) -> str:
    i = message.find(marker)
    return message[i + len(marker):].strip() if i >= 0 else message


def outcome(record: DecisionRecord) -> str:
    """What became of a decision, as the history shows it."""
    status = record.status
    review = record.review
    converted = review is not None and review.verdict is Verdict.CONVERTED
    if status == "EXECUTED":
        if converted:
            return f"EXECUTED (CONVERTED: {record.decision.action.value}→{review.decision.action.value})"  # type: ignore[union-attr]
        return "EXECUTED"
    if status == "BLOCKED":
        codes = ", ".join(review.reasons) if review is not None and review.reasons else _tail(record.message, "BLOCKED")
        return f"BLOCKED: {codes}"
    if status == "REJECTED":
        return "REJECTED by operator"
    if status == "EXPIRED":
        return "EXPIRED (not approved in time)"
    if status == "FAILED":
        return f"FAILED: {_tail(record.message, 'FAILED:')}"
    if status == "EXECUTING":
        return "EXECUTING: outcome unknown, being looked up"
    if status == "PENDING":
        return "PENDING (not answered before a restart)"
    if status == "PROPOSED":
        return "PROPOSED (not executed)"
    return f"{status}: {record.message}" if record.message else status


def outcome_kind(record: DecisionRecord) -> str:
    """good, bad, warn or quiet: picks the colour of an outcome."""
    status = record.status
    if status == "EXECUTED":
        return "good"
    if status in ("FAILED",) or status.startswith("LLM_"):
        return "bad"
    if status in ("BLOCKED", "EXPIRED", "EXECUTING", "PENDING"):
        return "warn"
    return "quiet"


def size_lev(record: DecisionRecord) -> str:
    d = record.review.decision if record.review is not None else record.decision
    if not d.action.opens and d.action is not Action.REVERSE:
        return "—"
    size = f"{d.size_pct:,.1f}%" if d.size_pct is not None else "auto"
    lev = f"{d.leverage:g}x" if d.leverage is not None else "auto"
    return f"{size} × {lev}"


def tp_sl(record: DecisionRecord) -> str:
    d = record.review.decision if record.review is not None else record.decision
    if d.tp_pct is None and d.sl_pct is None:
        return "—"
    # TP as the gain it takes, SL as the loss it cuts, whatever the side.
    tp = signed_pct(d.tp_pct) if d.tp_pct is not None else "ATR"
    sl = signed_pct(-d.sl_pct) if d.sl_pct is not None else "ATR"
    return f"{tp} / {sl}"


def time_limit(record: DecisionRecord) -> str:
    d = record.review.decision if record.review is not None else record.decision
    return duration(d.time_in_trade_limit_sec) if d.action.opens else "—"


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
