"""Position bookkeeping: the metadata of our positions kept in agreement with the venue,
and every close journalled.

An open that filled becomes metadata (opened_at, its limits, its fee); a close becomes a
trade in the journal with its reason, PnL net of fees, and the symbol's cooldown. The
venue is the truth: reconcile() makes a symbol's metadata agree with the venue's position
— a position gone is journalled with the venue's reason (LATE_FILL when the closing order
was a late open of ours, netting it), a size that changed is explained by a late fill
where one is found, and a position without metadata is adopted, with the limits of the
intent whose order it turns out to be.

The executor owns the orders and their intents; this book owns what they did to the
positions. Both run in the engine's worker threads under the executor's symbol locks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.enhance import adaptive_cooldown, losing_streak
from engine.events import CooldownStarted, LogEvent, PositionClosed, PositionOpened
from engine.models import (
    ClosedTrade,
    CloseReason,
    Cooldown,
    Intent,
    IntentStatus,
    OrderInfo,
    PositionMeta,
    Trade,
    VenuePosition,
)
from engine.units import duration, same_qty
from engine.venues.base import AuthError, VenueError

if TYPE_CHECKING:
    from engine.executor import Executor

LATE_CANDIDATES = 3  # FAILED opens looked up when a position shows up without metadata


class LookupFailed(Exception):
    """The venue could not say whether an order of ours is there (the look-up failed)."""


class PositionBook:
    """What the executor's orders did to the positions, and what the venue did to them."""

    def __init__(self, executor: Executor) -> None:
        self.ex = executor
        self.store = executor.store
        self.venue = executor.venue
        self.clock = executor.clock
        self.settings = executor.settings
        self.emit = executor.emit

    def _log(self, level: str, message: str, code: str = "") -> None:
        self.emit(LogEvent(ts=self.clock.now(), level=level, message=message, code=code))  # type: ignore[arg-type]

    def _opened(self, intent: Intent, info: OrderInfo, executed: Callable[[], Intent]) -> Intent:
        """An open filled: `executed()` marks its intent EXECUTED; with the position's new
        metadata that is one durable write (what follows the ack, written once)."""
        with self.ex.exit_lock(intent.symbol):
            held = self.store.get_position(intent.symbol)
            if held is not None:
                done = executed()
                self._filled_onto(held, done, info)
                return done
            meta = self._meta_for(intent, entry=info.avg_price, qty=info.filled_qty or intent.qty, fee=info.fee)
            with self.store.batch():
                done = executed()
                self.store.put_position(meta)
        self.emit(
            PositionOpened(
                ts=self.clock.now(),
                message=f"Position opened: {meta.symbol} {meta.side} {meta.qty:g} @ {meta.entry_price:g} "
                f"[intent:{intent.intent_id}]",
                code="OPENED",
                meta=meta,
            )
        )
        return done

    def _meta_for(self, intent: Intent, *, entry: float, qty: float, fee: float = 0.0,
                  adopted: bool = False, pos: VenuePosition | None = None) -> PositionMeta:
        return PositionMeta(
            symbol=intent.symbol,
            side=intent.side,
            opened_at=self.clock.now(),
            time_in_trade_limit_sec=intent.time_in_trade_limit_sec or self.settings.default_time_in_trade_limit_sec,
            cooldown_sec=intent.cooldown_sec,
            tp_pct=intent.tp_pct,
            sl_pct=intent.sl_pct,
            take_profit=pos.take_profit if pos else intent.take_profit,
            stop_loss=pos.stop_loss if pos else intent.stop_loss,
            trail_activation_roi=intent.trail_activation_roi,
            entry_price=entry,
            qty=qty,
            leverage=(pos.leverage if pos else intent.leverage) or 1.0,
            intent_id=intent.intent_id,
            adopted=adopted,
            open_fee=fee,
            decision_id=intent.decision_id,
        )

    def _filled_onto(self, held: PositionMeta, intent: Intent, info: OrderInfo) -> None:
        """An open filled while metadata for the symbol exists (a late fill, or metadata of
        a position that closed since): make the metadata agree with the venue."""
        if held.side == intent.side and held.adopted and held.intent_id is None:
            # Adopted while this order was unknown: the position is its fill; its limits apply.
            meta = held.model_copy(update={
                "intent_id": intent.intent_id, "decision_id": intent.decision_id, "adopted": False,
                "time_in_trade_limit_sec": intent.time_in_trade_limit_sec or held.time_in_trade_limit_sec,
                "cooldown_sec": intent.cooldown_sec, "tp_pct": intent.tp_pct, "sl_pct": intent.sl_pct,
                "trail_activation_roi": intent.trail_activation_roi, "open_fee": held.open_fee or info.fee,
            })
            self.store.put_position(meta)
            self._log("warning", f"LATE FILL: the adopted {held.symbol} {held.side} is the fill of intent "
                      f"{intent.intent_id} (orderId {info.order_id}); its limits apply", "LATE_FILL")
            return
        gone = self._closes_since(held)
        if gone is not None and gone.order_link_id != intent.intent_id and gone.side == held.side \
                and same_qty(gone.qty, held.qty):
            # The tracked position closed on the venue (TP, SL, ...) before this open: its
            # metadata was stale. Journal that close, then track the new position.
            self.journal_venue_close(held)
            meta = self._meta_for(intent, entry=info.avg_price, qty=info.filled_qty or intent.qty, fee=info.fee)
            self.store.put_position(meta)
            self.emit(PositionOpened(
                ts=self.clock.now(), code="OPENED", meta=meta,
                message=f"Position opened: {meta.symbol} {meta.side} {meta.qty:g} @ {meta.entry_price:g} "
                f"[intent:{intent.intent_id}]",
            ))
            return
        self._log("warning", f"LATE FILL: {intent.symbol} {intent.kind.lower()} {intent.side} "
                  f"[intent:{intent.intent_id}] filled {info.filled_qty:g} (orderId {info.order_id}) while a "
                  f"{held.side} {held.qty:g} was tracked; reconciling with the venue", "LATE_FILL")
        try:
            pos = next((p for p in self.venue.positions() if p.symbol == intent.symbol), None)
        except VenueError as e:
            if isinstance(e, AuthError):
                raise
            self._log("warning", f"{intent.symbol}: positions unavailable ({e}); the monitor reconciles it", "LOOKUP_FAILED")
            return
        self.reconcile(intent.symbol, pos, filled=(intent, info))

    def _closed_by_us(self, intent: Intent, info: OrderInfo) -> None:
        with self.ex.exit_lock(intent.symbol):
            meta = self.store.get_position(intent.symbol)
            if meta is None:
                return  # already journalled (the monitor saw the position go first)
            reason = intent.close_reason or CloseReason.UNKNOWN
            fees = meta.open_fee + info.fee
            pnl = info.realised_pnl
            if pnl is None:  # net of fees, as the venue's own closed PnL
                sign = 1 if meta.side == "long" else -1
                pnl = (info.avg_price - meta.entry_price) * info.filled_qty * sign - fees
            self.record_close(meta, info.avg_price, pnl, reason, fees, intent.decision_id)

    def record_close(
        self,
        meta: PositionMeta,
        exit_price: float,
        pnl: float,
        reason: CloseReason,
        fees: float = 0.0,
        close_decision_id: str | None = None,
        qty: float | None = None,
        closed_at: float | None = None,
    ) -> Trade:
        """Journal a close (pnl net of fees), start the symbol's cooldown, drop the metadata.
        With qty (less than the position): a part closed; the rest stays open, no cooldown.
        closed_at: when the venue closed it, if it says (a TP seen by the next monitor pass
        closed before the pass); the trade's duration and the cooldown count from then."""
        now = self.clock.now() if closed_at is None else min(max(closed_at, meta.opened_at), self.clock.now())
        partial = qty is not None and not same_qty(qty, meta.qty) and qty < meta.qty
        closed_qty = qty if partial and qty is not None else meta.qty
        cooldown_sec = meta.cooldown_sec if meta.cooldown_sec is not None else self.settings.default_cooldown_sec
        cooldown_why = ""
        if not partial:
            # The journal says the streak so far (it survives restarts); this close extends or ends it.
            losses = losing_streak(self.store.trades(limit=200), meta.symbol) + 1 if pnl < 0 else 0
            cooldown_sec, cooldown_why = adaptive_cooldown(cooldown_sec, losses, meta.symbol, self.settings)
        margin = meta.entry_price * closed_qty / meta.leverage if meta.leverage else 0.0
        trade = Trade(
            symbol=meta.symbol,
            side=meta.side,
            qty=closed_qty,
            entry_price=meta.entry_price,
            exit_price=exit_price,
            opened_at=meta.opened_at,
            closed_at=now,
            pnl=round(pnl, 8),
            roi_pct=round(pnl / margin * 100, 4) if margin else 0.0,
            duration_sec=round(now - meta.opened_at, 3),
            reason=reason,
            leverage=meta.leverage,
            intent_id=meta.intent_id,
            adopted=meta.adopted,
            fees=round(fees, 8),
            cooldown_sec=None if partial else cooldown_sec,
            cooldown_why=cooldown_why,
            decision_id=meta.decision_id,
            close_decision_id=close_decision_id,
        )
        self.store.add_trade(trade)
        what = f"{closed_qty:g} of " if partial else ""
        self.emit(
            PositionClosed(
                ts=now,
                level="info" if pnl >= 0 else "warning",
                message=f"Position closed: {what}{meta.symbol} {meta.side} {reason.value} PnL {pnl:+.2f} USDT "
                f"(ROI {trade.roi_pct:+.2f}%) after {duration(trade.duration_sec)}",
                code=reason.value,
                trade=trade,
            )
        )
        if partial:
            rest = round(meta.qty - closed_qty, 12)
            open_fee = meta.open_fee * rest / meta.qty if meta.qty else 0.0
            self.store.put_position(meta.model_copy(update={"qty": rest, "open_fee": open_fee}))
            return trade
        cooldown = Cooldown(symbol=meta.symbol, side=meta.side, reason=reason.value, started_at=now, until=now + cooldown_sec)
        self.store.put_cooldown(cooldown)
        self.store.delete_position(meta.symbol)
        self.emit(
            CooldownStarted(
                ts=now,
                message=f"Cooldown saved for {meta.symbol} {meta.side} ({cooldown_sec}s) after {reason.value}"
                + (f" ({cooldown_why})" if cooldown_why else ""),
                code="COOLDOWN",
                cooldown=cooldown,
            )
        )
        return trade

    def reconcile(self, symbol: str, pos: VenuePosition | None,
                  filled: tuple[Intent, OrderInfo] | None = None) -> str | None:
        """Make the symbol's metadata agree with the venue's position `pos` (None: flat).
        Returns what was done: "closed", "resized", "adopted", or None. `filled` is an open
        of ours that just filled onto tracked metadata (it may be why the position changed)."""
        with self.ex.exit_lock(symbol):
            meta = self.store.get_position(symbol)
            done = None
            netter = None
            if meta is not None and (pos is None or pos.side != meta.side):
                netter = self.journal_venue_close(meta)
                meta, done = None, "closed"
            if meta is not None and pos is not None and not same_qty(pos.size, meta.qty):
                self._resized(meta, pos, filled[0] if filled else None)
                done = "resized"
            if pos is not None and self.store.get_position(symbol) is None:
                # A late open that netted the position and opened the rest the other way
                # (one-way flip), or the open that just filled: the new position is its.
                hint = next((i for i in (netter, filled[0] if filled else None)
                             if i is not None and i.side == pos.side), None)
                if self.adopt(pos, hint=hint) is not None:
                    done = done or "adopted"
            return done

    def journal_venue_close(self, meta: PositionMeta) -> Intent | None:
        """The venue closed it (TP, SL, trailing, liquidation, by hand, or netted by a late
        order of ours): journal it with the venue's reason and price. Returns the open of
        ours that netted it, if that is what happened."""
        reason, exit_price, pnl, fees = CloseReason.UNKNOWN, meta.entry_price, 0.0, meta.open_fee
        closer: Intent | None = None
        closed_at: float | None = None
        c = self._closes_since(meta)
        if c is not None:
            reason, exit_price, pnl, fees, closed_at = c.reason, c.exit_price, c.pnl, c.fees, c.closed_at
            closer = self._intent_of(c)
        netter = None
        if closer is not None and closer.kind == "OPEN" and c is not None:
            reason = CloseReason.LATE_FILL
            netter = self._late_netted(closer, c, meta)
        elif closer is not None and closer.close_reason:
            reason = closer.close_reason  # a close we sent whose answer we never saw
            if closer.status is not IntentStatus.EXECUTED:
                self.ex._save(closer, IntentStatus.EXECUTED, "found on the venue as the close of the position",
                           c.order_id if c else None)
        if reason is CloseReason.UNKNOWN:
            # A close we sent whose answer we never saw carries its own reason.
            ours = [
                i for i in self.store.intents()
                if i.kind == "CLOSE" and i.symbol == meta.symbol and i.created_at >= meta.opened_at and i.close_reason
            ]
            if ours:
                reason = max(ours, key=lambda i: i.created_at).close_reason or reason
        self._log("info", f"{meta.symbol} {meta.side} closed on the venue: {reason.value}", reason.value)
        self.record_close(meta, exit_price, pnl, reason, fees, closer.decision_id if closer is not None else None,
                          closed_at=closed_at)
        return netter

    def _closes_since(self, meta: PositionMeta) -> ClosedTrade | None:
        # An open resolved late (reconciled at start) got its metadata after it filled,
        # and may have closed before that: look back to when its intent was made.
        since = meta.opened_at
        intent = self.store.get_intent(meta.intent_id) if meta.intent_id else None
        if intent is not None:
            since = min(since, intent.created_at)
        try:
            closes = self.venue.closed_trades(meta.symbol, since=since)
        except VenueError as e:
            if isinstance(e, AuthError):
                raise
            self._log("warning", f"{meta.symbol}: closed-trade lookup failed: {e}", "LOOKUP_FAILED")
            return None
        return closes[0] if closes else None

    def _intent_of(self, c: ClosedTrade) -> Intent | None:
        """Our intent whose order made this close (by the closing order's orderLinkId)."""
        return self.store.get_intent(c.order_link_id) if c.order_link_id else None

    def _late_netted(self, intent: Intent, c: ClosedTrade, meta: PositionMeta) -> Intent:
        """An open of ours (given up on, or still unknown) landed and netted `meta`."""
        self._log(
            "warning",
            f"LATE FILL: {meta.symbol} {meta.side} {c.qty:g} netted by the late {intent.side} open "
            f"[intent:{intent.intent_id}] (orderId {c.order_id}); journalled as LATE_FILL",
            "LATE_FILL",
        )
        if intent.status is not IntentStatus.EXECUTED or intent.order_id != c.order_id:
            intent = self.ex._save(
                intent, IntentStatus.EXECUTED,
                f"its order landed late (after {intent.status.value}) and netted the {meta.side} position",
                c.order_id,
            )
        return intent

    def _resized(self, meta: PositionMeta, pos: VenuePosition, filled: Intent | None = None) -> None:
        """Same side, another size: a late fill of ours added to it or netted part of it,
        or it changed on the venue (by hand): the journal and metadata follow the venue.
        `filled`: an open of ours that just filled, the likely why."""
        if pos.size > meta.qty:
            late = filled if filled is not None and filled.side == meta.side else None
            try:
                late = late or self._late_open(pos)
            except LookupFailed as e:
                self._log("warning", f"{meta.symbol}: order look-ups fail ({e}); the size is taken from the venue",
                          "LOOKUP_FAILED")
            added = pos.size - meta.qty
            if late is not None:
                self._log("warning", f"LATE FILL: {meta.symbol} {meta.side} grew by {added:g} to {pos.size:g}: the "
                          f"late fill of [intent:{late.intent_id}] (orderId {late.order_id})", "LATE_FILL")
            else:
                self._log("warning", f"{meta.symbol} {meta.side} grew by {added:g} to {pos.size:g} on the venue "
                          "(not an order of ours)", "RESIZED")
            self.store.put_position(meta.model_copy(update={"qty": pos.size, "entry_price": pos.entry_price}))
            return
        c = self._closes_since(meta)
        closer = self._intent_of(c) if c is not None else None
        if c is not None and c.side == meta.side and same_qty(c.qty, meta.qty - pos.size):
            reason = CloseReason.LATE_FILL if closer is not None and closer.kind == "OPEN" else c.reason
            if closer is not None and closer.kind == "OPEN":
                self._late_netted(closer, c, meta)
            self.record_close(meta, c.exit_price, c.pnl, reason, c.fees,
                              closer.decision_id if closer is not None else None, qty=c.qty)
            return
        self._log("warning", f"{meta.symbol} {meta.side} shrank from {meta.qty:g} to {pos.size:g} on the venue "
                  "(no close of ours explains it)", "RESIZED")
        self.store.put_position(meta.model_copy(update={"qty": pos.size}))

    def _late_open(self, pos: VenuePosition) -> Intent | None:
        """Our open whose order turns out to be (part of) this position: a FAILED open that
        landed after all, or one still EXECUTING. It is marked EXECUTED with its order id.
        LookupFailed when a look-up that could tell failed."""
        since = self.clock.now() - self.settings.intent_ttl_sec
        candidates = sorted(
            (
                i for i in self.store.intents()
                if i.kind == "OPEN" and i.symbol == pos.symbol and i.side == pos.side
                and (i.status is IntentStatus.EXECUTING
                     or (i.status is IntentStatus.FAILED and i.order_id is None
                         and not i.reason.startswith("never sent")))
                and i.created_at >= since
            ),
            key=lambda i: i.created_at,
            reverse=True,
        )
        for intent in candidates[:LATE_CANDIDATES]:
            try:
                info = self.venue.order_by_link_id(intent.symbol, intent.intent_id)
            except VenueError as e:
                if isinstance(e, AuthError):
                    raise
                raise LookupFailed(str(e)) from None
            if info is not None and info.filled:
                was = intent.status.value
                return self.ex._save(
                    intent, IntentStatus.EXECUTED, f"its order showed up on the venue after all (was {was}); "
                    "position adopted", info.order_id,
                )
        return None

    def adopt(self, pos: VenuePosition, *, hint: Intent | None = None, force: bool = False) -> PositionMeta | None:
        """Give a position found on the venue without metadata the default time limit, or,
        when it is the (late) fill of an open of ours, that intent's limits (never reopened).

        Not adopted yet (None, said once) while an open of that symbol is in flight (it may
        be its order) or while the look-ups that would tell fail; force adopts anyway."""
        late = hint
        if late is None:
            flying = [i for i in self.ex.in_flight_intents()
                      if i.symbol == pos.symbol and i.kind == "OPEN" and i.side == pos.side]
            why = ""
            if flying:
                why = f"[intent:{flying[0].intent_id}] is in flight and may be its order"
            else:
                try:
                    late = self._late_open(pos)
                except LookupFailed as e:
                    why = f"order look-ups fail ({e}), so whether it is a late fill of ours is not known"
            if why and not force:
                self.ex._once(
                    f"adopt:{pos.symbol}:{pos.side}:{why[:20]}", "warning",
                    f"NOT ADOPTED YET: {pos.symbol} {pos.side} {pos.size:g} on the venue has no metadata; {why}. "
                    "It is adopted (with its time exit) once that is known",
                    "NOT_ADOPTED",
                )
                return None
        self.ex._said = {k for k in self.ex._said if not k.startswith(f"adopt:{pos.symbol}:")}
        if late is not None:
            meta = self._meta_for(late, entry=pos.entry_price, qty=pos.size, adopted=True, pos=pos)
        else:
            meta = PositionMeta(
                symbol=pos.symbol,
                side=pos.side,
                opened_at=self.clock.now(),
                time_in_trade_limit_sec=self.settings.default_time_in_trade_limit_sec,
                take_profit=pos.take_profit,
                stop_loss=pos.stop_loss,
                entry_price=pos.entry_price,
                qty=pos.size,
                leverage=pos.leverage,
                adopted=True,
            )
        self.store.put_position(meta)
        found = (
            f"is the late fill of intent {late.intent_id}; adopted with its limits, not opened again"
            if late
            else "found on the venue without metadata"
        )
        self._log(
            "warning",
            f"ADOPTED: {pos.symbol} {pos.side} {pos.size:g} {found}; time limit {meta.time_in_trade_limit_sec}s from now",
            "ADOPTED",
        )
        return meta
