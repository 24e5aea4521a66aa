"""The Engine: its jobs on the engine's timers, the decision cycle, mode and pause, the
operator's commands, and an event for every step. The approval queue, the decision
journal, the market and today's figures live in their own modules.

Everything blocking (venue calls, state writes) runs in worker threads through
asyncio.to_thread, so the event loop (and the console on it) never waits on I/O; a
replay (inline_io) calls it directly, as there is nothing else on its loop.

Every timer runs on the injected Clock (engine.timers): the decision cycle, the
monitor backstop, cleanup, each position's time exit, each pending decision's
approval expiry and the UTC day, so a replay and a simulated market at --speed N
keep the same time as the market they trade.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from engine import guardrails
from engine.approvals import ApprovalQueue, Pending
from engine.clock import Clock
from engine.commands import Approve, CloseAll, Command, CommandResult, ForceClose, Pause, Reject, RunCycle, SetMode
from engine.config import Settings
from engine.deciders.base import Decider, InvalidDecision
from engine.events import (
    AccountUpdated,
    BaseEvent,
    BlocksUpdated,
    CooldownStarted,
    EngineState,
    LogEvent,
    MarketUpdated,
    PositionClosed,
    PositionOpened,
)
from engine.decision_log import DecisionLog
from engine.executor import Executor
from engine.market import Markets
from engine.models import (
    Action,
    Balance,
    CloseReason,
    Decision,
    DecisionRecord,
    DecisionStatus,
    EntryBlock,
    Instrument,
    Intent,
    IntentStatus,
    MarketSnapshot,
    Review,
    SymbolFeatures,
    Verdict,
)
from engine.monitor import Monitor
from engine.risk import RiskBook
from engine.store import StateStore
from engine.timers import Timers, timers_for
from engine.today import Today, next_day
from engine.venues.base import AuthError, Venue, VenueError

if TYPE_CHECKING:
    from engine.marks import LiveMarks, LivePicture

log = logging.getLogger(__name__)

Subscriber = Callable[[BaseEvent], None]
T = TypeVar("T")

# What a console attaching gets besides the state: events whose newest says it all, the
# newest decisions (the pending ones among them) and log lines.
LAST_OF_KIND = {"account", "usage", "market", "positions"}
REPLAYED_AS_STATE = LAST_OF_KIND | {"state", "decision"}
REPLAY_LOG_LINES = 200

# Among jobs due at the same moment, exits run before anything else.
EXITS_FIRST, CYCLE, HOUSEKEEPING = 0, 5, 10

# How long a stop waits for work in flight (a decision cycle, an order in its retries, a
# monitor pass) beyond one venue request timeout: the venue gives up its back-offs and
# look-up loops at once, so what is left is at most one request.
STOP_GRACE_SEC = 3.0

# An AUTO entry decided on a market older than this (market seconds: the decider took its
# time, as a model does) is reviewed again on the market now before it is sent (_repriced).
# The rule decider answers in a millisecond, and a replay's clock stands still while it decides.
REPRICE_AFTER_SEC = 1.0


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


__all__ = ["Engine", "Pending"]


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
        timers: Timers | None = None,
        inline_io: bool = False,
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
        self.recent: deque[BaseEvent] = deque(maxlen=1000)
        self.next_cycle_at: float | None = None
        self.last_snapshot: MarketSnapshot | None = None
        self.instruments: dict[str, Instrument] = {}
        self.market = Markets(venue, self._log)
        self.timers = timers if timers is not None else timers_for(clock)
        self.pending = ApprovalQueue(self.timers, self.expire_pending)
        self.inline_io = inline_io
        self._subscribers: list[Subscriber] = []
        self._emit_lock = threading.RLock()
        self.seq = 0  # events emitted
        self.consoles = 0  # consoles attached (the service counts them): someone can approve
        self._last: dict[str, BaseEvent] = {}  # the newest event of each LAST_OF_KIND
        self._cycle_lock = asyncio.Lock()
        self._monitor_lock = asyncio.Lock()
        self._exits_armed: dict[str, float] = {}  # symbol -> due time of its armed time exit
        self._loop: asyncio.AbstractEventLoop | None = None
        self.today = Today(clock.now())
        self._bridge: logging.Handler | None = None
        self.decisions = DecisionLog(store, clock, self.emit, self._io)
        self._balance: Balance | None = None  # the last balance published
        self._blocks_sent: object = None  # what the last entry blocks said (see _publish_blocks)
        self.executor = Executor(store, venue, clock, settings, self.emit)
        self.monitor = Monitor(store, venue, self.executor, clock, settings, self.emit)
        self.marks: LiveMarks | None = None  # once started: marks that tick, venue-side closes seen at once
        self.risk = RiskBook(store, settings)  # the account-wide limits' memory (survives restarts)

    # --- events -----------------------------------------------------------------

    def subscribe(self, fn: Subscriber) -> None:
        """Listen to every event from now on (called in whatever thread emits)."""
        with self._emit_lock:
            self._subscribers.append(fn)

    def attach(self, fn: Subscriber) -> tuple[int, list[BaseEvent]]:
        """Subscribe, and get what a console needs to show the desk as it is (state,
        account, market, positions, cooldowns, the last decisions with the pending ones,
        the last log lines) with the count of events emitted so far, taken together
        with the subscription: no event is lost or seen twice."""
        with self._emit_lock:
            self._subscribers.append(fn)
            return self.seq, self._replay()

    def unsubscribe(self, fn: Subscriber) -> None:
        with self._emit_lock:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

    def _replay(self) -> list[BaseEvent]:
        now = self.clock.now()
        out: list[BaseEvent] = [self.state_event()]
        out += [self._last[k] for k in ("account", "usage", "market", "positions") if k in self._last]
        out += [CooldownStarted(ts=c.started_at, level="debug", code="COOLDOWN", cooldown=c,
                                message=f"cooldown {c.symbol} until {c.until:.0f}")
                for c in self.store.cooldowns() if c.active(now)]
        for event in self.decisions.newest():
            pending = self.pending.get(event.record.decision.decision_id)
            out.append(event.model_copy(update={"expires_at": pending.expires_at if pending else None}))
        lines = [e for e in self.recent if e.level != "debug" and e.kind not in REPLAYED_AS_STATE]
        out += [LogEvent(ts=e.ts, level=e.level, message=e.message, code=e.code) for e in lines[-REPLAY_LOG_LINES:]]
        return out

    def emit(self, event: BaseEvent) -> None:
        """Deliver an event to every subscriber, from whatever thread produced it;
        subscribers must be thread-safe (Textual's post_message is)."""
        with self._emit_lock:
            self.seq += 1
            if isinstance(event, PositionClosed):
                self.today.count(event.trade.closed_at, event.trade.pnl, self.clock.now())
            if isinstance(event, PositionOpened) and not event.meta.adopted:
                self.risk.opened(self.clock.now())  # MAX_TRADES_PER_DAY counts our opens
            if isinstance(event, (PositionOpened, PositionClosed)):
                self._soon(self._arm_exits)  # whoever opened or closed it, its exit timer follows
            if event.kind in LAST_OF_KIND:
                self._last[event.kind] = event
            self.recent.append(event)
            for fn in list(self._subscribers):
                try:
                    fn(event)
                except Exception:  # a broken subscriber must not stop trading
                    log.exception("event subscriber failed")

    def _log(self, level: str, message: str, code: str = "") -> None:
        self.emit(LogEvent(ts=self.clock.now(), level=level, message=message, code=code))  # type: ignore[arg-type]

    def log_line(self, level: str, message: str, code: str = "") -> None:
        """A line in the engine's log (for the service and the runners around it)."""
        self._log(level, message, code)

    def state_event(self) -> EngineState:
        why = self.risk.pause_reason
        if self.degraded:
            text = f"engine degraded (no new entries; exits keep running): {self.degraded}"
        elif why and not self.paused:
            text = f"engine paused by a risk limit, mode {self.mode.upper()}: {why}"
        else:
            text = f"engine {'paused' if self.paused else 'running'}, mode {self.mode.upper()}"
        return EngineState(
            ts=self.clock.now(),
            level="error" if self.degraded else "info",
            message=text,
            code="STATE",
            mode=self.mode,
            venue=self.venue.name,
            paused=self.paused or bool(why),
            degraded=self.degraded,
            pause_reason=why,
            next_cycle_at=self.next_cycle_at,
            ticks={s: i.tick_size for s, i in self.instruments.items()},
            feed=self.marks.status if self.marks is not None else "",
        )

    def _publish_state(self) -> None:
        self.emit(self.state_event())

    def _soon(self, fn: Callable[[], object]) -> None:
        """Run fn on the engine's loop: now if this is it, else as soon as it can."""
        loop = self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking work (venue, state files): in a worker thread, or inline in a replay."""
        if self.inline_io:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    # --- lifecycle --------------------------------------------------------------

    async def start(self, schedule: bool = True) -> None:
        """Reconcile with the venue, arm the timers, then let them fire (schedule=False:
        the jobs are armed but a test or a replay drives them)."""
        self._loop = asyncio.get_running_loop()
        self._bridge = _VenueLogBridge(self)
        logging.getLogger("engine.venues").addHandler(self._bridge)
        self._log("info", f"scalpdesk engine starting: venue {self.venue.name}, mode {self.mode.upper()}, "
                  f"decider {self.decider.name}, symbols {', '.join(self.settings.symbols)}", "START")
        await self._guard(self._reconcile)
        await self._io(self.today.rebuild, self.store, self.clock.now())
        await self._io(self.decisions.load, set(self.pending))
        if self.risk.pause_reason:
            self._log("warning", f"new entries are PAUSED since before this start: {self.risk.pause_reason}; "
                      "resume (p) to trade again", "MAX_DRAWDOWN")
        await self.publish_account()
        self._arm_jobs()
        self._arm_exits()
        if schedule:
            self.timers.start()
        if schedule and not self.inline_io and self.clock.rate is not None:
            # Marks that tick and venue-side closes seen at once: never in a replay or a driven test.
            from engine.marks import LiveMarks

            self.marks = LiveMarks.for_engine(self)
            if self.marks is not None:
                self.market.pushed = self.marks.closed_1m
                self.marks.start()
        self.next_cycle_at = self.timers.due("decision")
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

    def _arm_jobs(self) -> None:
        """The recurring jobs, on the engine's clock. The monitor is the backstop of the
        one-shot time exits (a close the venue refused is retried on its next pass)."""
        s, t = self.settings, self.timers
        t.every("monitor", s.monitor_interval_sec, self.run_monitor, priority=EXITS_FIRST)
        t.every("decision", s.decision_interval_sec, self.run_decision_cycle, priority=CYCLE)
        t.every("cleanup", s.cleanup_interval_sec, self.run_cleanup, priority=HOUSEKEEPING)
        self._arm_day()

    def _arm_day(self) -> None:
        self.timers.at("day", next_day(self.today.day), self._new_day, priority=HOUSEKEEPING)

    async def _new_day(self) -> None:
        """00:00 UTC: today's figures start again."""
        self.today.roll(self.clock.now())
        self._arm_day()
        await self.publish_account()

    def _arm_exits(self) -> None:
        """One time exit per open position at opened_at + its limit (armed on open, on
        adoption and at start; a position gone takes its timer with it)."""
        held = {m.symbol: m.due_at for m in self.store.positions()}
        for sym in list(self._exits_armed):
            if sym not in held:
                self.timers.cancel(f"exit:{sym}")
                del self._exits_armed[sym]
        for sym, due in held.items():
            if self._exits_armed.get(sym) != due:
                self._exits_armed[sym] = due
                self.timers.at(f"exit:{sym}", due, functools.partial(self._time_exit, sym), priority=EXITS_FIRST)

    async def _time_exit(self, symbol: str) -> None:
        """A position's time is up: a monitor pass closes it (and, if the venue refuses,
        the next passes retry)."""
        await self.run_monitor()

    async def stop(self) -> None:
        """Stop taking decisions; let the work in flight finish or give up within a bounded
        time (the venue ends its back-offs and look-up loops at once); say which orders are
        left in flight (EXECUTING: the next start looks them up). The caller closes the
        store after this."""
        self.stopping = True
        self.timers.pause()  # no new job starts; the running ones go on
        if self.marks is not None:
            await self.marks.stop()  # no more ticks or pushes; a pass it started finishes below
        self.executor.stop()
        loop = asyncio.get_running_loop()
        until = loop.time() + STOP_GRACE_SEC + float(getattr(self.settings, "bybit_timeout_sec", 0.0))
        while self._working() and loop.time() < until:
            await asyncio.sleep(0.05)
        if self._working():
            self._log("warning", "stopped while venue work was still running; what it would have written is left "
                      "for the next start to reconcile", "STOP")
        logging.getLogger("apscheduler.executors.default").addFilter(_DropCancelled())
        self.timers.stop()
        left = self.executor.in_flight_intents()
        if left:
            what = "; ".join(f"{i.symbol} {i.kind.lower()} {i.side} [intent:{i.intent_id}]" for i in left)
            self._log("warning", f"STOPPED with {len(left)} order(s) whose outcome is unknown, left EXECUTING: {what}; "
                      "the next start looks them up by orderLinkId", "LEFT_UNKNOWN")
        close = getattr(self.venue, "close", None)
        if close is not None:  # a paper venue saves its account
            try:
                await self._io(close)
            except Exception:  # noqa: BLE001 - stopping goes on
                log.exception("venue close failed")
        if self._bridge is not None:
            logging.getLogger("engine.venues").removeHandler(self._bridge)
            self._bridge = None
        self._log("info", "scalpdesk engine stopped", "STOP")

    async def _guard(self, fn: Callable[[], object]) -> bool:
        """Run blocking work off the loop; turn failures into log lines and health."""
        try:
            await self._io(fn)
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
        # A cycle still waiting for its decider writes nothing once stopping: not waited for.
        waiting_for_ai = self._deciding and self._cycle_lock.locked()
        cycle = self._cycle_lock.locked() and not waiting_for_ai
        return self.executor.busy or cycle or self.timers.busy > (1 if waiting_for_ai else 0)

    def _degrade(self, reason: str) -> None:
        if self.degraded == reason:
            return  # said once; every later pass would only repeat it
        self.degraded = reason
        self.paused = True
        self._log("error", f"TRADING STOPPED for new entries (exits keep running): {reason}", "DEGRADED")
        self._publish_state()

    # --- jobs -------------------------------------------------------------------

    async def run_monitor(self, began: Callable[[], None] | None = None) -> None:
        """A monitor pass; never two at once (a time exit due during a pass waits for it).
        began: called once the pass has the lock, before it reads the venue."""
        async with self._monitor_lock:
            if began is not None:
                began()
            await self._guard(self.monitor.run_once)
            self._arm_exits()
            await self.publish_account()

    async def run_cleanup(self) -> None:
        def work() -> None:
            counts = self.store.cleanup(self.clock.now(), self.settings.intent_ttl_sec)
            self.instruments = self.venue.instruments(list(self.settings.symbols))
            self._log("info", f"state cleanup: {counts}", "CLEANUP")

        await self._guard(work)

    async def publish_account(self) -> None:
        try:
            balance = await self._io(self.venue.balance)
        except VenueError as e:
            self._log("warning", f"balance unavailable: {e}", "VENUE_ERROR")
            return
        now = self.clock.now()
        self.today.roll(now)
        self._balance = balance
        await self._look_risk(balance.equity)
        self.emit(AccountUpdated(ts=now, level="debug", balance=balance, realised_today=self.today.pnl,
                                 trades_today=self.today.trades))
        self._publish_blocks()

    async def _look_risk(self, equity: float) -> None:
        """The risk limits see the equity now (a new day's start, the peak, a limit crossed)."""
        if await self._io(self.risk.look, self.clock.now(), equity, self._log):
            self._publish_state()  # MAX_DRAWDOWN paused entries: the status bar says so

    # --- the market -----------------------------------------------------------------

    def _snapshot(self, symbols: list[str]) -> MarketSnapshot:
        """The market and the account now, from the venue."""
        return self._snapshot_of(symbols, None)

    def _recheck_snapshot(self, symbols: list[str]) -> MarketSnapshot:
        """For an approval's second look: from the live streams where they keep it all
        (LiveMarks.picture), so no REST round trip is waited on; else from the venue."""
        pic = self._picture(symbols)
        return self._snapshot(symbols) if pic is None else self._snapshot_of(symbols, pic)

    def _picture(self, symbols: list[str]) -> LivePicture | None:
        """What the live streams keep for these symbols, when they keep it all (else None)."""
        return self.marks.picture(symbols) if self.marks is not None else None

    def _snapshot_of(self, symbols: list[str], pic: LivePicture | None) -> MarketSnapshot:
        feats = self.market.features(symbols, self.clock.now(), tickers=pic.tickers if pic else None)
        return MarketSnapshot(
            ts=self.clock.now(),
            symbols=feats,
            balance=pic.balance if pic else self.venue.balance(),
            positions=pic.positions if pic else self.venue.positions(),
            streamed=pic is not None,
            metas=self.store.positions(),
            cooldowns=[c for c in self.store.cooldowns() if c.active(self.clock.now())],
            recent_trades=self.store.trades(limit=10),
        )

    def _publish_market(self, snap: MarketSnapshot) -> None:
        blocks = self._entry_blocks(self._context(snap))
        self._blocks_sent = _blocks_key(blocks)
        self.emit(MarketUpdated(
            ts=snap.ts, level="debug", features=snap.symbols,
            closes={s: self.market[s].closes_1m(60) for s in snap.symbols if s in self.market},
            blocks=blocks,
        ))

    def _entry_blocks(self, ctx: guardrails.ReviewContext) -> dict[str, list[EntryBlock]]:
        return {s: guardrails.entry_blocks(s, ctx, self.settings) for s in ctx.features}

    def _publish_blocks(self) -> None:
        """Between cycles (after a monitor pass, an open, a close, a pause): what would block
        an entry now, on the cycle's market and the current account; sent when it changed."""
        snap, balance = self.last_snapshot, self._balance
        if snap is None or balance is None or not self._subscribers:
            return
        now = self.clock.now()
        ctx = guardrails.ReviewContext(
            now=now,
            balance=balance,
            positions={m.symbol: m.side for m in self.store.positions()},
            cooldowns={c.symbol: c for c in self.store.cooldowns() if c.active(now)},
            features=snap.symbols,
            instruments=self.instruments,
            paused=self.paused,
            limits=self.risk.limits(),
        )
        blocks = self._entry_blocks(ctx)
        key = _blocks_key(blocks)
        if key != self._blocks_sent:
            self._blocks_sent = key
            self.emit(BlocksUpdated(ts=now, level="debug", blocks=blocks))

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
            limits=self.risk.limits(),
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
            self.next_cycle_at = self.timers.due("decision")
            if getattr(self.venue, "refusal", ""):  # found by a re-check of the venue
                self._degrade(self.venue.refusal)  # type: ignore[attr-defined]
            self._publish_state()
            # Degraded stops entries (the guardrails see it as paused), nothing else: CLOSE
            # decisions still run, unless the decider itself is what is down.
            if self._decider_down:
                return
            try:
                snap = await self._io(self._snapshot, list(self.settings.symbols))
            except VenueError as e:
                if isinstance(e, AuthError):
                    self._degrade(f"venue refused the keys: {e}")
                    return  # said once by _degrade
                self._log("error", f"market snapshot failed: {e}; cycle skipped", "VENUE_ERROR")
                return
            self.last_snapshot = snap
            await self._look_risk(snap.balance.equity)
            self._publish_market(snap)
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
            if result.usage is not None:
                self.emit(result.usage.model_copy(update={"ts": self.clock.now()}))
            if result.degraded:
                self._decider_down = True
                self._degrade(f"decider {self.decider.name}: {result.degraded}")
            async with self.decisions.cycle():
                for inv in result.invalid:
                    await self._record_invalid(inv, self._audit_for(inv.symbol, result.audit), snap)
                ctx = self._context(snap)
                for decision in result.decisions:
                    review = guardrails.review(decision, ctx, self.settings)
                    inputs = snap.symbols.get(decision.symbol)
                    if self.mode == "auto" and review.actionable and review.order is not None:
                        review, inputs = await self._repriced(decision, review, ctx, inputs, snap.ts)
                    await self._dispose(decision, review, self._audit_for(decision.symbol, result.audit), inputs)
                    if review.actionable and review.order is not None:
                        # What this cycle already opened counts against the next decisions.
                        ctx = self._context(await self._io(self._refresh, snap))
            said = [f"{d.symbol} {d.action.value}" for d in result.decisions] + [
                f"{i.symbol or 'all'} {i.code}" for i in result.invalid
            ]
            self._log("info", f"decision cycle ({self.decider.name}): {' · '.join(said) or 'no decisions'}", "CYCLE")

    async def _repriced(self, decision: Decision, review: Review, ctx: guardrails.ReviewContext,
                        inputs: SymbolFeatures | None, asked_at: float) -> tuple[Review, SymbolFeatures | None]:
        """An AUTO entry whose market is older than REPRICE_AFTER_SEC (the model took its
        time) is reviewed again on the symbol's market now, before it is sent: sized, and its
        TP and SL set, from the price it will fill near, not the one the model was shown
        (with them computed from a price seconds old, a move meanwhile shifts the bracket
        by as much); what the move makes unsafe is blocked. The prices come from the live
        streams when they keep them, else from the venue; if the symbol's market cannot be
        read, nothing is sent."""
        now = self.clock.now()
        if now - asked_at < REPRICE_AFTER_SEC:
            return review, inputs
        sym = decision.symbol
        pic = self._picture([sym])
        try:
            fresh = await self._io(self.market.features, [sym], now, pic.tickers if pic else None)
        except VenueError:
            fresh = {}
        feats = fresh.get(sym)
        if feats is None:
            return guardrails.no_market_data(decision, f"{sym}: its market could not be read when it was to be sent"), inputs
        was = inputs.price if inputs is not None else 0.0
        self._log("info", f"{sym} {decision.action.value} reviewed again on the market now (the model saw it "
                  f"{now - asked_at:.1f} s ago): price {was:g} → {feats.price:g}", "REPRICED")
        ctx = dataclasses.replace(ctx, now=now, features={**ctx.features, sym: feats})
        return guardrails.review(decision, ctx, self.settings), feats

    async def _record_invalid(self, inv: InvalidDecision, audit: dict[str, object], snap: MarketSnapshot) -> None:
        """Keep an unusable answer on the record (as a HOLD that was never traded)."""
        symbol = inv.symbol if inv.symbol in self.settings.symbols else self.settings.symbols[0]
        hold = Decision(symbol=symbol, action=Action.HOLD, confidence=0.0, rationale=inv.message,
                        source=self.decider.name, created_at=snap.ts)
        where = inv.symbol or "cycle"
        record = DecisionRecord(
            decision=hold,
            status=DecisionStatus(inv.code),
            message=f"{where}: {inv.code}: {inv.message}",
            recorded_at=self.clock.now(),
            audit={**audit, "raw": inv.raw},
            inputs=snap.symbols.get(inv.symbol) if inv.symbol else None,
        )
        await self.decisions.record(record, "warning")

    def _refresh(self, snap: MarketSnapshot) -> MarketSnapshot:
        return snap.model_copy(update={"balance": self.venue.balance(), "positions": self.venue.positions()})

    async def _dispose(self, decision: Decision, review: Review, audit: dict[str, object],
                       inputs: SymbolFeatures | None = None) -> None:
        if self.stopping:
            return  # nothing new once stopping: the store is about to close
        now = self.clock.now()
        S = DecisionStatus
        record = DecisionRecord(decision=decision, review=review, status=S.PROPOSED, recorded_at=now, audit=audit,
                                inputs=inputs)
        sym, act = decision.symbol, decision.action.value
        if review.verdict is Verdict.HOLD:
            await self.decisions.record(record.model_copy(update={"status": S.HOLD, "message": decision.rationale}),
                                        "debug")
            return
        if review.verdict is Verdict.BLOCKED:
            text = "; ".join(review.detail) or review.summary()
            await self.decisions.record(
                record.model_copy(update={"status": S.BLOCKED, "message": f"{sym} {act} BLOCKED: {text}"}), "warning"
            )
            return
        if self.mode == "auto":
            await self._execute(record)
        elif self.headless and not self.consoles:
            await self.decisions.record(
                record.model_copy(update={"message": f"{sym} {act} proposed; APPROVE mode and no console attached "
                                                     "to approve it: not executed"}),
                "info",
            )
        else:
            # One question per symbol: a newer proposal replaces the one still waiting.
            for old in self.pending.for_symbol(sym):
                self.pending.remove(old.record.decision.decision_id)
                msg = f"{sym} {old.record.decision.action.value} EXPIRED: replaced by a newer decision"
                await self.decisions.record(old.record.model_copy(update={"status": S.EXPIRED, "message": msg}), "info",
                                            update=True)
            expires = now + self.settings.approval_timeout_sec
            rec = record.model_copy(update={"status": S.PENDING, "message": f"{sym} {act} waiting for approval"})
            self.pending.add(rec, expires)
            await self.decisions.record(rec, "warning", expires_at=expires)

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

    async def _execute(self, record: DecisionRecord, update: bool = False) -> tuple[str, str, str | None]:
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
            status, message, intent_id = await self._io(work)
        except AuthError as e:
            self._degrade(f"venue refused the keys: {e}")
            status, message, intent_id = "FAILED", f"{d.symbol} {d.action.value} FAILED: {e}", None
        except VenueError as e:
            status, message, intent_id = "FAILED", f"{d.symbol} {d.action.value} FAILED: {e}", None
        if review.verdict is Verdict.CONVERTED:
            message = f"{message} ({review.summary()})"
        level = "error" if status == "FAILED" else "info"
        await self.decisions.record(
            record.model_copy(update={"status": DecisionStatus(status), "message": message, "intent_id": intent_id}),
            level, update=update)
        self._arm_exits()
        await self.publish_account()
        return status, message, intent_id

    async def expire_pending(self) -> None:
        """Expire every pending decision whose time is up (each has its own timer)."""
        for p in self.pending.due(self.clock.now()):
            self.pending.remove(p.record.decision.decision_id)
            d = p.record.decision
            await self.decisions.record(
                p.record.model_copy(update={"status": DecisionStatus.EXPIRED,
                                            "message": f"{d.symbol} {d.action.value} EXPIRED without approval"}),
                "warning",
                update=True,
            )

    # --- commands ---------------------------------------------------------------

    async def handle(self, command: Command) -> CommandResult:
        """Carry out an operator's command; the answer says whether it was done and why."""
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
                return CommandResult.done("decision cycle run")
        raise ValueError(f"unknown command {command!r}")

    async def approve(self, decision_id: str) -> CommandResult:
        p = self.pending.get(decision_id)
        if p is None:
            return CommandResult.refused(f"decision {decision_id} is not pending (already handled or expired)")
        d = p.record.decision
        if self.clock.now() >= p.expires_at:
            await self.expire_pending()
            self._log("warning", f"{d.symbol} {d.action.value} has expired and cannot be approved", "EXPIRED")
            return CommandResult.refused(f"{d.symbol} {d.action.value} expired: cannot be approved")
        self.pending.remove(decision_id)
        # The guardrails are checked again now: the market and the account have moved.
        try:
            snap = await self._io(self._recheck_snapshot, [d.symbol])
        except VenueError as e:
            rec = p.record.model_copy(update={"status": DecisionStatus.FAILED, "message": f"{d.symbol} approve failed: {e}"})
            await self.decisions.record(rec, "error", update=True)
            return CommandResult.failed(rec.message)
        review = guardrails.review(d, self._context(snap), self.settings)
        rec = p.record.model_copy(update={"review": review, "inputs": snap.symbols.get(d.symbol)})
        if not review.actionable:
            text = "; ".join(review.detail) or review.summary()
            rec = rec.model_copy(update={"status": DecisionStatus.BLOCKED,
                                         "message": f"{d.symbol} {d.action.value} approved but BLOCKED now: {text}"})
            await self.decisions.record(rec, "warning", update=True)
            return CommandResult.refused(rec.message)
        # Said when the second look was the streams' picture (a REST read of the venue is the rule).
        streamed = " (checked again on the live streams)" if snap.streamed else ""
        self._log("info", f"{d.symbol} {d.action.value} approved by operator{streamed}", "APPROVED")
        status, message, intent_id = await self._execute(rec, update=True)
        if status == "FAILED":
            return CommandResult.failed(message, intent_id)
        return CommandResult.done(f"{d.symbol} {d.action.value} approved: {message}", intent_id)

    async def reject(self, decision_id: str) -> CommandResult:
        p = self.pending.remove(decision_id)
        if p is None:
            return CommandResult.refused(f"decision {decision_id} is not pending")
        d = p.record.decision
        rec = p.record.model_copy(update={"status": DecisionStatus.REJECTED,
                                          "message": f"{d.symbol} {d.action.value} REJECTED by operator"})
        await self.decisions.record(rec, "info", update=True)
        return CommandResult.done(rec.message)

    async def force_close(self, symbol: str) -> CommandResult:
        self._log("warning", f"FORCE CLOSE requested for {symbol}", "FORCE_CLOSE")
        try:
            intent = await self._io(self.executor.close, symbol, CloseReason.FORCE_CLOSE)
        except VenueError as e:
            self._log("error", f"FORCE CLOSE {symbol} failed: {e}", "FORCE_CLOSE")
            return CommandResult.failed(f"force close {symbol} failed: {e}")
        await self._io(self.monitor.publish)
        self._arm_exits()
        await self.publish_account()
        status, message, intent_id = _outcome(intent, f"{symbol} FORCE CLOSE")
        if intent is None:
            return CommandResult.refused(message)
        return CommandResult.done(message, intent_id) if status != "FAILED" else CommandResult.failed(message, intent_id)

    async def close_all(self) -> CommandResult:
        self.pause(True)
        self._log("warning", "CLOSE ALL: closing every position; new entries paused", "CLOSE_ALL")
        positions = await self._io(self.venue.positions)
        answers = [await self.force_close(p.symbol) for p in positions]
        if not answers:
            return CommandResult.done("no positions to close; new entries paused")
        text = "; ".join(a.message for a in answers)
        return CommandResult.done(text) if all(a.ok for a in answers) else CommandResult.failed(text)

    def set_mode(self, mode: str) -> CommandResult:
        if mode not in ("auto", "approve"):
            raise ValueError(f"mode must be auto or approve, not {mode!r}")
        self.mode = mode  # type: ignore[assignment]
        self._log("warning" if mode == "auto" else "info", f"mode set to {mode.upper()}", "MODE")
        self._publish_state()
        return CommandResult.done(f"mode {mode.upper()}")

    def pause(self, paused: bool) -> CommandResult:
        self.paused = paused
        self._log("warning", "new entries PAUSED (exits keep working)" if paused else "new entries resumed", "PAUSE")
        if not paused:
            # Resuming lifts a MAX_DRAWDOWN pause too; the peak starts again from the equity now.
            equity = self._balance.equity if self._balance is not None else None
            lifted = self.risk.resume(equity)
            if lifted:
                self._log("warning", f"MAX_DRAWDOWN pause lifted by the operator ({lifted}); the drawdown is "
                          f"measured from {equity or 0:.2f} USDT from now on", "MAX_DRAWDOWN")
        self._publish_state()
        self._publish_blocks()
        return CommandResult.done("paused" if paused else "resumed")


def _blocks_key(blocks: dict[str, list[EntryBlock]]) -> object:
    """What makes entry blocks news: codes and texts, a cooldown by its end (its text
    counts its seconds down)."""
    return {s: [(b.code, b.until if b.until is not None else b.text) for b in bs] for s, bs in blocks.items()}


def _outcome(intent: Intent | None, what: str) -> tuple[str, str, str | None]:
    """Map an executor result to a decision status and a line for the operator."""
    if intent is None:
        return "FAILED", f"{what}: nothing to close", None
    if intent.status is IntentStatus.EXECUTED:
        return "EXECUTED", f"{what} EXECUTED [intent:{intent.intent_id}]", intent.intent_id
    if intent.status is IntentStatus.EXECUTING:
        return "EXECUTING", f"{what}: outcome unknown, being looked up [intent:{intent.intent_id}]", intent.intent_id
    return "FAILED", f"{what} FAILED: {intent.reason}", intent.intent_id
