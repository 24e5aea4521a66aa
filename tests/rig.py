"""A paper-trading rig on the seeded simulated market with a ManualClock."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.clock import ManualClock
from engine.config import Settings, load_settings
from engine.deciders.base import DeciderResult
from engine.engine import Engine
from engine.events import BaseEvent
from engine.models import Action, Decision, MarketSnapshot
from engine.store import StateStore
from engine.venues.paper import PaperVenue
from engine.venues.simfeed import SimFeed

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


class ScriptedDecider:
    """Answers each cycle with the decisions a test queued (HOLD for the rest)."""

    name = "scripted"

    def __init__(self) -> None:
        self.queue: list[list[Decision]] = []
        self.calls = 0
        self.delay = 0.0

    def push(self, *decisions: Decision) -> None:
        self.queue.append(list(decisions))

    async def decide(self, snapshot: MarketSnapshot) -> DeciderResult:
        import asyncio

        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        decisions = self.queue.pop(0) if self.queue else []
        return DeciderResult(decisions=[d.model_copy(update={"created_at": snapshot.ts}) for d in decisions])


@dataclass
class Rig:
    settings: Settings
    clock: ManualClock
    feed: SimFeed
    venue: PaperVenue
    store: StateStore
    decider: ScriptedDecider
    engine: Engine
    events: list[BaseEvent] = field(default_factory=list)

    def lines(self, code: str | None = None) -> list[str]:
        return [e.message for e in self.events if code is None or e.code == code]

    def reopen(self, **settings_over) -> "Rig":
        """Stop this process's engine and start another on the same state and venue (a restart)."""
        self.store.close()
        return make_rig(self.store.state_dir, clock=self.clock, feed=self.feed, venue=self.venue, **settings_over)


# The rig trades with the decisions' own time limits, cooldowns and confidence, which the tests
# of everything else state and expect; tests/test_enhancements.py switches the enhancements on.
ENHANCEMENTS_OFF = {"dynamic_time_limit": False, "adaptive_cooldown": False, "mtf_confirmation": False}


def make_rig(state_dir, *, clock=None, feed=None, venue=None, headless=False, decider=None, **settings_over) -> Rig:
    settings = load_settings(state_dir=state_dir, **{**ENHANCEMENTS_OFF, **settings_over})
    clock = clock or ManualClock()
    feed = feed or SimFeed(SYMBOLS, seed=settings.sim_seed, start=clock.now())
    venue = venue or PaperVenue(feed, clock, equity=settings.paper_equity, name="sim")
    store = StateStore(state_dir, history_retention_days=settings.history_retention_days)
    decider = decider or ScriptedDecider()
    engine = Engine(settings, store, venue, decider, clock, headless=headless)
    rig = Rig(settings, clock, feed, venue, store, decider, engine)
    engine.subscribe(rig.events.append)
    return rig


def long_btc(**over) -> Decision:
    base = dict(symbol="BTCUSDT", action=Action.OPEN_LONG, confidence=0.9, tp_pct=2.0, sl_pct=1.5, leverage=5,
                size_pct=10, time_in_trade_limit_sec=1800, cooldown_sec=900, rationale="test")
    base.update(over)
    return Decision(**base)


def calm(rig: Rig) -> None:
    """Make the market look calm and trending up to the guardrails (test input), so a
    test about approval or execution is not blocked by whatever the seeded market did."""
    real = rig.engine._snapshot

    def snapshot(symbols):
        snap = real(symbols)
        fixed = {
            s: f.model_copy(update=dict(trend_1m=1, trend_5m=1, trend_15m=1, ret_5m_pct=0.0, last_range_1m_pct=0.0))
            for s, f in snap.symbols.items()
        }
        return snap.model_copy(update={"symbols": fixed})

    rig.engine._snapshot = snapshot  # type: ignore[method-assign]


def plan(rig: Rig, decision: Decision):
    """A reviewed decision against the rig's real prices and a calm market."""
    from engine import guardrails
    from engine.features import symbol_features

    sym = decision.symbol
    f = symbol_features(rig.venue.ticker(sym), rig.venue.klines(sym, 1, 200), rig.venue.klines(sym, 5, 100), rig.venue.klines(sym, 15, 100))
    f = f.model_copy(update=dict(trend_1m=1, trend_5m=1, trend_15m=1, ret_5m_pct=0.0, last_range_1m_pct=0.0))
    ctx = guardrails.ReviewContext(
        now=rig.clock.now(),
        balance=rig.venue.balance(),
        positions={p.symbol: p.side for p in rig.venue.positions()},
        features={sym: f},
        instruments=rig.venue.instruments([sym]),
    )
    review = guardrails.review(decision, ctx, rig.settings)
    assert review.order is not None, review
    return review
