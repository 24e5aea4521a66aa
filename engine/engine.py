"""The Engine: jobs on an APScheduler AsyncIOScheduler, the approval queue, mode and
pause, the operator's commands, and an event for every step.

Everything blocking (venue calls, state writes) runs in worker threads through
asyncio.to_thread, so the event loop (and the console on it) never waits on I/O.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from engine import guardrails
from engine.clock import Clock
from engine.commands import Approve, CloseAll, Command, ForceClose, Pause, Reject, RunCycle, SetMode
from engine.config import Settings
from engine.deciders.base import Decider, InvalidDecision
from engine.events import AccountUpdated, BaseEvent, DecisionEvent, EngineState, LogEvent, UsageUpdated
from engine.executor import Executor
from engine.features import symbol_features
from engine.models import (
    Action,
    CloseReason,
    Decision,
    DecisionRecord,
    Instrument,
    Intent,
    IntentStatus,
    MarketSnapshot,
    Review,
    Verdict,
)
from engine.monitor import Monitor
from engine.store import StateStore
from engine.venues.base import AuthError, Venue, VenueError

log = logging.getLogger(__name__)

Subscriber = Callable[[BaseEvent], None]

# How long a stop waits for work in flight (a decision cycle, an order in its retries, a
# monitor pass) beyond one venue request timeout: the venue gives up its back-offs and
# look-up loops at once, so what is left is at most one request.
STOP_GRACE_SEC = 3.0


class _DropCancelled(logging.Filter):
    """A job cancelled because the engine stopped is not an error worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


class _VenueLogBridge(logging.Handler):
    """Venue modules log through Python logging (retries, resyncs, mode switches); the
    operator sees those lines in the engine's log as events."""

    def __init__(self, engine: "Engine") -> None:
        super().__init__(level=logging.INFO)
        self.engine = engine

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING else "info"
        self.engine._log(level, record.getMessage(), "VENUE")


@dataclass
class Pending:
    """A decision waiting for the operator in APPROVE mode."""

    record: DecisionRecord
    expires_at: float


