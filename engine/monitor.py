"""The monitor pass: time exits, in-flight orders, closes the venue made, late fills,
adoption, trailing activation.

Runs every monitor interval (30 s by default) in a worker thread, and once at start as
part of reconciliation. Exits come first: a time exit that is due is sent before any
look-up of this pass, and one the venue refuses is tried again every pass (the
positions panel shows it closing) until the position is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.clock import Clock
from engine.config import Settings
from engine.events import LogEvent, PositionsUpdated
from engine.executor import Emit, Executor
from engine.units import round_to_tick, same_qty
from engine.models import CloseReason, IntentStatus, PositionMeta, VenuePosition
from engine.store import StateStore
from engine.venues.base import AuthError, Venue, VenueError


@dataclass
class MonitorReport:
    time_exits: list[str] = field(default_factory=list)
    venue_closes: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    trailing_armed: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    exits_failed: list[str] = field(default_factory=list)  # due, sent, still open: tried again next pass


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
        self.closing: set[str] = set()  # time exits due and not done yet

    def _log(self, level: str, message: str, code: str = "") -> None:
        self.emit(LogEvent(ts=self.clock.now(), level=level, message=message, code=code))  # type: ignore[arg-type]

    def run_once(self) -> MonitorReport:
        """One pass: due time exits first, then the in-flight intents, then the venue's
        positions against our metadata, then trailing."""
        report = MonitorReport()
        with self.executor.working():
            positions = {p.symbol: p for p in self.venue.positions()}
            flying = bool(self.executor.in_flight_intents())
            sent = self._time_exits(positions, report)
            self.executor.resolve_pending()
            if sent or flying:  # what the venue holds now
                positions = {p.symbol: p for p in self.venue.positions()}
            metas = {m.symbol: m for m in self.store.positions()}
            for sym in sorted(set(metas) | set(positions)):
                meta, pos = metas.get(sym), positions.get(sym)
                if meta is not None and pos is not None and pos.side == meta.side and same_qty(pos.size, meta.qty):
                    continue
                done = self.executor.book.reconcile(sym, pos)
                if done == "closed":
                    report.venue_closes.append(sym)
                    if pos is not None and self.store.get_position(sym) is not None:
                        report.adopted.append(sym)
                elif done == "resized":
                    report.resized.append(sym)
                elif done == "adopted":
                    report.adopted.append(sym)
            for sym, pos in positions.items():
                meta = self.store.get_position(sym)
                if meta is None or meta.trailing_armed or not meta.trail_activation_roi or sym in self.closing:
                    continue
                if pos.roi_pct >= meta.trail_activation_roi and self._arm_trailing(pos, meta):
                    report.trailing_armed.append(sym)
            self.closing &= set(positions)
            self.publish(list(positions.values()))
        return report

    def _time_exits(self, positions: dict[str, VenuePosition], report: MonitorReport) -> bool:
        """Close what is past its time limit. A close that fails is said, and tried again
        on the next pass; one failing never keeps the others from being sent. True when
        any was sent."""
        now = self.clock.now()
        expired: list[tuple[VenuePosition, PositionMeta]] = []
        for sym, pos in positions.items():
            meta = self.store.get_position(sym)
            if meta is not None and meta.side == pos.side and meta.is_due(now):
                expired.append((pos, meta))
        if not expired:
            return False
        self._log("warning", f"Found {len(expired)} expired positions", "TIME_EXIT")
        for pos, meta in expired:
            held = now - meta.opened_at
            again = " (again: the last attempt did not close it)" if pos.symbol in self.closing else ""
            self._log(
                "warning",
                f"TIME-BASED EXIT: {pos.symbol} {meta.side} - in trade for {held:.0f}s "
                f"(limit: {meta.time_in_trade_limit_sec}s){again}",
                "TIME_EXIT",
            )
            self.closing.add(pos.symbol)
            try:
                intent = self.executor.close(pos.symbol, CloseReason.TIME_EXIT)
            except AuthError:
                raise
            except VenueError as e:
                intent = None
                self._log("error", f"TIME EXIT {pos.symbol} not sent: {e}; tried again next pass", "TIME_EXIT_FAILED")
            if intent is not None and intent.status is IntentStatus.EXECUTED:
                self._log("info", f"Time-based exit executed for {pos.symbol} {meta.side}", "TIME_EXIT")
                report.time_exits.append(pos.symbol)
                self.closing.discard(pos.symbol)
            elif intent is not None:
                if intent.status is IntentStatus.FAILED:
                    self._log("error", f"TIME EXIT {pos.symbol} refused: {intent.reason}; tried again next pass",
                              "TIME_EXIT_FAILED")
                report.exits_failed.append(pos.symbol)
            else:
                report.exits_failed.append(pos.symbol)
        return True

    def publish(self, positions: list[VenuePosition] | None = None) -> None:
        """Send the venue's positions with their metadata to the console."""
        positions = self.venue.positions() if positions is None else positions
        held = {p.symbol for p in positions}
        self.emit(
            PositionsUpdated(
                ts=self.clock.now(),
                level="debug",
                positions=positions,
                metas=self.store.positions(),
                closing=sorted(self.closing & held),
            )
        )

    def _arm_trailing(self, pos: VenuePosition, meta: PositionMeta) -> bool:
        tick = 0.0
        try:
            tick = self.venue.instruments([pos.symbol])[pos.symbol].tick_size
        except (VenueError, KeyError):
            pass
        distance = round_to_tick(pos.mark_price * self.settings.trail_distance_pct / 100, tick) or tick
        try:
            with self.executor.exit_lock(pos.symbol):
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

