"""The monitor pass: time exits, trailing activation, closes the venue made, adoption.

Runs every monitor interval (30 s by default) in a worker thread, and once at start
as part of reconciliation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.clock import Clock
from engine.config import Settings
from engine.events import LogEvent, PositionsUpdated
from engine.executor import Emit, Executor
from engine.guardrails import round_to_tick
from engine.models import CloseReason, IntentStatus, PositionMeta, VenuePosition
from engine.store import StateStore
from engine.venues.base import Venue, VenueError

# An EXECUTING intent the venue still does not know after this long is FAILED (a
# fresh order can take a moment to appear in Bybit's lookups). The default; the
# setting order_unknown_timeout_sec (same default) is what the engine uses.
UNKNOWN_ORDER_GRACE_SEC = 60.0


@dataclass
class MonitorReport:
    time_exits: list[str] = field(default_factory=list)
    venue_closes: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    trailing_armed: list[str] = field(default_factory=list)


class Monitor:
    def __init__(
        self, store: StateStore, venue: Venue, executor: Executor, clock: Clock, settings: Settings, emit: Emit
    ) -> None:
        self.store = store
        self.venue = venue
        self.executor = executor
        self.clock = clock
        self.settings = settings
        self.emit = emit

    def _log(self, level: str, message: str, code: str = "") -> None:
        self.emit(LogEvent(ts=self.clock.now(), level=level, message=message, code=code))  # type: ignore[arg-type]

    def run_once(self, grace_sec: float | None = None) -> MonitorReport:
        """One pass; grace_sec (default order_unknown_timeout_sec) is how long an
        EXECUTING intent the venue does not know stays in flight before it is FAILED."""
        report = MonitorReport()
        self.executor.resolve_pending(self.settings.order_unknown_timeout_sec if grace_sec is None else grace_sec)
        positions = {p.symbol: p for p in self.venue.positions()}
        metas = {m.symbol: m for m in self.store.positions()}

        for sym, meta in metas.items():
            pos = positions.get(sym)
            if pos is None or pos.side != meta.side:
                with self.executor.symbol_lock(sym):
                    if self.store.get_position(sym) is not None:
                        self._venue_closed(meta)
                        report.venue_closes.append(sym)
        for sym, pos in positions.items():
            if self.store.get_position(sym) is None:
                self.executor.adopt(pos)
                report.adopted.append(sym)

        now = self.clock.now()
        expired = []
        for sym, pos in positions.items():
            meta = self.store.get_position(sym)
            if meta is None:
                continue
            if meta.is_due(now):
                expired.append((pos, meta))
            elif not meta.trailing_armed and meta.trail_activation_roi and pos.roi_pct >= meta.trail_activation_roi:
                if self._arm_trailing(pos, meta):
                    report.trailing_armed.append(sym)
        if expired:
            self._log("warning", f"Found {len(expired)} expired positions", "TIME_EXIT")
        for pos, meta in expired:
            held = now - meta.opened_at
            self._log(
                "warning",
                f"TIME-BASED EXIT: {pos.symbol} {meta.side} - in trade for {held:.0f}s "
                f"(limit: {meta.time_in_trade_limit_sec}s)",
                "TIME_EXIT",
            )
            intent = self.executor.close(pos.symbol, CloseReason.TIME_EXIT)
            if intent is not None and intent.status is IntentStatus.EXECUTED:
                self._log("info", f"Time-based exit executed for {pos.symbol} {meta.side}", "TIME_EXIT")
                report.time_exits.append(pos.symbol)

        self.publish()
        return report

    def publish(self) -> None:
        """Send the venue's positions with their metadata to the console."""
        self.emit(
            PositionsUpdated(
                ts=self.clock.now(),
                level="debug",
                positions=self.venue.positions(),
                metas=self.store.positions(),
            )
        )

    def _venue_closed(self, meta: PositionMeta) -> None:
        """The venue closed it (TP, SL, trailing, liquidation, or by hand): journal it with
        the venue's reason and price."""
        reason, exit_price, pnl, fees = CloseReason.UNKNOWN, meta.entry_price, 0.0, meta.open_fee
        closed_at: float | None = None
        # An open resolved late (reconciled at start) got its metadata after it filled,
        # and may have closed before that: look back to when its intent was made.
        since = meta.opened_at
        intent = self.store.get_intent(meta.intent_id) if meta.intent_id else None
        if intent is not None:
            since = min(since, intent.created_at)
        try:
            closes = self.venue.closed_trades(meta.symbol, since=since)
        except VenueError as e:
            closes = []
            self._log("warning", f"{meta.symbol}: closed-trade lookup failed: {e}", "LOOKUP_FAILED")
        if closes:
            c = closes[0]
            reason, exit_price, pnl, fees, closed_at = c.reason, c.exit_price, c.pnl, c.fees, c.closed_at
        if reason is CloseReason.UNKNOWN:
            # A close we sent whose answer we never saw carries its own reason.
            ours = [
                i for i in self.store.intents()
                if i.kind == "CLOSE" and i.symbol == meta.symbol and i.created_at >= meta.opened_at and i.close_reason
            ]
            if ours:
                reason = max(ours, key=lambda i: i.created_at).close_reason or reason
        self._log("info", f"{meta.symbol} {meta.side} closed on the venue: {reason.value}", reason.value)
        self.executor.record_close(meta, exit_price, pnl, reason, fees, closed_at=closed_at)

    def _arm_trailing(self, pos: VenuePosition, meta: PositionMeta) -> bool:
        tick = 0.0
        try:
            tick = self.venue.instruments([pos.symbol])[pos.symbol].tick_size
        except (VenueError, KeyError):
            pass
        distance = round_to_tick(pos.mark_price * self.settings.trail_distance_pct / 100, tick) or tick
        try:
            with self.executor.symbol_lock(pos.symbol):
                self.venue.set_trading_stop(pos.symbol, trailing_stop=distance)
        except VenueError as e:
            self._log("error", f"TRAILING not armed for {pos.symbol}: {e}", "TRAILING_FAILED")
            return False
        self.store.put_position(meta.model_copy(update={"trailing_armed": True}))
        self._log(
            "info",
            f"TRAILING ARMED: {pos.symbol} {pos.side} ROI {pos.roi_pct:.2f}% ≥ {meta.trail_activation_roi:g}%; "
            f"stop trails {distance:g} behind the best price",
            "TRAILING",
        )
        return True
