"""The intent lifecycle: every order is an Intent written durably before it is sent.

PENDING (written) -> EXECUTING (written, then the order is sent with
orderLinkId = intent_id) -> EXECUTED or FAILED. An intent_id seen before is never
sent again. An order whose outcome is unknown (timeout) stays EXECUTING and is
resolved by looking its orderLinkId up on the venue, never by sending blindly.

Exits and entries of one symbol are serialised by a per-symbol lock, so a force
close never races a time exit into two close orders. Everything here is blocking
(venue calls): the engine runs it in worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Iterator

from engine.clock import Clock
from engine.config import Settings
from engine.events import BaseEvent, CooldownStarted, LogEvent, PositionClosed, PositionOpened
from engine.models import (
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


def intent_id_for(decision_id: str, leg: str = "o") -> str:
    """The intent id of a decision's order: the same decision always maps to the same
    id, so an approval pressed twice or a retried cycle is caught as IDEMPOTENT."""
    return f"{leg}-{decision_id.split('-', 1)[-1]}"[:36]


def fmt_duration(sec: float) -> str:
    sec = int(max(sec, 0))
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Executor:
    """Places and closes orders through intents; records closes in the journal."""

    def __init__(self, store: StateStore, venue: Venue, clock: Clock, settings: Settings, emit: Emit) -> None:
        self.store = store
        self.venue = venue
        self.clock = clock
        self.settings = settings
        self.emit = emit
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()

    # --- helpers ----------------------------------------------------------------

    @contextmanager
    def symbol_lock(self, symbol: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(symbol, threading.RLock())
        with lock:
            yield

    def _log(self, level: str, message: str, code: str = "") -> None:
        self.emit(LogEvent(ts=self.clock.now(), level=level, message=message, code=code))  # type: ignore[arg-type]

    def _save(self, intent: Intent, status: IntentStatus, reason: str = "", order_id: str | None = None) -> Intent:
        intent = intent.model_copy(
            update={
                "status": status,
                "updated_at": self.clock.now(),
                "reason": reason or intent.reason,
                "order_id": order_id or intent.order_id,
            }
        )
        self.store.put_intent(intent)
        return intent

    # --- opening ----------------------------------------------------------------

    def open(self, review: Review, leg: str = "o") -> Intent | None:
        """Open the position a reviewed decision describes. Returns the intent."""
        plan, d = review.order, review.decision
        if plan is None:
            raise ValueError("open() needs a review with an order plan")
        intent_id = intent_id_for(d.decision_id, leg)
        with self.symbol_lock(plan.symbol):
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
            self.store.put_intent(intent)  # durable before anything is sent
            self._log("info", f"Intent registered: {intent_id} for {plan.symbol} {plan.side}", "INTENT")
            try:
                self.venue.set_leverage(plan.symbol, plan.leverage)
            except VenueError as e:
                self._save(intent, IntentStatus.FAILED, f"set leverage: {e}")
                self._log("error", f"ORDER FAILED {plan.symbol}: set leverage {plan.leverage:g}x refused: {e}", "ORDER_FAILED")
                if isinstance(e, AuthError):
                    raise  # the engine stops trading: no retry loop against refused keys
                return self.store.get_intent(intent_id)
            intent = self._save(intent, IntentStatus.EXECUTING)
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
            self._log(
                "warning",
                f"ORDER OUTCOME UNKNOWN {intent.symbol} [intent:{intent.intent_id}]: {kind}: {e}; "
                "looking it up by orderLinkId, never resending blindly",
                "ORDER_UNKNOWN",
            )
            # The venue has already spent its own bounded look-up (BybitVenue waits up to
            # order_unknown_timeout_sec); an intent that old and still unknown is FAILED.
            return self.resolve(intent, grace_sec=self.settings.order_unknown_timeout_sec)
        return self._finish(intent, info)

    def _finish(self, intent: Intent, info: OrderInfo) -> Intent:
        if info.status not in FINAL_STATUSES and not info.filled:
            self._log("info", f"order {intent.intent_id} is {info.status} on the venue; waiting for it to finish", "ORDER_PENDING")
            return intent
        if not info.filled:
            why = info.reject_reason or f"order {info.status}"
            self._log("error", f"ORDER FAILED {intent.symbol} {intent.kind.lower()}: {why}", "ORDER_FAILED")
            return self._save(intent, IntentStatus.FAILED, why, info.order_id)
        intent = self._save(intent, IntentStatus.EXECUTED, order_id=info.order_id)
        if intent.kind == "OPEN":
            self._opened(intent, info)
        else:
            self._closed_by_us(intent, info)
        return intent

    def _opened(self, intent: Intent, info: OrderInfo) -> None:
        meta = PositionMeta(
            symbol=intent.symbol,
            side=intent.side,
            opened_at=self.clock.now(),
            time_in_trade_limit_sec=intent.time_in_trade_limit_sec or self.settings.default_time_in_trade_limit_sec,
            cooldown_sec=intent.cooldown_sec,
            tp_pct=intent.tp_pct,
            sl_pct=intent.sl_pct,
            take_profit=intent.take_profit,
            stop_loss=intent.stop_loss,
            trail_activation_roi=intent.trail_activation_roi,
            entry_price=info.avg_price,
            qty=info.filled_qty or intent.qty,
            leverage=intent.leverage or 1.0,
            intent_id=intent.intent_id,
            open_fee=info.fee,
            decision_id=intent.decision_id,
        )
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

    # --- resolving unknown outcomes -----------------------------------------------

    def resolve(self, intent: Intent, grace_sec: float | None) -> Intent:
        """Settle an EXECUTING intent by asking the venue for its orderLinkId.

        Found: finish it as the venue says. Not found: FAILED once the intent is older
        than grace_sec (None: leave it EXECUTING for the next pass), never resent here.
        """
        try:
            info = self.venue.order_by_link_id(intent.symbol, intent.intent_id)
        except VenueError as e:
            if isinstance(e, AuthError):
                raise
            self._log("warning", f"lookup of {intent.intent_id} failed: {e}; will retry", "LOOKUP_FAILED")
            return intent
        if info is not None:
            self._log("info", f"RECONCILED: {intent.intent_id} found on the venue ({info.status})", "RECONCILED")
            return self._finish(intent, info)
        age = self.clock.now() - intent.updated_at
        if grace_sec is not None and age >= grace_sec:
            why = f"outcome unknown for {age:.0f}s: not found on the venue by orderLinkId"
            self._log("error", f"ORDER FAILED {intent.symbol} [intent:{intent.intent_id}]: {why}", "ORDER_FAILED")
            return self._save(intent, IntentStatus.FAILED, why)
        return intent

    def resolve_pending(self, grace_sec: float) -> None:
        """Settle every intent left in flight (at start, and on every monitor pass)."""
        for intent in self.store.intents(IntentStatus.PENDING):
            # PENDING is written before anything is sent and EXECUTING before the
            # request: a PENDING intent found later certainly never left.
            if self.clock.now() - intent.updated_at >= grace_sec:
                self._save(intent, IntentStatus.FAILED, "never sent (stopped before sending)")
                self._log("warning", f"intent {intent.intent_id} was never sent; marked FAILED", "ORDER_FAILED")
        for intent in self.store.intents(IntentStatus.EXECUTING):
            with self.symbol_lock(intent.symbol):
                current = self.store.get_intent(intent.intent_id)
                if current is not None and current.status is IntentStatus.EXECUTING:
                    self.resolve(current, grace_sec)

    # --- closing ----------------------------------------------------------------

    def close(self, symbol: str, reason: CloseReason, decision_id: str | None = None) -> Intent | None:
        """Close the whole position with a reduce-only market order. Exits never pass
        the guardrails; the per-symbol lock makes a second close find nothing to close.
        Returns the close intent, or None when there was nothing to close."""
        with self.symbol_lock(symbol):
            pos = next((p for p in self.venue.positions() if p.symbol == symbol), None)
            if pos is None:
                self._log("info", f"{symbol}: no open position to close ({reason.value}); already closed", "NOTHING_TO_CLOSE")
                return None
            if self.store.get_position(symbol) is None:
                self.adopt(pos)
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
            self.store.put_intent(intent)
            intent = self._save(intent, IntentStatus.EXECUTING)
            request = OrderRequest(
                symbol=symbol,
                side=bybit_side(pos.side, closing=True),
                qty=pos.size,
                order_link_id=intent.intent_id,
                reduce_only=True,
            )
            return self._send(intent, request)

    def _closed_by_us(self, intent: Intent, info: OrderInfo) -> None:
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
        closed_at: float | None = None,
    ) -> Trade:
        """Journal a close (pnl net of fees), start the symbol's cooldown, drop the metadata.
        closed_at: when the venue closed it, if it says (a TP seen by the next monitor pass
        closed before the pass); the cooldown counts from then."""
        now = self.clock.now() if closed_at is None else min(max(closed_at, meta.opened_at), self.clock.now())
        cooldown_sec = meta.cooldown_sec if meta.cooldown_sec is not None else self.settings.default_cooldown_sec
        margin = meta.entry_price * meta.qty / meta.leverage if meta.leverage else 0.0
        trade = Trade(
            symbol=meta.symbol,
            side=meta.side,
            qty=meta.qty,
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
            cooldown_sec=cooldown_sec,
            decision_id=meta.decision_id,
            close_decision_id=close_decision_id,
        )
        self.store.add_trade(trade)
        cooldown = Cooldown(symbol=meta.symbol, side=meta.side, reason=reason.value, started_at=now, until=now + cooldown_sec)
        self.store.put_cooldown(cooldown)
        self.store.delete_position(meta.symbol)
        self.emit(
            PositionClosed(
                ts=now,
                level="info" if pnl >= 0 else "warning",
                message=f"Position closed: {meta.symbol} {meta.side} {reason.value} PnL {pnl:+.2f} USDT "
                f"(ROI {trade.roi_pct:+.2f}%) after {fmt_duration(trade.duration_sec)}",
                code=reason.value,
                trade=trade,
            )
        )
        self.emit(
            CooldownStarted(
                ts=now,
                message=f"Cooldown saved for {meta.symbol} {meta.side} ({cooldown_sec}s) after {reason.value}",
                code="COOLDOWN",
                cooldown=cooldown,
            )
        )
        return trade

    def _late_open(self, pos: VenuePosition) -> Intent | None:
        """The FAILED open whose order showed up on the venue after all (an unknown
        outcome given up on, or a request that landed after a crash), if any."""
        since = self.clock.now() - self.settings.intent_ttl_sec
        failed = sorted(
            (
                i for i in self.store.intents(IntentStatus.FAILED)
                if i.kind == "OPEN" and i.symbol == pos.symbol and i.side == pos.side and i.order_id is None
                and i.created_at >= since and not i.reason.startswith("never sent")
            ),
            key=lambda i: i.created_at,
            reverse=True,
        )
        for intent in failed[:3]:
            try:
                info = self.venue.order_by_link_id(intent.symbol, intent.intent_id)
            except VenueError as e:
                if isinstance(e, AuthError):
                    raise
                continue
            if info is not None and info.filled:
                return self._save(
                    intent, IntentStatus.EXECUTED, "its order showed up on the venue after it was marked FAILED; "
                    "position adopted", info.order_id,
                )
        return None

    def adopt(self, pos: VenuePosition) -> PositionMeta:
        """Give a position found on the venue without metadata the default time limit,
        or, when it is the late fill of a FAILED open, that intent's limits (never reopened)."""
        late = self._late_open(pos)
        meta = PositionMeta(
            symbol=pos.symbol,
            side=pos.side,
            opened_at=self.clock.now(),
            time_in_trade_limit_sec=(late and late.time_in_trade_limit_sec) or self.settings.default_time_in_trade_limit_sec,
            cooldown_sec=late.cooldown_sec if late else None,
            tp_pct=late.tp_pct if late else None,
            sl_pct=late.sl_pct if late else None,
            take_profit=pos.take_profit,
            stop_loss=pos.stop_loss,
            trail_activation_roi=late.trail_activation_roi if late else None,
            entry_price=pos.entry_price,
            qty=pos.size,
            leverage=pos.leverage,
            intent_id=late.intent_id if late else None,
            adopted=True,
        )
        self.store.put_position(meta)
        found = (
            f"is the late fill of FAILED intent {late.intent_id}; adopted with its limits, not opened again"
            if late
            else "found on the venue without metadata"
        )
        self._log(
            "warning",
            f"ADOPTED: {pos.symbol} {pos.side} {pos.size:g} {found}; time limit {meta.time_in_trade_limit_sec}s from now",
            "ADOPTED",
        )
        return meta
