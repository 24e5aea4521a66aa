"""Scenes shared by the console's tests (no tests in this file): an engine on the seeded
simulated market with a ManualClock and a scripted decider, brought to a known state through
the engine's own paths (cycles, approvals, force closes), so every frame is deterministic."""

from __future__ import annotations

import asyncio

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from app.console import ScalpDeskApp
from engine.protocol import SOCKET_FILE
from engine.service import EngineService
from engine.models import Action, CloseReason, Decision, DecisionRecord, Review, Trade, Verdict
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


class Host:
    """The rig's engine served on its own socket, started in the app's event loop: the
    console under test only has the socket, as a console attaching to a running engine."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.service: EngineService | None = None

    @property
    def socket(self):
        return self.rig.store.state_dir / SOCKET_FILE

    async def start(self) -> None:
        if not self.rig.engine.timers.ids():  # not started by the test already
            await self.rig.engine.start(schedule=False)
        self.service = EngineService(self.rig.engine, self.socket)
        await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()


def make_app(rig: Rig, **kw) -> ScalpDeskApp:
    host = Host(rig)
    app = ScalpDeskApp(host.socket, rig.settings, clock=rig.clock, prepare=host.start, **kw)
    app.engine_rig = rig  # type: ignore[attr-defined]  # for the scenes; the console never touches it
    app.host = host  # type: ignore[attr-defined]
    return app


async def settle(pilot: Pilot) -> None:
    """Let every worker finish, every event the engine emitted reach the console through
    its socket, and every message be handled; write the log lines and paint the positions
    the next tick of the app's timer would."""
    app = pilot.app
    rig = getattr(app, "engine_rig", None)
    for _ in range(4):
        busy = [w for w in app.workers if w.name != "engine-link"]  # the link runs for the app's life
        if busy:
            await app.workers.wait_for_complete(busy)
        if rig is not None and isinstance(app, ScalpDeskApp) and app.link.attached:
            for _ in range(500):
                if app.link.seq >= rig.engine.seq:
                    break
                await asyncio.sleep(0.005)
        await pilot.pause()
    if isinstance(app, ScalpDeskApp):
        app.log_panel.flush()
        app.paint_waiting()
        await pilot.pause()
    await tables_measured(pilot)


async def tables_measured(pilot: Pilot) -> None:
    """Wait for every table on screen to have measured its new rows and cells: DataTable
    sizes its auto-width columns in an idle pass, and a frame taken before it shows a
    column at its header's width. (It did not cure the journal snapshot that showed "o-0000"
    for intent ids once in five runs: that column has a fixed width now.)"""
    for _ in range(100):
        tables = pilot.app.screen.query(DataTable)
        if not any(t._require_update_dimensions or t._updated_cells for t in tables):
            break
        await pilot.pause(0.01)
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


# --- a month of trading, for the journal and the statistics -------------------------------

REASONS = [CloseReason.TAKE_PROFIT, CloseReason.STOP_LOSS, CloseReason.TRAILING_STOP, CloseReason.TIME_EXIT,
           CloseReason.FORCE_CLOSE, CloseReason.AI_CLOSE, CloseReason.LIQUIDATION]
# BTC, ETH, SOL near their real prices; XRP and DOGE where the simulated market has them
PRICES = {"BTCUSDT": 97_000.0, "ETHUSDT": 3_400.0, "SOLUSDT": 230.0, "XRPUSDT": 97.4, "DOGEUSDT": 100.5}
HISTORY_SEC = 2 * 3600  # the clock is moved this far into the day, so some trades closed today


def _pnl(i: int, reason: CloseReason) -> float:
    return {
        CloseReason.TAKE_PROFIT: 8.0 + (i % 5) * 3.1,
        CloseReason.STOP_LOSS: -(6.0 + (i % 4) * 2.3),
        CloseReason.TRAILING_STOP: 5.0 + (i % 3) * 1.7,
        CloseReason.TIME_EXIT: ((i % 5) - 2) * 1.45,
        CloseReason.FORCE_CLOSE: -1.36,
        CloseReason.AI_CLOSE: 2.1 if i % 2 else -3.05,
        CloseReason.LIQUIDATION: -41.2,
    }[reason]