class Engine:
    """Runs the trading loop and answers the operator's commands."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        venue: Venue,
        decider: Decider,
        clock: Clock,
        *,
        headless: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.venue = venue
        self.decider = decider
        self.clock = clock
        self.headless = headless
        self.mode = settings.mode
        self.paused = False
        self.degraded = ""
        self.stopping = False
        self._deciding = False  # a cycle waiting for its decider (nothing to finish for a stop)
        self._decider_down = False  # degraded by the decider: a cycle would decide nothing
        self.pending: dict[str, Pending] = {}
        self.recent: deque[BaseEvent] = deque(maxlen=1000)
        self.next_cycle_at: float | None = None
        self.last_snapshot: MarketSnapshot | None = None
        self.instruments: dict[str, Instrument] = {}
        self._subscribers: list[Subscriber] = []
        self._emit_lock = threading.Lock()
        self._cycle_lock = asyncio.Lock()
        self.scheduler: AsyncIOScheduler | None = None
        self._bridge: logging.Handler | None = None
        self._batch: list[DecisionRecord] | None = None  # a cycle's records, written together
        self.executor = Executor(store, venue, clock, settings, self.emit)
        self.monitor = Monitor(store, venue, self.executor, clock, settings, self.emit)

    # --- events -----------------------------------------------------------------

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def emit(self, event: BaseEvent) -> None:
        """Deliver an event to every subscriber, from whatever thread produced it;
        subscribers must be thread-safe (Textual's post_message is)."""
        with self._emit_lock:
            self.recent.append(event)
            for fn in list(self._subscribers):
                try:
                    fn(event)
                except Exception:  # a broken subscriber must not stop trading
                    log.exception("event subscriber failed")

    def _log(self, level: str, message: str, code: str = "") -> None:
        self.emit(LogEvent(ts=self.clock.now(), level=level, message=message, code=code))  # type: ignore[arg-type]

    def state_event(self) -> EngineState:
        if self.degraded:
            text = f"engine degraded (no new entries; exits keep running): {self.degraded}"
        else:
            text = f"engine {'paused' if self.paused else 'running'}, mode {self.mode.upper()}"
        return EngineState(
            ts=self.clock.now(),
            level="error" if self.degraded else "info",
            message=text,
            code="STATE",
            mode=self.mode,
            venue=self.venue.name,
            paused=self.paused,
            degraded=self.degraded,
            next_cycle_at=self.next_cycle_at,
        )

    def _publish_state(self) -> None:
        self.emit(self.state_event())

    # --- lifecycle --------------------------------------------------------------

    async def start(self, schedule: bool = True) -> None:
        """Reconcile with the venue, then start the jobs (schedule=False: tests drive them)."""
        self._bridge = _VenueLogBridge(self)
        logging.getLogger("engine.venues").addHandler(self._bridge)
        self._log("info", f"scalpdesk engine starting: venue {self.venue.name}, mode {self.mode.upper()}, "
                  f"decider {self.decider.name}, symbols {', '.join(self.settings.symbols)}", "START")
        await self._guard(self._reconcile)
        await self.publish_account()
        if schedule:
            self._start_scheduler()
        self._publish_state()

    def _reconcile(self) -> None:
        self.instruments = self.venue.instruments(list(self.settings.symbols))
        # A venue that cannot trade as configured (Bybit: a hedge-mode account without
        # BYBIT_HEDGE_MODE=true) says why; entries stop, exits keep working.
        ensure_mode = getattr(self.venue, "ensure_position_mode", None)
        if ensure_mode is not None:
            try:
                ensure_mode()
            except AuthError:
                raise
            except VenueError as e:  # not known now: every open asks again, exits go on
                self._log("warning", f"{e}; each open asks again", "VENUE_ERROR")
        refusal = getattr(self.venue, "refusal", "")
        if refusal:
            self._degrade(refusal)
        executing = len(self.store.intents(IntentStatus.EXECUTING))
        if executing:
            self._log("warning", f"reconciling {executing} EXECUTING intent(s) by orderLinkId", "RECONCILE")
        # An order sent just before the stop (or kill) may still land: it stays in flight,
        # and no entry of its symbol is sent, until it is found or the venue can no longer
        # take it; a late fill after that is recognised, never reopened.
        self.monitor.run_once()

    def _start_scheduler(self) -> None:
        s = self.settings
        sched = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=timezone.utc)
        common = dict(max_instances=1, coalesce=True, misfire_grace_time=None)
        sched.add_job(self.run_decision_cycle, "interval", seconds=s.decision_interval_sec, id="decision", **common)
        sched.add_job(self.run_monitor, "interval", seconds=s.monitor_interval_sec, id="monitor", **common)
        sched.add_job(self.run_cleanup, "interval", seconds=s.cleanup_interval_sec, id="cleanup", **common)
        sched.add_job(self.expire_pending, "interval", seconds=1, id="expiry", **common)
        sched.start()
        self.scheduler = sched
        self.next_cycle_at = self.clock.now() + s.decision_interval_sec

    def _next_cycle(self) -> float:
        """When the decision job fires next: the scheduler's own time when it runs the jobs
        (a cycle run by hand does not move it), else one interval from now."""
        job = self.scheduler.get_job("decision") if self.scheduler is not None else None
        if job is not None and job.next_run_time is not None:
            return job.next_run_time.timestamp()
        return self.clock.now() + self.settings.decision_interval_sec

    async def stop(self) -> None:
        """Stop taking decisions; let the work in flight finish or give up within a bounded
        time (the venue ends its back-offs and look-up loops at once); say which orders are
        left in flight (EXECUTING: the next start looks them up). The caller closes the
        store after this."""
        self.stopping = True
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()  # no new job starts; the running ones go on
        self.executor.stop()
        loop = asyncio.get_running_loop()
        until = loop.time() + STOP_GRACE_SEC + float(getattr(self.settings, "bybit_timeout_sec", 0.0))
        while self._working() and loop.time() < until:
            await asyncio.sleep(0.05)
        if self._working():
            self._log("warning", "stopped while venue work was still running; what it would have written is left "
                      "for the next start to reconcile", "STOP")
        if self.scheduler is not None and self.scheduler.running:
            logging.getLogger("apscheduler.executors.default").addFilter(_DropCancelled())
            self.scheduler.shutdown(wait=False)
        self.scheduler = None
        left = self.executor.in_flight_intents()
        if left:
            what = "; ".join(f"{i.symbol} {i.kind.lower()} {i.side} [intent:{i.intent_id}]" for i in left)
            self._log("warning", f"STOPPED with {len(left)} order(s) whose outcome is unknown, left EXECUTING: {what}; "
                      "the next start looks them up by orderLinkId", "LEFT_UNKNOWN")
        if self._bridge is not None:
            logging.getLogger("engine.venues").removeHandler(self._bridge)
            self._bridge = None
        self._log("info", "scalpdesk engine stopped", "STOP")

    async def _guard(self, fn: Callable[[], object]) -> bool:
        """Run blocking work in a thread; turn failures into log lines and health."""
        try:
            await asyncio.to_thread(fn)
            return True
        except AuthError as e:
            self._degrade(f"venue refused the keys: {e}")
        except VenueError as e:
            self._log("error", f"venue error: {e}", "VENUE_ERROR")
        except Exception as e:  # noqa: BLE001 - a job must never kill the loop
            log.exception("engine job failed")
            self._log("error", f"internal error: {type(e).__name__}: {e}", "INTERNAL")
        return False

    def _working(self) -> bool:
        """A decision cycle, an order, a monitor pass or another job still running."""
        ex = getattr(self.scheduler, "_executors", {}).get("default") if self.scheduler is not None else None
        jobs = [f for f in getattr(ex, "_pending_futures", ()) if not f.done()]
        # A cycle still waiting for its decider writes nothing once stopping: not waited for.
        waiting_for_ai = self._deciding and self._cycle_lock.locked()
        cycle = self._cycle_lock.locked() and not waiting_for_ai
        return self.executor.busy or cycle or len(jobs) > (1 if waiting_for_ai else 0)

    def _degrade(self, reason: str) -> None:
        if self.degraded == reason:
            return  # said once; every later pass would only repeat it
        self.degraded = reason
        self.paused = True
        self._log("error", f"TRADING STOPPED for new entries (exits keep running): {reason}", "DEGRADED")
        self._publish_state()

    # --- jobs -------------------------------------------------------------------

    async def run_monitor(self) -> None:
        await self._guard(self.monitor.run_once)
        await self.publish_account()

    async def run_cleanup(self) -> None:
        def work() -> None:
            counts = self.store.cleanup(self.clock.now(), self.settings.intent_ttl_sec)
            self.instruments = self.venue.instruments(list(self.settings.symbols))
            self._log("info", f"state cleanup: {counts}", "CLEANUP")

        await self._guard(work)

    async def publish_account(self) -> None:
        def work() -> AccountUpdated:
            now = self.clock.now()
            day = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            return AccountUpdated(
                ts=now,
                level="debug",
                balance=self.venue.balance(),
                realised_today=self.store.realised_pnl_since(day.timestamp()),
            )

        try:
            self.emit(await asyncio.to_thread(work))
        except VenueError as e:
            self._log("warning", f"balance unavailable: {e}", "VENUE_ERROR")

    def _snapshot(self, symbols: list[str]) -> MarketSnapshot:
        feats = {}
        for sym in symbols:
            feats[sym] = symbol_features(
                self.venue.ticker(sym),
                self.venue.klines(sym, 1, 200),
                self.venue.klines(sym, 5, 100),
                self.venue.klines(sym, 15, 100),
            )
        return MarketSnapshot(
            ts=self.clock.now(),
            symbols=feats,
            balance=self.venue.balance(),
            positions=self.venue.positions(),
            metas=self.store.positions(),
            cooldowns=[c for c in self.store.cooldowns() if c.active(self.clock.now())],
            recent_trades=self.store.trades(limit=10),
        )

    def _context(self, snap: MarketSnapshot) -> guardrails.ReviewContext:
        return guardrails.ReviewContext(
            now=self.clock.now(),
            balance=snap.balance,
            positions={p.symbol: p.side for p in snap.positions},
            cooldowns={c.symbol: c for c in snap.cooldowns},
            features=snap.symbols,
            instruments=self.instruments,
            paused=self.paused or bool(self.degraded),
            in_flight=self.executor.in_flight(),
        )

    async def run_decision_cycle(self) -> None:
        """One cycle: snapshot, decide, review, then execute, queue or record each decision.
        A cycle still running when the next is due is not started twice."""
        if self.stopping:
            return
        if self._cycle_lock.locked():
            self._log("warning", "decision cycle still running; this one is skipped", "CYCLE_SKIPPED")
            return
        async with self._cycle_lock:
            self.next_cycle_at = self._next_cycle()
            if getattr(self.venue, "refusal", ""):  # found by a re-check of the venue
                self._degrade(self.venue.refusal)  # type: ignore[attr-defined]
            self._publish_state()
            # Degraded stops entries (the guardrails see it as paused), nothing else: CLOSE
            # decisions still run, unless the decider itself is what is down.
            if self._decider_down:
                return
            try:
                snap = await asyncio.to_thread(self._snapshot, list(self.settings.symbols))
            except VenueError as e:
                if isinstance(e, AuthError):
                    self._degrade(f"venue refused the keys: {e}")
                    return  # said once by _degrade
                self._log("error", f"market snapshot failed: {e}; cycle skipped", "VENUE_ERROR")
                return
            self.last_snapshot = snap
            self._deciding = True
            try:
                result = await self.decider.decide(snap)
            except Exception as e:  # noqa: BLE001 - a decider failure holds, never trades
                self._log("error", f"decider {self.decider.name} failed: {type(e).__name__}: {e}; holding", "DECIDER_FAILED")
                return
            finally:
                self._deciding = False
            if self.stopping:
                return
            for err in result.errors:
                self._log("warning", f"decider: {err}", "DECIDER")
            usage = result.audit.get("usage")
            if isinstance(usage, dict):
                self.emit(UsageUpdated(ts=self.clock.now(), level="debug", code="USAGE", **usage))
            if result.audit.get("degraded"):
                self._decider_down = True
                self._degrade(f"decider {self.decider.name}: {result.audit['degraded']}")
            self._batch = []
            try:
                for inv in result.invalid:
                    await self._record_invalid(inv, self._audit_for(inv.symbol, result.audit), snap.ts)
                ctx = self._context(snap)
                for decision in result.decisions:
                    review = guardrails.review(decision, ctx, self.settings)
                    await self._dispose(decision, review, self._audit_for(decision.symbol, result.audit))
                    if review.actionable and review.order is not None:
                        # What this cycle already opened counts against the next decisions.
                        ctx = self._context(await asyncio.to_thread(self._refresh, snap))
            finally:
                await self._flush()
            said = [f"{d.symbol} {d.action.value}" for d in result.decisions] + [
                f"{i.symbol or 'all'} {i.code}" for i in result.invalid
            ]
            self._log("info", f"decision cycle ({self.decider.name}): {' · '.join(said) or 'no decisions'}", "CYCLE")

    async def _record_invalid(self, inv: InvalidDecision, audit: dict[str, object], ts: float) -> None:
        """Keep an unusable answer on the record (as a HOLD that was never traded)."""
        symbol = inv.symbol if inv.symbol in self.settings.symbols else self.settings.symbols[0]
        hold = Decision(symbol=symbol, action=Action.HOLD, confidence=0.0, rationale=inv.message,
                        source=self.decider.name, created_at=ts)
        where = inv.symbol or "cycle"
        record = DecisionRecord(
            decision=hold,
            status=inv.code,
            message=f"{where}: {inv.code}: {inv.message}",
            recorded_at=self.clock.now(),
            audit={**audit, "raw": inv.raw},
        )
        await self._record(record, "warning")

    def _refresh(self, snap: MarketSnapshot) -> MarketSnapshot:
        return snap.model_copy(update={"balance": self.venue.balance(), "positions": self.venue.positions()})

    async def _dispose(self, decision: Decision, review: Review, audit: dict[str, object]) -> None:
        if self.stopping:
            return  # nothing new once stopping: the store is about to close
        now = self.clock.now()
        record = DecisionRecord(decision=decision, review=review, status="PROPOSED", recorded_at=now, audit=audit)
        sym, act = decision.symbol, decision.action.value
        if review.verdict is Verdict.HOLD:
            await self._record(record.model_copy(update={"status": "HOLD", "message": decision.rationale}), "debug")
            return
        if review.verdict is Verdict.BLOCKED:
            text = "; ".join(review.detail) or review.summary()
            await self._record(
                record.model_copy(update={"status": "BLOCKED", "message": f"{sym} {act} BLOCKED: {text}"}), "warning"
            )
            return
        if self.mode == "auto":
            await self._execute(record)
        elif self.headless:
            await self._record(
                record.model_copy(update={"message": f"{sym} {act} proposed; APPROVE mode headless: not executed"}),
                "info",
            )
        else:
            # One question per symbol: a newer proposal replaces the one still waiting.
            for did, old in list(self.pending.items()):
                if old.record.decision.symbol == sym:
                    del self.pending[did]
                    od = old.record.decision
                    msg = f"{sym} {od.action.value} EXPIRED: replaced by a newer decision"
                    await self._record(old.record.model_copy(update={"status": "EXPIRED", "message": msg}), "info", update=True)
            expires = now + self.settings.approval_timeout_sec
            rec = record.model_copy(update={"status": "PENDING", "message": f"{sym} {act} waiting for approval"})
            self.pending[decision.decision_id] = Pending(rec, expires)
            await self._record(rec, "warning", expires_at=expires)

    def _audit_for(self, symbol: str | None, audit: dict[str, object]) -> dict[str, object]:
        """The cycle's audit as one symbol's record keeps it: per-symbol maps (verdicts,
        parsed answers) cut to that symbol, so history grows with symbols, not symbols²."""
        symbols = set(self.settings.symbols)
        out: dict[str, object] = {}
        for key, value in audit.items():
            if isinstance(value, dict) and value and set(value) <= symbols:
                value = {symbol: value[symbol]} if symbol in value else {}
            out[key] = value
        return out

    async def _flush(self) -> None:
        """Write the cycle's new decision records in one go (one write per history file)."""
        batch, self._batch = self._batch, None
        if batch:
            await asyncio.to_thread(self.store.add_decisions, batch)

    async def _record(self, record: DecisionRecord, level: str, expires_at: float | None = None, update: bool = False) -> None:
        if update:
            if self._batch:  # the record may still be waiting in this cycle's batch
                batch, self._batch = self._batch, []
                await asyncio.to_thread(self.store.add_decisions, batch)
            await asyncio.to_thread(self.store.update_decision, record)
        elif self._batch is not None:
            self._batch.append(record)
        else:
            await asyncio.to_thread(self.store.add_decision, record)
        self.emit(
            DecisionEvent(
                ts=self.clock.now(),
                level=level,  # type: ignore[arg-type]
                message=record.message,
                code=record.status,
                record=record,
                expires_at=expires_at,
            )
        )

    async def _execute(self, record: DecisionRecord, update: bool = False) -> None:
        review = record.review
        assert review is not None
        d = review.decision

        def work() -> tuple[str, str, str | None]:
            if d.action in (Action.CLOSE, Action.REVERSE):
                intent = self.executor.close(d.symbol, CloseReason.AI_CLOSE, d.decision_id)
                if d.action is Action.CLOSE or intent is None or intent.status is not IntentStatus.EXECUTED:
                    return _outcome(intent, f"{d.symbol} CLOSE")
            assert review.order is not None
            intent = self.executor.open(review, leg="r" if d.action is Action.REVERSE else "o")
            return _outcome(intent, f"{d.symbol} {d.action.value}")

        try:
            status, message, intent_id = await asyncio.to_thread(work)
        except AuthError as e:
            self._degrade(f"venue refused the keys: {e}")
            status, message, intent_id = "FAILED", f"{d.symbol} {d.action.value} FAILED: {e}", None
        except VenueError as e:
            status, message, intent_id = "FAILED", f"{d.symbol} {d.action.value} FAILED: {e}", None
        if review.verdict is Verdict.CONVERTED:
            message = f"{message} ({review.summary()})"
        level = "error" if status == "FAILED" else "info"
        await self._record(record.model_copy(update={"status": status, "message": message, "intent_id": intent_id}), level, update=update)
        await self.publish_account()

    async def expire_pending(self) -> None:
        now = self.clock.now()
        for did, p in list(self.pending.items()):
            if now >= p.expires_at:
                del self.pending[did]
                d = p.record.decision
                await self._record(
                    p.record.model_copy(update={"status": "EXPIRED", "message": f"{d.symbol} {d.action.value} EXPIRED without approval"}),
                    "warning",
                    update=True,
                )

    # --- commands ---------------------------------------------------------------

    async def handle(self, command: Command) -> str:
        """Carry out an operator's command; the answer is one line for the operator."""
        match command:
            case Approve(decision_id=did):
                return await self.approve(did)
            case Reject(decision_id=did):
                return await self.reject(did)
            case ForceClose(symbol=sym):
                return await self.force_close(sym)
            case CloseAll():
                return await self.close_all()
            case SetMode(mode=mode):
                return self.set_mode(mode)
            case Pause(paused=paused):
                return self.pause(paused)
            case RunCycle():
                await self.run_decision_cycle()
                return "decision cycle run"
        raise ValueError(f"unknown command {command!r}")

    async def approve(self, decision_id: str) -> str:
        p = self.pending.get(decision_id)
        if p is None:
            return f"decision {decision_id} is not pending (already handled or expired)"
        d = p.record.decision
        if self.clock.now() >= p.expires_at:
            await self.expire_pending()
            self._log("warning", f"{d.symbol} {d.action.value} has expired and cannot be approved", "EXPIRED")
            return "expired: cannot be approved"
        del self.pending[decision_id]
        # The guardrails are checked again now: the market and the account have moved.
        try:
            snap = await asyncio.to_thread(self._snapshot, [d.symbol])
        except VenueError as e:
            rec = p.record.model_copy(update={"status": "FAILED", "message": f"{d.symbol} approve failed: {e}"})
            await self._record(rec, "error", update=True)
            return rec.message
        review = guardrails.review(d, self._context(snap), self.settings)
        rec = p.record.model_copy(update={"review": review})
        if not review.actionable:
            text = "; ".join(review.detail) or review.summary()
            rec = rec.model_copy(update={"status": "BLOCKED", "message": f"{d.symbol} {d.action.value} approved but BLOCKED now: {text}"})
            await self._record(rec, "warning", update=True)
            return rec.message
        self._log("info", f"{d.symbol} {d.action.value} approved by operator", "APPROVED")
        await self._execute(rec, update=True)
        return f"{d.symbol} {d.action.value} approved"

    async def reject(self, decision_id: str) -> str:
        p = self.pending.pop(decision_id, None)
        if p is None:
            return f"decision {decision_id} is not pending"
        d = p.record.decision
        rec = p.record.model_copy(update={"status": "REJECTED", "message": f"{d.symbol} {d.action.value} REJECTED by operator"})
        await self._record(rec, "info", update=True)
        return rec.message

    async def force_close(self, symbol: str) -> str:
        self._log("warning", f"FORCE CLOSE requested for {symbol}", "FORCE_CLOSE")
        try:
            intent = await asyncio.to_thread(self.executor.close, symbol, CloseReason.FORCE_CLOSE)
        except VenueError as e:
            self._log("error", f"FORCE CLOSE {symbol} failed: {e}", "FORCE_CLOSE")
            return f"force close {symbol} failed: {e}"
        await asyncio.to_thread(self.monitor.publish)
        await self.publish_account()
        return _outcome(intent, f"{symbol} FORCE CLOSE")[1]

    async def close_all(self) -> str:
        self.pause(True)
        self._log("warning", "CLOSE ALL: closing every position; new entries paused", "CLOSE_ALL")
        positions = await asyncio.to_thread(self.venue.positions)
        answers = [await self.force_close(p.symbol) for p in positions]
        return "; ".join(answers) or "no positions to close"

    def set_mode(self, mode: str) -> str:
        if mode not in ("auto", "approve"):
            raise ValueError(f"mode must be auto or approve, not {mode!r}")
        self.mode = mode  # type: ignore[assignment]
        self._log("warning" if mode == "auto" else "info", f"mode set to {mode.upper()}", "MODE")
        self._publish_state()
        return f"mode {mode.upper()}"

    def pause(self, paused: bool) -> str:
        self.paused = paused
        self._log("warning", "new entries PAUSED (exits keep working)" if paused else "new entries resumed", "PAUSE")
        self._publish_state()
        return "paused" if paused else "resumed"


def _outcome(intent: Intent | None, what: str) -> tuple[str, str, str | None]:
    """Map an executor result to a decision status and a line for the operator."""
    if intent is None:
        return "FAILED", f"{what}: nothing to close", None
    if intent.status is IntentStatus.EXECUTED:
        return "EXECUTED", f"{what} EXECUTED [intent:{intent.intent_id}]", intent.intent_id
    if intent.status is IntentStatus.EXECUTING:
        return "EXECUTING", f"{what}: outcome unknown, being looked up [intent:{intent.intent_id}]", intent.intent_id
    return "FAILED", f"{what} FAILED: {intent.reason}", intent.intent_id
