"""Scenes shared by the console's tests (no tests in this file): an engine on the seeded
simulated market with a ManualClock and a scripted decider, brought to a known state through
the engine's own paths (cycles, approvals, force closes), so every frame is deterministic."""

from __future__ import annotations

import pytest

from textual.pilot import Pilot

from app.console import ScalpDeskApp
from engine.models import Action
from engine.venues.paper import PaperVenue
from engine.venues.simfeed import SimFeed
from tests.rig import Rig, calm, long_btc, make_rig

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]


def scene_rig(state_dir, *, venue_name: str = "sim", **settings) -> Rig:
    """A rig on five symbols; `venue_name="live"` fakes a live venue (it still trades on paper)."""
    from engine.clock import ManualClock

    clock = ManualClock()
    feed = SimFeed(SYMBOLS, seed=7, start=clock.now())
    venue = PaperVenue(feed, clock, name=venue_name)
    # Cycles are run by hand (each with the scripted decisions of its step); the hourly
    # scheduled one does not fall inside a scene.
    settings.setdefault("decision_interval_sec", 3600)
    rig = make_rig(state_dir, clock=clock, feed=feed, venue=venue, symbols=",".join(SYMBOLS), **settings)
    calm(rig)
    return rig


def make_app(rig: Rig) -> ScalpDeskApp:
    return ScalpDeskApp(rig.engine, schedule=False)


async def settle(pilot: Pilot) -> None:
    """Let every worker finish and every message be handled; write the log lines the
    next tick of the app's timer would write."""
    app = pilot.app
    for _ in range(4):
        await app.workers.wait_for_complete()
        await pilot.pause()
    if isinstance(app, ScalpDeskApp):
        app.log_panel.flush()
        await pilot.pause()


async def started(pilot: Pilot) -> None:
    await pilot.app.started.wait()  # type: ignore[attr-defined]
    await settle(pilot)


def decision(symbol: str, action: Action = Action.OPEN_LONG, **over):
    base = dict(symbol=symbol, action=action, rationale=f"{symbol}: 1m/5m/15m trends aligned, RSI(1m) 58")
    base.update(over)
    return long_btc(**base)


async def wait(rig: Rig, seconds: float) -> None:
    """Let market time pass with the engine's own timers firing (cycles, monitor, expiries)."""
    await rig.engine.timers.run_until(rig.clock.now() + seconds)


async def busy_desk(pilot: Pilot, rig: Rig) -> None:
    """Two positions (one in its last minute), a cooldown, two pending decisions, and a
    history with EXECUTED, REJECTED, EXPIRED and BLOCKED: the main screen in full."""
    e = rig.engine
    await started(pilot)
    # SOL short with a 20-minute limit, through an approval
    rig.decider.push(decision("SOLUSDT", Action.OPEN_SHORT, time_in_trade_limit_sec=1200, confidence=0.8))
    await e.run_decision_cycle()
    await e.approve(next(iter(e.pending)))
    await wait(rig, 300)
    # XRP proposed and rejected; DOGE proposed and left to expire
    rig.decider.push(decision("XRPUSDT"), decision("DOGEUSDT", Action.OPEN_SHORT, confidence=0.7))
    await e.run_decision_cycle()
    xrp, doge = list(e.pending)
    await e.reject(xrp)
    await wait(rig, rig.settings.approval_timeout_sec + 1)  # DOGE's expiry timer fires
    # ETH long, force closed: a cooldown
    rig.decider.push(decision("ETHUSDT"))
    await e.run_decision_cycle()
    await e.approve(next(iter(e.pending)))
    await wait(rig, 200)
    await e.force_close("ETHUSDT")
    await wait(rig, 79)
    # BTC long with 30 minutes
    rig.decider.push(decision("BTCUSDT"))
    await e.run_decision_cycle()
    await e.approve(next(iter(e.pending)))
    await wait(rig, 440)
    # ETH again (blocked by its cooldown), XRP and DOGE waiting for the operator
    rig.decider.push(
        decision("ETHUSDT"),
        decision("XRPUSDT", confidence=0.72, leverage=25, size_pct=40),
        decision("DOGEUSDT", Action.OPEN_SHORT, confidence=0.66, tp_pct=1.8, sl_pct=1.2),
    )
    await e.run_decision_cycle()
    await wait(rig, 41)
    await e.run_monitor()
    await settle(pilot)
    pilot.app.clear_notifications()
    await settle(pilot)

@pytest.fixture
def rig(tmp_path):
    r = scene_rig(tmp_path / "state")
    yield r
    r.store.close()


@pytest.fixture
def live_rig(tmp_path):
    r = scene_rig(tmp_path / "state", venue_name="live")
    yield r
    r.store.close()