def history_trades(now: float) -> list[tuple[Trade, list[DecisionRecord]]]:
    """40 closed trades over four weeks up to `now` (five today), every close reason, each
    with the decision that opened it (and, for AI_CLOSE, the one that closed it)."""
    out = []
    closes = [now - 600 - (35 - i) * 19 * 3600 for i in range(36)] + [now - m * 60 for m in (105, 75, 45, 20)]
    for i, closed in enumerate(closes):
        sym = SYMBOLS[i % len(SYMBOLS)]
        reason = REASONS[i % len(REASONS)]
        side = "long" if (i // 2) % 2 == 0 else "short"
        sign = 1 if side == "long" else -1
        entry = round(PRICES[sym] * (1 + ((i % 9) - 4) / 400), 4)
        qty = round(1000 / entry, 3 if entry > 1000 else 1 if entry > 1 else 0)
        fees = round(qty * entry * 0.00055 * 2, 4)
        pnl = round(_pnl(i, reason), 2)
        exit_ = round(entry * (1 + sign * (pnl + fees) / (qty * entry)), 4)
        duration = 540 + (i % 6) * 431
        did, cid = f"d-{i + 1:032x}", f"d-c{i + 1:031x}"
        trade = Trade(symbol=sym, side=side, qty=qty, entry_price=entry, exit_price=exit_, opened_at=closed - duration,
                      closed_at=closed, pnl=pnl, roi_pct=round(pnl / (qty * entry / 5) * 100, 4),
                      duration_sec=duration, reason=reason, leverage=5, intent_id=f"o-{i + 1:032x}", fees=fees,
                      cooldown_sec=900, decision_id=did,
                      close_decision_id=cid if reason is CloseReason.AI_CLOSE else None)
        act = Action.OPEN_LONG if side == "long" else Action.OPEN_SHORT
        opening = Decision(decision_id=did, symbol=sym, action=act, confidence=0.8, leverage=5, size_pct=10,
                           tp_pct=2.0, sl_pct=1.5, time_in_trade_limit_sec=2400, cooldown_sec=900, source="rules",
                           rationale=f"1m/5m/15m trends aligned {'up' if sign > 0 else 'down'}, RSI(1m) {50 + sign * 8}",
                           created_at=trade.opened_at - 3)
        records = [DecisionRecord(decision=opening, review=Review(verdict=Verdict.EXECUTE, decision=opening),
                                  status="EXECUTED", message=f"{sym} {act.value} EXECUTED [intent:{trade.intent_id}]",
                                  recorded_at=trade.opened_at - 2, intent_id=trade.intent_id)]
        if reason is CloseReason.AI_CLOSE:
            closing = Decision(decision_id=cid, symbol=sym, action=Action.CLOSE, confidence=0.7, source="rules",
                               rationale="the 1m and 5m trends turned against the position", created_at=closed - 3)
            records.append(DecisionRecord(decision=closing, review=Review(verdict=Verdict.EXECUTE, decision=closing),
                                          status="EXECUTED", message=f"{sym} CLOSE EXECUTED", recorded_at=closed - 2,
                                          intent_id=f"c-{i + 1:032x}"))
        out.append((trade, records))
    return out


def write_history(rig: Rig) -> list[Trade]:
    """Move the clock two hours into the day and write a month of trades (and their
    decisions) through the store, as the engine would have."""
    rig.clock.advance(HISTORY_SEC)
    trades = []
    for trade, records in history_trades(rig.clock.now()):
        for rec in records:
            rig.store.add_decision(rec)
        rig.store.add_trade(trade)
        trades.append(trade)
    return trades


async def history_desk(pilot: Pilot, rig: Rig) -> None:
    """A month of closed trades in the state files, then the console starts: a cycle of
    HOLDs fills the market watch."""
    await started(pilot)
    await hold_cycle(pilot, rig)
    pilot.app.clear_notifications()
    await settle(pilot)


async def hold_cycle(pilot: Pilot, rig: Rig) -> None:
    """A cycle in which the decider holds on every symbol, with its reason."""
    rig.decider.push(*(decision(s, Action.HOLD, confidence=0.3, rationale="no aligned trend (1m +1, 5m -1, 15m +1)")
                       for s in SYMBOLS))
    await rig.engine.run_decision_cycle()
    await settle(pilot)


@pytest.fixture
def history_rig(tmp_path):
    r = scene_rig(tmp_path / "state")
    write_history(r)
    yield r
    r.store.close()
