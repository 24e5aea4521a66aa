"""Account-wide risk limits: the day's loss, the drawdown from the equity peak, the trades
of the day, and the fee floor a take profit must clear.

The arithmetic is pure (limit_blocks, fee_floor_pct) and the guardrails apply it to every
entry; RiskBook keeps what the limits remember — the day's starting equity, the day's
opens, the peak, a drawdown pause — in the state store, so a restart neither forgets a
limit that tripped nor starts the day or the peak again. The day is the UTC day of the
engine's clock (market time in a replay). None of them ever blocks an exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from engine.config import Settings
from engine.models import EntryBlock, IntentStatus, RiskState
from engine.store import StateStore
from engine.today import day_start, next_day

# Reason codes (stable: logs, the console and tests use them).
DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
MAX_DRAWDOWN = "MAX_DRAWDOWN"
MAX_TRADES_PER_DAY = "MAX_TRADES_PER_DAY"
FEES_EXCEED_EDGE = "FEES_EXCEED_EDGE"

Say = Callable[[str, str, str], None]  # (level, message, code)


def loss_pct(start: float, equity: float) -> float:
    """How far equity is below `start`, in percent of it (negative: above it)."""
    return (start - equity) / start * 100.0 if start > 0 else 0.0


def round_trip_pct(s: Settings) -> float:
    """What a round trip costs, in percent of the notional: the taker fee and the expected
    slippage, on the way in and on the way out."""
    return 2 * s.taker_fee_pct + 2 * s.slippage_bps / 100.0


def fee_floor_pct(s: Settings) -> float:
    """The smallest take profit (percent move) FEES_EXCEED_EDGE lets through; 0: off."""
    return s.fee_edge_multiple * round_trip_pct(s)


def paper_costs(s: Settings) -> dict[str, float]:
    """The paper venue's fee and slippage from the settings (sim, paper and replay fill with
    the costs FEES_EXCEED_EDGE reckons with)."""
    return {"taker_fee": s.taker_fee_pct / 100.0, "slippage_bps": s.slippage_bps}


def limit_blocks(limits: RiskState | None, equity: float, now: float, s: Settings) -> list[EntryBlock]:
    """The account-wide limits that block an entry now. Pure: the limits' memory, the
    equity (realised and unrealised) and the time in, the blocks out."""
    if limits is None:
        return []
    out: list[EntryBlock] = []
    today = limits.day == day_start(now)  # figures of an earlier day no longer count
    start = limits.day_start_equity
    if today and s.daily_loss_limit_pct > 0 and start > 0:
        lost = loss_pct(start, equity)
        if limits.daily_loss_hit or lost >= s.daily_loss_limit_pct:
            out.append(EntryBlock(
                code=DAILY_LOSS_LIMIT,
                text=f"DAILY_LOSS_LIMIT: the day's loss reached {s.daily_loss_limit_pct:g}% of its starting equity "
                     f"{start:.2f} USDT (now {equity:.2f}, {lost:+.2f}%); no new entries until 00:00 UTC",
                until=next_day(now),
            ))
    if limits.drawdown_pause:
        out.append(EntryBlock(code=MAX_DRAWDOWN, text=f"{limits.drawdown_pause}; resume (p) to trade again"))
    elif s.max_drawdown_pct > 0 and limits.peak_equity > 0:
        dd = loss_pct(limits.peak_equity, equity)
        if dd >= s.max_drawdown_pct:
            out.append(EntryBlock(code=MAX_DRAWDOWN, text=_drawdown_text(limits.peak_equity, equity, dd, s)))
    if today and s.max_trades_per_day > 0 and limits.opens_today >= s.max_trades_per_day:
        out.append(EntryBlock(
            code=MAX_TRADES_PER_DAY,
            text=f"MAX_TRADES_PER_DAY: {limits.opens_today} positions opened today, at most "
                 f"{s.max_trades_per_day}; no new entries until 00:00 UTC",
            until=next_day(now),
        ))
    return out


def _drawdown_text(peak: float, equity: float, dd: float, s: Settings) -> str:
    return (f"MAX_DRAWDOWN: equity {equity:.2f} USDT is {dd:.2f}% below its peak {peak:.2f} "
            f"(limit {s.max_drawdown_pct:g}%)")


class RiskBook:
    """The limits' memory, kept in the state store and brought up to date at each look of the
    engine at the account (every balance it publishes, every decision cycle)."""

    def __init__(self, store: StateStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._lock = threading.Lock()  # looks run on the loop's workers, opens in the executor's
        self.state = store.get_risk() or RiskState()
        # The day's count of opens is written with the next intent, not on its own (see
        # opened()): after a crash it is at least the opens whose intents are still kept.
        kept = sum(1 for i in store.intents(IntentStatus.EXECUTED)
                   if i.kind == "OPEN" and self.state.day and i.created_at >= self.state.day)
        if kept > self.state.opens_today:
            self.state = self.state.model_copy(update={"opens_today": kept})

    def limits(self) -> RiskState:
        """What the guardrails see: the state as it is now (never changed in place: every
        change is a new RiskState)."""
        return self.state

    @property
    def pause_reason(self) -> str:
        return self.state.drawdown_pause

    def _save(self, st: RiskState, durable: bool = True) -> None:
        if st != self.state:
            self.store.put_risk(st, durable=durable)
            self.state = st

    def look(self, now: float, equity: float, say: Say) -> bool:
        """Equity seen at `now`: a new UTC day starts its figures from this equity; the peak
        follows the equity up; a limit crossed is latched and said once. Returns True when
        this look paused entries (MAX_DRAWDOWN)."""
        s = self.settings
        with self._lock:
            st = self.state
            today = day_start(now)
            if st.day != today:
                st = st.model_copy(update={"day": today, "day_start_equity": equity, "opens_today": 0,
                                           "daily_loss_hit": False})
            elif st.day_start_equity <= 0:  # the day began with an open, before any look
                st = st.model_copy(update={"day_start_equity": equity})
            if equity > st.peak_equity:
                st = st.model_copy(update={"peak_equity": equity})
            lost = loss_pct(st.day_start_equity, equity)
            if s.daily_loss_limit_pct > 0 and not st.daily_loss_hit and lost >= s.daily_loss_limit_pct:
                # Latched for the day: a bounce of an open position does not re-open the door.
                st = st.model_copy(update={"daily_loss_hit": True})
                say("warning", f"DAILY_LOSS_LIMIT: equity {equity:.2f} USDT is {lost:.2f}% below the day's start "
                    f"{st.day_start_equity:.2f} (limit {s.daily_loss_limit_pct:g}%): no new entries until 00:00 UTC; "
                    "exits keep running", DAILY_LOSS_LIMIT)
            paused = False
            dd = loss_pct(st.peak_equity, equity)
            if s.max_drawdown_pct > 0 and not st.drawdown_pause and dd >= s.max_drawdown_pct:
                text = _drawdown_text(st.peak_equity, equity, dd, s)
                st = st.model_copy(update={"drawdown_pause": text, "drawdown_paused_at": now})
                say("error", f"{text}: new entries PAUSED until you resume (p); exits keep running", MAX_DRAWDOWN)
                paused = True
            self._save(st)
            return paused

    def opened(self, now: float) -> None:
        """A position opened (MAX_TRADES_PER_DAY counts it)."""
        with self._lock:
            st = self.state
            today = day_start(now)
            if st.day != today:  # the first event of a day: its starting equity comes with the next look
                st = st.model_copy(update={"day": today, "day_start_equity": 0.0, "opens_today": 0,
                                           "daily_loss_hit": False})
            # Not a write of its own on the order path (what follows the ack is written once):
            # the next intent's durable write carries it, before that order can be sent.
            self._save(st.model_copy(update={"opens_today": st.opens_today + 1}), durable=False)

    def resume(self, equity: float | None) -> str:
        """The operator resumed: a drawdown pause is lifted and the peak starts again from the
        equity now. A trader who resumes has accepted the loss so far; measuring the next
        drawdown from the old peak would pause again at the next tick, so the limit guards
        the money from here. Returns the pause lifted ("" if there was none)."""
        with self._lock:
            st = self.state
            if not st.drawdown_pause:
                return ""
            peak = equity if equity is not None and equity > 0 else st.peak_equity
            self._save(st.model_copy(update={"drawdown_pause": "", "drawdown_paused_at": None, "peak_equity": peak}))
            return st.drawdown_pause
