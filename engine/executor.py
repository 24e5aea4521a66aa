"""The intent lifecycle: every order is an Intent written durably before it is sent.

PENDING (written) -> EXECUTING (written with its send time, then the order is sent with
orderLinkId = intent_id) -> EXECUTED or FAILED. An intent_id seen before is never sent
again. An order whose outcome is unknown stays EXECUTING, in flight, until its
orderLinkId is found on the venue or it certainly cannot land any more: the venue's own
deadline (send time + the venue's landing window, never more than
order_unknown_timeout_sec), past which a look-up that works and misses it makes it
FAILED. Nothing is ever resent here. While any intent of a symbol is in flight no entry
for that symbol is sent (the guardrails' ORDER_IN_FLIGHT, fed by in_flight()).

Entries and exits of a symbol take separate locks: a close never waits behind an open's
retries or back-off, and two closes of one symbol never race into two orders (the second
finds nothing to close). Everything here is blocking (venue calls): the engine runs it in
worker threads.

Position metadata follows the venue. reconcile() makes a symbol's metadata agree with the
venue's position: a position gone is journalled with the venue's reason (LATE_FILL when
the closing order was a late open of ours, netting it), a size that changed is explained
by a late fill where one is found, and a position without metadata is adopted, with the
limits of the intent whose order it turns out to be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from engine.clock import Clock
from engine.config import Settings
from engine.events import BaseEvent, CooldownStarted, LogEvent, PositionClosed, PositionOpened
from engine.models import (
    ClosedTrade,
    CloseReason,
    Cooldown,
    Intent,
    IntentStatus,
    OrderInfo,
    OrderRequest,
    PositionMeta,
    Review,
    Trade,
    VenuePosition,
    bybit_side,
    new_id,
)
from engine.store import StateStore
from engine.venues.base import AuthError, OrderRejected, OutcomeUnknown, Venue, VenueError

Emit = Callable[[BaseEvent], None]

# Orders that will not change any more (Bybit's orderStatus); anything else is in flight.
FINAL_STATUSES = {"Filled", "Cancelled", "Rejected", "PartiallyFilledCanceled", "Deactivated"}
IN_FLIGHT = (IntentStatus.PENDING, IntentStatus.EXECUTING)
# A send this soon after the recorded send time needs no new durable write (the landing
# window's settle margin covers it).
SEND_SLACK_SEC = 0.25
LATE_CANDIDATES = 3  # FAILED opens looked up when a position shows up without metadata


def intent_id_for(decision_id: str, leg: str = "o") -> str:
    """The intent id of a decision's order: the same decision always maps to the same
    id, so an approval pressed twice or a retried cycle is caught as IDEMPOTENT."""
    return f"{leg}-{decision_id.split('-', 1)[-1]}"[:36]


def fmt_duration(sec: float) -> str:
    sec = int(max(sec, 0))
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _hms(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S UTC")


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > 1e-9 * max(1.0, abs(a), abs(b))


class LookupFailed(Exception):
    """The venue could not say whether an order of ours is there (the look-up failed)."""


class Executor:
    """Places and closes orders through intents; records closes in the journal."""

    def __init__(self, store: StateStore, venue: Venue, clock: Clock, settings: Settings, emit: Emit) -> None:
        self.store = store
        self.venue = venue
        self.clock = clock
        self.settings = settings
        self.emit = emit
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._locks_guard = threading.Lock()
        # Intents in flight (PENDING or EXECUTING), kept in memory so the guardrails can
        # ask on the event loop without reading the state file.
        self._flight: dict[str, Intent] = {i.intent_id: i for i in store.intents() if i.status in IN_FLIGHT}
        self._flight_guard = threading.Lock()
        self._said: set[str] = set()  # in-flight and not-adopted notes already logged once
        self._busy = 0
        self._busy_guard = threading.Lock()
        self.stopping = False
        if hasattr(venue, "on_send"):
            venue.on_send = self._order_sent  # type: ignore[attr-defined]

    # --- locks, work, stop ----------------------------------------------------------

    def _lock(self, kind: str, symbol: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault((kind, symbol), threading.RLock())

    @contextmanager
    def entry_lock(self, symbol: str) -> Iterator[None]:
        """Serialises the opens of a symbol (the idempotency check, the send, the fill)."""
        with self._lock("entry", symbol):
            yield

    @contextmanager
    def exit_lock(self, symbol: str) -> Iterator[None]:
        """Serialises the closes of a symbol and the bookkeeping of its position."""
        with self._lock("exit", symbol):
            yield

    symbol_lock = exit_lock

    @contextmanager
    def _try_lock(self, kind: str, symbol: str) -> Iterator[bool]:
        """The lock if free now; False when another thread is working on it (never waits)."""
        lock = self._lock(kind, symbol)
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()

    @contextmanager
    def working(self) -> Iterator[None]:
        """Marks venue work in progress (the engine waits for it, bounded, when stopping)."""
        with self._busy_guard:
            self._busy += 1
        try:
            yield
        finally:
            with self._busy_guard:
                self._busy -= 1

    @property
    def busy(self) -> bool:
        return self._busy > 0

    def stop(self) -> None:
        """No new orders; the venue's back-offs and look-up loops give up now."""
        self.stopping = True
        halt = getattr(self.venue, "stop", None)
        if callable(halt):
            halt()

    # --- helpers ----------------------------------------------------------------

    def _log(self, level: str, message: str, code: str = "") -> None:
        self.emit(LogEvent(ts=self.clock.now(), level=level, message=message, code=code))  # type: ignore[arg-type]

    def _once(self, key: str, level: str, message: str, code: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._log(level, message, code)

    def _put(self, intent: Intent) -> Intent:
        self.store.put_intent(intent)
        with self._flight_guard:
            if intent.status in IN_FLIGHT:
                self._flight[intent.intent_id] = intent
            else:
                self._flight.pop(intent.intent_id, None)
        return intent

    def _latest(self, intent: Intent) -> Intent:
        """The newest version of an in-flight intent (the venue may have moved its send time)."""
        with self._flight_guard:
            return self._flight.get(intent.intent_id, intent)

    def _save(self, intent: Intent, status: IntentStatus, reason: str = "", order_id: str | None = None,
              **update: Any) -> Intent:
        intent = self._latest(intent).model_copy(
            update={
                "status": status,
                "updated_at": self.clock.now(),
                "reason": reason or intent.reason,
                "order_id": order_id or intent.order_id,
                **update,
            }
        )
        return self._put(intent)

    def _order_sent(self, link: str) -> None:
        """The venue is about to send (or send again) this order: record when, durably."""
        with self._flight_guard:
            intent = self._flight.get(link)
        if intent is None:
            return
        now = self.clock.now()
        if intent.sent_at is not None and now - intent.sent_at < SEND_SLACK_SEC:
            return
        self._put(intent.model_copy(update={"sent_at": now, "updated_at": now}))

    # --- in flight ----------------------------------------------------------------

    def land_by(self, intent: Intent) -> float:
        """When the intent's order certainly cannot land any more: its send time + the
        venue's landing window, never later than order_unknown_timeout_sec after the
        send (an order the venue acknowledged gets that whole time to show)."""
        sent = intent.sent_at if intent.sent_at is not None else intent.updated_at
        cap = self.settings.order_unknown_timeout_sec
        window = float(getattr(self.venue, "landing_window_sec", cap))
        return sent + (cap if intent.order_id else min(window, cap))

    def in_flight_intents(self) -> list[Intent]:
        with self._flight_guard:
            return sorted(self._flight.values(), key=lambda i: i.created_at)

    def in_flight(self) -> dict[str, str]:
        """Symbol -> the intent in flight on it, as a line for the operator."""
        now = self.clock.now()
        out: dict[str, str] = {}
        for i in self.in_flight_intents():
            what = f"{i.kind.lower()} {i.side} [intent:{i.intent_id}]"
            if i.status is IntentStatus.PENDING:
                out[i.symbol] = f"{what} is being sent"
            else:
                sent = i.sent_at if i.sent_at is not None else i.updated_at
                out[i.symbol] = (
                    f"{what} sent {max(now - sent, 0):.0f}s ago, outcome unknown; it may land until "
                    f"{_hms(self.land_by(i))}"
                )
        return out

    # --- opening ----------------------------------------------------------------

    def open(self, review: Review, leg: str = "o") -> Intent | None:
        """Open the position a reviewed decision describes. Returns the intent."""
        plan, d = review.order, review.decision
        if plan is None:
            raise ValueError("open() needs a review with an order plan")
        if self.stopping:
            raise OrderRejected(f"{plan.symbol} not opened: scalpdesk is stopping")
        intent_id = intent_id_for(d.decision_id, leg)
        with self.working(), self.entry_lock(plan.symbol):
            seen = self.store.get_intent(intent_id)
            if seen is not None:
                self._log("warning", f"IDEMPOTENT: intent_id={intent_id} already processed ({seen.status.value})", "IDEMPOTENT")
                return seen
            now = self.clock.now()
            intent = Intent(
                intent_id=intent_id,
                kind="OPEN",
                symbol=plan.symbol,
                side=plan.side,
                qty=plan.qty,
                created_at=now,
                updated_at=now,
                decision_id=d.decision_id,
                leverage=plan.leverage,
                take_profit=plan.take_profit,
                stop_loss=plan.stop_loss,
                time_in_trade_limit_sec=d.time_in_trade_limit_sec,
                cooldown_sec=d.cooldown_sec,
                trail_activation_roi=d.trail_activation_roi,
                tp_pct=d.tp_pct,
                sl_pct=d.sl_pct,
            )
            self._put(intent)  # durable before anything is sent
            self._log("info", f"Intent registered: {intent_id} for {plan.symbol} {plan.side}", "INTENT")
            try:
                self.venue.set_leverage(plan.symbol, plan.leverage)
            except VenueError as e:
                self._save(intent, IntentStatus.FAILED, f"set leverage: {e}")
                self._log("error", f"ORDER FAILED {plan.symbol}: set leverage {plan.leverage:g}x refused: {e}", "ORDER_FAILED")
                if isinstance(e, AuthError):
                    raise  # the engine stops trading: no retry loop against refused keys
                return self.store.get_intent(intent_id)
            intent = self._save(intent, IntentStatus.EXECUTING, sent_at=self.clock.now())
            self._log(
                "info",
                f"ORDER {plan.symbol}: side={bybit_side(plan.side).lower()} qty={plan.qty:g} "
                f"TP={plan.take_profit:g} SL={plan.stop_loss:g} lev={plan.leverage:g}x idx=0 "
                f"MaxTime={d.time_in_trade_limit_sec}s",
                "ORDER",
            )
            request = OrderRequest(
                symbol=plan.symbol,
                side=bybit_side(plan.side),
                qty=plan.qty,
                order_link_id=intent_id,
                take_profit=plan.take_profit,
                stop_loss=plan.stop_loss,
            )
            return self._send(intent, request)

    def _send(self, intent: Intent, request: OrderRequest) -> Intent:
        try:
            info = self.venue.place_order(request)
        except OrderRejected as e:
            self._log("error", f"ORDER FAILED {intent.symbol} {intent.kind.lower()}: {e}", "ORDER_FAILED")
            return self._save(intent, IntentStatus.FAILED, str(e))
        except AuthError as e:
            # Refused at the door: the order certainly was not placed.
            self._log("error", f"ORDER FAILED {intent.symbol} {intent.kind.lower()}: {e}", "ORDER_FAILED")
            self._save(intent, IntentStatus.FAILED, str(e))
            raise
        except Exception as e:  # noqa: BLE001 - anything else: the order may have left
            kind = "unknown outcome" if isinstance(e, OutcomeUnknown) else f"unexpected {type(e).__name__}"
            acked = getattr(e, "order_id", "") or None  # acknowledged by the venue, not visible yet
            intent = self._save(intent, IntentStatus.EXECUTING, order_id=acked) if acked else self._latest(intent)
            self._log(
                "warning",
                f"ORDER OUTCOME UNKNOWN {intent.symbol} [intent:{intent.intent_id}]: {kind}: {e}; "
                "looking it up by orderLinkId, never resending blindly",
                "ORDER_UNKNOWN",
            )
            if self.stopping:
                self._log(
                    "warning",
                    f"{intent.symbol} {intent.kind.lower()} [intent:{intent.intent_id}] left EXECUTING (outcome "
                    "unknown): scalpdesk is stopping; the next start looks it up by orderLinkId",
                    "LEFT_UNKNOWN",
                )
                return intent
            return self.resolve(intent)
        return self._finish(intent, info)

    def _finish(self, intent: Intent, info: OrderInfo) -> Intent:
        if info.status not in FINAL_STATUSES and not info.filled:
            self._log("info", f"order {intent.intent_id} is {info.status} on the venue; waiting for it to finish", "ORDER_PENDING")
            return self._save(intent, IntentStatus.EXECUTING, order_id=info.order_id or None)
        if not info.filled:
            why = info.reject_reason or f"order {info.status}"
            self._log("error", f"ORDER FAILED {intent.symbol} {intent.kind.lower()}: {why}", "ORDER_FAILED")
            return self._save(intent, IntentStatus.FAILED, why, info.order_id)
        late = intent.status is IntentStatus.FAILED
        intent = self._save(
            intent, IntentStatus.EXECUTED,
            "its order landed after it was marked FAILED" if late else "", info.order_id,
        )
        if intent.kind == "OPEN":
            self._opened(intent, info)
        else:
            self._closed_by_us(intent, info)
        return intent

    def _opened(self, intent: Intent, info: OrderInfo) -> None:
        with self.exit_lock(intent.symbol):
            held = self.store.get_position(intent.symbol)
            if held is not None:
                self._filled_onto(held, intent, info)
                return
            meta = self._meta_for(intent, entry=info.avg_price, qty=info.filled_qty or intent.qty, fee=info.fee)
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
                and not _differs(gone.qty, held.qty):
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

    # --- resolving unknown outcomes -----------------------------------------------

    def resolve(self, intent: Intent) -> Intent:
        """Settle an EXECUTING intent by asking the venue for its orderLinkId.

        Found: finish it as the venue says. Not found: it stays in flight while its order
        can still land (land_by); after that a look-up that works and misses it makes it
        FAILED. Never resent here."""
        intent = self._latest(intent)
        try:
            info = self.venue.order_by_link_id(intent.symbol, intent.intent_id)
        except VenueError as e:
            if isinstance(e, AuthError):
                raise
            self._log("warning", f"lookup of {intent.intent_id} failed: {e}; it stays in flight, will retry", "LOOKUP_FAILED")
            return intent
        if info is not None:
            self._log("info", f"RECONCILED: {intent.intent_id} found on the venue ({info.status})", "RECONCILED")
            return self._finish(intent, info)
        now = self.clock.now()
        until = self.land_by(intent)
        sent = intent.sent_at if intent.sent_at is not None else intent.updated_at
        if now >= until:
            why = (
                f"outcome unknown for {now - sent:.0f}s: not found on the venue by orderLinkId"
                + (f" (acknowledged as orderId {intent.order_id})" if intent.order_id else "")
                + "; it can no longer land"
            )
            self._log("error", f"ORDER FAILED {intent.symbol} [intent:{intent.intent_id}]: {why}", "ORDER_FAILED")
            return self._save(intent, IntentStatus.FAILED, why)
        self._once(
            f"flight:{intent.intent_id}", "warning",
            f"IN FLIGHT: {intent.symbol} {intent.kind.lower()} {intent.side} [intent:{intent.intent_id}] sent "
            f"{now - sent:.1f}s ago is not on the venue yet; it may still land until {_hms(until)}, so no "
            f"{intent.symbol} entry is sent until it is found or that time has passed",
            "IN_FLIGHT",
        )
        return intent

    def resolve_pending(self) -> None:
        """Settle every intent left in flight (at start, and on every monitor pass). An
        intent another thread is working on (an open in its retries) is left to it."""
        with self.working():
            for intent in self.store.intents(IntentStatus.PENDING):
                with self._try_lock("entry" if intent.kind == "OPEN" else "exit", intent.symbol) as free:
                    current = self.store.get_intent(intent.intent_id)
                    # PENDING is written before anything is sent and EXECUTING before the
                    # request: a PENDING intent nobody is working on certainly never left.
                    if free and current is not None and current.status is IntentStatus.PENDING:
                        self._save(current, IntentStatus.FAILED, "never sent (stopped before sending)")
                        self._log("warning", f"intent {intent.intent_id} was never sent; marked FAILED", "ORDER_FAILED")
            for intent in self.store.intents(IntentStatus.EXECUTING):
                if self.stopping:
                    return
                with self._try_lock("entry" if intent.kind == "OPEN" else "exit", intent.symbol) as free:
                    if not free:
                        continue
                    current = self.store.get_intent(intent.intent_id)
                    if current is not None and current.status is IntentStatus.EXECUTING:
                        self.resolve(current)

    # --- closing ----------------------------------------------------------------

    def close(self, symbol: str, reason: CloseReason, decision_id: str | None = None) -> Intent | None:
        """Close the whole position with a reduce-only market order on the position's own
        positionIdx. Exits never pass the guardrails and never wait for an entry; the
        exit lock makes a second close find nothing to close. Returns the close intent,
        or None when there was nothing to close."""
        with self.working(), self.exit_lock(symbol):
            pos = next((p for p in self.venue.positions() if p.symbol == symbol), None)
            if pos is None:
                self._log("info", f"{symbol}: no open position to close ({reason.value}); already closed", "NOTHING_TO_CLOSE")
                return None
            if self.store.get_position(symbol) is None:
                self.adopt(pos, force=True)  # we close it: it must be on the record
            now = self.clock.now()
            intent = Intent(
                intent_id=new_id("c-"),
                kind="CLOSE",
                symbol=symbol,
                side=pos.side,
                qty=pos.size,
                created_at=now,
                updated_at=now,
                close_reason=reason,
                decision_id=decision_id,
            )
            self._put(intent)
            intent = self._save(intent, IntentStatus.EXECUTING, sent_at=self.clock.now())
            request = OrderRequest(
                symbol=symbol,
                side=bybit_side(pos.side, closing=True),
                qty=pos.size,
                order_link_id=intent.intent_id,
                reduce_only=True,
                position_idx=pos.position_idx,
            )
            return self._send(intent, request)

    def _closed_by_us(self, intent: Intent, info: OrderInfo) -> None:
        with self.exit_lock(intent.symbol):
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
        partial = qty is not None and _differs(qty, meta.qty) and qty < meta.qty
        closed_qty = qty if partial and qty is not None else meta.qty
        cooldown_sec = meta.cooldown_sec if meta.cooldown_sec is not None else self.settings.default_cooldown_sec
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
                f"(ROI {trade.roi_pct:+.2f}%) after {fmt_duration(trade.duration_sec)}",
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
                message=f"Cooldown saved for {meta.symbol} {meta.side} ({cooldown_sec}s) after {reason.value}",
                code="COOLDOWN",
                cooldown=cooldown,
            )
        )
        return trade

    # --- the venue's positions and our metadata ---------------------------------

    def reconcile(self, symbol: str, pos: VenuePosition | None,
                  filled: tuple[Intent, OrderInfo] | None = None) -> str | None:
        """Make the symbol's metadata agree with the venue's position `pos` (None: flat).
        Returns what was done: "closed", "resized", "adopted", or None. `filled` is an open
        of ours that just filled onto tracked metadata (it may be why the position changed)."""
        with self.exit_lock(symbol):
            meta = self.store.get_position(symbol)
            done = None
            netter = None
            if meta is not None and (pos is None or pos.side != meta.side):
                netter = self.journal_venue_close(meta)
                meta, done = None, "closed"
            if meta is not None and pos is not None and _differs(pos.size, meta.qty):
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
                self._save(closer, IntentStatus.EXECUTED, "found on the venue as the close of the position",
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
            intent = self._save(
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
        if c is not None and c.side == meta.side and not _differs(c.qty, meta.qty - pos.size):
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
                return self._save(
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
            flying = [i for i in self.in_flight_intents()
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
                self._once(
                    f"adopt:{pos.symbol}:{pos.side}:{why[:20]}", "warning",
                    f"NOT ADOPTED YET: {pos.symbol} {pos.side} {pos.size:g} on the venue has no metadata; {why}. "
                    "It is adopted (with its time exit) once that is known",
                    "NOT_ADOPTED",
                )
                return None
        self._said = {k for k in self._said if not k.startswith(f"adopt:{pos.symbol}:")}
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
