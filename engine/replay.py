"""Replay: the real engine over historical candles, as fast as the CPU allows.

The same Engine as live trading — decider, guardrails, executor, monitor, store,
settings — with three things swapped: a ManualClock that jumps from one due timer to
the next (engine.timers.SteppedTimers), a paper venue whose market is the candle files
(engine.venues.candlefeed: fills and triggers as stated there), and a throwaway state
directory (never the live one). The trades it journals give the report, computed by
engine.report exactly as `scalpdesk report` computes it from a live journal.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.candles import MINUTE, CandleFileError, CandleSeries, Gap, check_warmup, warmup_sec
from engine.clock import ManualClock
from engine.config import Settings
from engine.deciders.base import Decider
from engine.engine import Engine
from engine.events import BaseEvent, LogEvent
from engine.market import KEEP_15M
from engine.models import CloseReason, reset_ids, sequential_ids
from engine.report import Report, build_report
from engine.risk import paper_costs
from engine.store import StateStore
from engine.timers import SteppedTimers
from engine.venues.base import VenueError
from engine.venues.candlefeed import CandleFeed
from engine.venues.paper import PaperVenue

# The deciders read 100 × 15 m candles: the replay's first decision comes after them.
WARMUP_SEC = warmup_sec(KEEP_15M, 15)
WARMUP_WHY = f"{KEEP_15M} × 15 m candles for the deciders' indicators"
PROGRESS_STEP_SEC = 6 * 3600  # market time between progress reports

Progress = Callable[[float, float], None]  # (market seconds done, market seconds in all)


class ReplayError(Exception):
    """A replay that cannot run as asked; the message says why, with the numbers."""


@dataclass
class ReplayPlan:
    """What a replay will cover: its candles, its first decision and its end."""

    series: list[CandleSeries]
    start: float  # the first moment the engine runs (warm-up done), on a minute
    end: float  # the end of the last candle

    @property
    def symbols(self) -> list[str]:
        return [s.symbol for s in self.series]

    @property
    def candles(self) -> int:
        return sum(len(s) for s in self.series)

    @property
    def gaps(self) -> list[Gap]:
        return [g for s in self.series for g in s.gaps]

    def cycles(self, interval_sec: float) -> int:
        """Decision cycles the replay will run (the first one interval after the start)."""
        return max(0, int((self.end - self.start) // interval_sec))


def plan_replay(series: Sequence[CandleSeries]) -> ReplayPlan:
    """Check the files against each other and the warm-up; raise CandleFileError/ReplayError."""
    if not series:
        raise ReplayError("no candle files: give at least one with --klines FILE")
    seen: dict[str, Path] = {}
    for s in series:
        if s.symbol in seen:
            raise ReplayError(f"{s.symbol} comes from two files ({seen[s.symbol]} and {s.path}); give one per symbol")
        seen[s.symbol] = s.path
        check_warmup(s, WARMUP_SEC, why=WARMUP_WHY)
    start = max(s.first for s in series) + WARMUP_SEC
    start = math.ceil(start / MINUTE) * MINUTE
    end = max(s.end for s in series)
    if end <= start:
        late = max(series, key=lambda s: s.first)
        raise ReplayError(
            f"the files do not overlap enough: {late.symbol} starts last, and after its warm-up "
            f"({WARMUP_WHY}) no candle of any file is left to trade on"
        )
    return ReplayPlan(list(series), start, end)


@dataclass
class ReplayResult:
    report: Report
    cycles: int
    candles: int
    gaps: list[Gap]
    start: float
    end: float
    closed_at_end: list[str] = field(default_factory=list)  # symbols still open when the data ended
    state_dir: Path | None = None  # kept on request
    ai: dict[str, object] | None = None  # the AI decider's requests, cache hits and cost

    def extras(self) -> dict[str, object]:
        """What `--json` adds to the report's figures for a replay."""
        return {
            "cycles": self.cycles,
            "candles": self.candles,
            "gaps": [
                {"symbol": g.symbol, "start": g.start, "end": g.end, "missing_bars": g.missing_bars} for g in self.gaps
            ],
            "replay_start": self.start,
            "replay_end": self.end,
            "closed_at_end": self.closed_at_end,
            **({"ai": self.ai} if self.ai is not None else {}),
        }


class _Counter:
    """Counts the decision cycles the engine ran (each logs one CYCLE line)."""

    def __init__(self) -> None:
        self.cycles = 0

    def __call__(self, event: BaseEvent) -> None:
        if isinstance(event, LogEvent) and event.code == "CYCLE":
            self.cycles += 1


def replay_settings(settings: Settings, plan: ReplayPlan, state_dir: Path) -> Settings:
    """The settings as given, for the replay's symbols, in AUTO (nobody approves in a
    replay), on the throwaway state directory; the AI's daily budget is the run's
    --max-cost instead."""
    return settings.model_copy(update={
        "mode": "auto",
        "symbols": plan.symbols,
        "state_dir": state_dir,
        "llm_daily_budget_usd": 0.0,
    })


async def run_replay(
    settings: Settings,
    plan: ReplayPlan,
    decider: Decider,
    *,
    progress: Progress | None = None,
    keep_state: Path | None = None,
) -> ReplayResult:
    """Run the engine over the plan's candles and report. The state lives in a fresh
    temporary directory, deleted afterwards (or `keep_state`, which must not exist yet)."""
    if keep_state is not None:
        if keep_state.exists():
            raise ReplayError(f"{keep_state} exists: the replay's state goes to a new directory only")
        state_dir = keep_state
    else:
        state_dir = Path(tempfile.mkdtemp(prefix="scalpdesk-replay-"))
    token = sequential_ids()  # the same replay gives the same ids, so the same report
    store: StateStore | None = None
    try:
        s = replay_settings(settings, plan, state_dir)
        clock = ManualClock(plan.start)
        venue = PaperVenue(CandleFeed(plan.series, plan.start), clock, equity=s.paper_equity, name="replay",
                           **paper_costs(s))
        store = StateStore(state_dir, history_retention_days=s.history_retention_days, durable=False)
        timers = SteppedTimers(clock)
        engine = Engine(s, store, venue, decider, clock, headless=True, timers=timers, inline_io=True)
        counter = _Counter()
        engine.subscribe(counter)
        await engine.start()
        total = plan.end - plan.start
        while clock.now() < plan.end:
            await timers.run_until(min(clock.now() + PROGRESS_STEP_SEC, plan.end))
            if progress is not None:
                progress(clock.now() - plan.start, total)
        closed = _close_what_is_open(engine)
        await engine.stop()
        trades = list(reversed(store.trades(limit=10**9)))
        report = build_report(trades, start_equity=s.paper_equity, period_start=plan.start, period_end=plan.end,
                              default_cooldown_sec=s.default_cooldown_sec)
        return ReplayResult(report, counter.cycles, plan.candles, plan.gaps, plan.start, plan.end, closed,
                            state_dir if keep_state is not None else None)
    finally:
        reset_ids(token)
        if store is not None:
            store.close()
        if keep_state is None:
            shutil.rmtree(state_dir, ignore_errors=True)


def _close_what_is_open(engine: Engine) -> list[str]:
    """The data has ended: close what is still open at the last price (END_OF_DATA)."""
    closed = []
    for pos in engine.venue.positions():
        try:
            engine.executor.close(pos.symbol, CloseReason.END_OF_DATA)
        except VenueError:
            continue
        closed.append(pos.symbol)
    return closed


__all__ = ["CandleFileError", "ReplayError", "ReplayPlan", "ReplayResult", "plan_replay", "run_replay", "WARMUP_SEC"]
