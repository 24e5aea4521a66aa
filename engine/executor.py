"""The intent lifecycle: every order is an Intent written durably before it is sent.

An open: leverage made right first (the venue keeps it per symbol and sets it only when
it changes, nothing is written for it), then ONE durable write, the intent as it is
sent (EXECUTING, its send time, orderLinkId = intent_id), then the order. After the
answer one more durable write: EXECUTED together with the position's metadata
(StateStore.batch). A process killed between the write and the send leaves an
EXECUTING intent whose order never left: the next start looks it up by orderLinkId,
and once the landing window has passed and the look-up still misses it, it is FAILED;
nothing is ever resent blindly. PENDING (written, certainly not sent) is what older
versions wrote first; one found at start is marked FAILED.

An intent_id seen before is never sent again. An order whose outcome is unknown stays
EXECUTING, in flight, until its orderLinkId is found on the venue or it certainly cannot
land any more: the venue's own deadline (send time + the venue's landing window, never
more than order_unknown_timeout_sec), past which a look-up that works and misses it
makes it FAILED. Nothing is ever resent here. While any intent of a symbol is in flight
no entry for that symbol is sent (the guardrails' ORDER_IN_FLIGHT, fed by in_flight()).

Entries and exits of a symbol take separate locks: a close never waits behind an open's
retries or back-off, and two closes of one symbol never race into two orders (the second
finds nothing to close). Everything here is blocking (venue calls): the engine runs it in
worker threads.

What the orders did to the positions (metadata, the journal, adoption, late fills) is
kept by engine.positions.PositionBook (executor.book).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from engine.clock import Clock
from engine.config import Settings
from engine.events import BaseEvent, LogEvent
from engine.models import (
    CloseReason,
    Intent,
    IntentStatus,
    OrderInfo,
    OrderRequest,
    Review,
    bybit_side,
    new_id,
)
from engine.positions import PositionBook
from engine.store import StateStore
from engine.venues.base import AuthError, OrderRejected, OutcomeUnknown, Venue, VenueError

Emit = Callable[[BaseEvent], None]

# Orders that will not change any more (Bybit's orderStatus); anything else is in flight.
FINAL_STATUSES = {"Filled", "Cancelled", "Rejected", "PartiallyFilledCanceled", "Deactivated"}
IN_FLIGHT = (IntentStatus.PENDING, IntentStatus.EXECUTING)
# A send this soon after the recorded send time needs no new durable write (the landing
# window's settle margin covers it).
SEND_SLACK_SEC = 0.25


def intent_id_for(decision_id: str, leg: str = "o") -> str:
    """The intent id of a decision's order: the same decision always maps to the same
    id, so an approval pressed twice or a retried cycle is caught as IDEMPOTENT."""
    return f"{leg}-{decision_id.split('-', 1)[-1]}"[:36]


def _hms(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S UTC")


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
        self.book = PositionBook(self)
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
            # Leverage first: nothing is sent or written for it when it is already right
            # (the venue keeps it per symbol), and a refusal leaves no order behind.
            try:
                self.venue.set_leverage(plan.symbol, plan.leverage)
            except VenueError as e:
                now = self.clock.now()
                self._put(self._open_intent(intent_id, review, now, IntentStatus.FAILED, reason=f"set leverage: {e}"))
                self._log("error", f"ORDER FAILED {plan.symbol}: set leverage {plan.leverage:g}x refused: {e}", "ORDER_FAILED")
                if isinstance(e, AuthError):
                    raise  # the engine stops trading: no retry loop against refused keys
                return self.store.get_intent(intent_id)
            now = self.clock.now()
            intent = self._put(self._open_intent(intent_id, review, now, IntentStatus.EXECUTING, sent_at=now))
            # ^ the one durable write before the send: the intent as sent.
            self._log("info", f"Intent registered: {intent_id} for {plan.symbol} {plan.side}", "INTENT")
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

    @staticmethod
    def _open_intent(intent_id: str, review: Review, now: float, status: IntentStatus, **update: Any) -> Intent:
        plan, d = review.order, review.decision
        assert plan is not None
        return Intent(
            intent_id=intent_id,
            kind="OPEN",
            symbol=plan.symbol,
            side=plan.side,
            qty=plan.qty,
            status=status,
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
            **update,
        )

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

        def executed() -> Intent:
            return self._save(intent, IntentStatus.EXECUTED,
                              "its order landed after it was marked FAILED" if late else "", info.order_id)

        if intent.kind == "OPEN":
            return self.book._opened(intent, info, executed)
        done = executed()
        self.book._closed_by_us(done, info)
        return done


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
                self.book.adopt(pos, force=True)  # we close it: it must be on the record
            now = self.clock.now()
            intent = Intent(
                intent_id=new_id("c-"),
                kind="CLOSE",
                symbol=symbol,
                side=pos.side,
                qty=pos.size,
                status=IntentStatus.EXECUTING,
                created_at=now,
                updated_at=now,
                sent_at=now,
                close_reason=reason,
                decision_id=decision_id,
            )
            self._put(intent)  # the one durable write before the send
            request = OrderRequest(
                symbol=symbol,
                side=bybit_side(pos.side, closing=True),
                qty=pos.size,
                order_link_id=intent.intent_id,
                reduce_only=True,
                position_idx=pos.position_idx,
            )
            return self._send(intent, request)


    # --- the venue's positions and our metadata ---------------------------------


