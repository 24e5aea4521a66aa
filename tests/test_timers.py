"""The engine's one timing model: every timer on the injected clock, stepped by hand on a
ManualClock, fired by APScheduler on a clock that runs by itself (--speed N included)."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.clock import ManualClock, ScaledClock
from engine.events import AccountUpdated
from engine.models import CloseReason
from engine.timers import SteppedTimers
from tests.rig import calm, long_btc, make_rig, plan

T0 = 1_767_225_600.0


async def test_stepped_timers_run_in_time_order_exits_first_and_coalesce():
    clock = ManualClock(T0)
    t = SteppedTimers(clock)
    ran: list[tuple[str, float]] = []

    def job(name):
        async def fn():
            ran.append((name, clock.now()))
        return fn

    t.every("cycle", 60, job("cycle"), priority=5)
    t.every("monitor", 30, job("monitor"), priority=0)
    t.at("exit", T0 + 45, job("exit"), priority=0)
    assert await t.run_until(T0 + 120) == 7
    assert ran == [("monitor", T0 + 30), ("exit", T0 + 45), ("monitor", T0 + 60), ("cycle", T0 + 60),
                   ("monitor", T0 + 90), ("monitor", T0 + 120), ("cycle", T0 + 120)]
    assert "exit" not in t.ids() and clock.now() == T0 + 120
    # the clock jumped ahead by hand: a job late by several intervals runs once
    clock.advance(600)
    ran.clear()
    await t.run_due()
    assert ran == [("monitor", T0 + 720), ("cycle", T0 + 720)]
    assert t.due("monitor") == T0 + 750 and t.due("cycle") == T0 + 780


@pytest.fixture
def rig(tmp_path):
    # A long monitor interval, so only the position's own timer can close it on time.
    r = make_rig(tmp_path / "state", monitor_interval_sec=300, decision_interval_sec=3600)
    calm(r)
    yield r
    r.store.close()


async def test_a_time_exit_fires_at_its_limit_in_market_time_with_nobody_watching(rig):
    await rig.engine.start()
    rig.clock.advance(7)  # off the monitor's 300 s grid
    rig.engine.executor.open(plan(rig, long_btc(time_in_trade_limit_sec=1800)))
    rig.engine._arm_exits()  # as after an open the engine executed
    opened = rig.store.get_position("BTCUSDT").opened_at
    assert rig.engine.timers.due("exit:BTCUSDT") == opened + 1800
    await rig.engine.timers.run_until(opened + 1799)
    assert rig.store.get_position("BTCUSDT") is not None
    await rig.engine.timers.run_until(opened + 1800)
    trade = rig.store.trades()[0]
    assert trade.reason is CloseReason.TIME_EXIT and trade.closed_at == opened + 1800
    assert trade.duration_sec == 1800
    assert "exit:BTCUSDT" not in rig.engine.timers.ids()
    await rig.engine.stop()


async def test_an_approval_expires_on_its_own_timer(rig):
    await rig.engine.start()
    rig.decider.push(long_btc())
    await rig.engine.run_decision_cycle()
    (did, pending), = rig.engine.pending.items()
    await rig.engine.timers.run_until(pending.expires_at - 1)
    assert did in rig.engine.pending
    await rig.engine.timers.run_until(pending.expires_at)
    assert did not in rig.engine.pending
    assert rig.store.decisions(limit=1)[0].status == "EXPIRED"
    assert f"expiry:{did}" not in rig.engine.timers.ids()
    await rig.engine.stop()


async def test_todays_figures_count_each_close_and_start_again_at_midnight_utc(rig):
    await rig.engine.start()
    rig.engine.executor.open(plan(rig, long_btc()))
    rig.clock.advance(60)
    await rig.engine.force_close("BTCUSDT")
    account = [e for e in rig.events if isinstance(e, AccountUpdated)][-1]
    pnl = rig.store.trades()[0].pnl
    assert account.trades_today == 1 and account.realised_today == pytest.approx(pnl)
    # the day timer fires at 00:00 UTC and the figures start again
    await rig.engine.timers.run_until(T0 + 86_400)
    account = [e for e in rig.events if isinstance(e, AccountUpdated)][-1]
    assert account.ts == T0 + 86_400 and account.trades_today == 0 and account.realised_today == 0
    assert rig.engine.timers.due("day") == T0 + 2 * 86_400
    await rig.engine.stop()


async def test_todays_figures_are_rebuilt_once_at_start_from_the_journal(rig):
    await rig.engine.start()
    rig.engine.executor.open(plan(rig, long_btc()))
    rig.clock.advance(60)
    await rig.engine.force_close("BTCUSDT")
    await rig.engine.stop()
    again = rig.reopen(monitor_interval_sec=300)
    calls = []
    real = again.store.trades
    again.store.trades = lambda *a, **k: calls.append(k) or real(*a, **k)
    await again.engine.start()
    for _ in range(3):
        await again.engine.run_monitor()
    account = [e for e in again.events if isinstance(e, AccountUpdated)][-1]
    assert account.trades_today == 1 and account.realised_today == pytest.approx(real()[0].pnl)
    assert len(calls) == 1  # read once at start, not on every pass
    await again.engine.stop()
    again.store.close()


async def test_at_speed_n_a_time_limit_lasts_limit_over_n_wall_seconds(tmp_path):
    """--speed 1200: a 20-minute limit (the shortest allowed) is one wall second, and the
    position's own timer, not the 30 s monitor, closes it."""
    clock = ScaledClock(1200)
    # TP and SL far away: the simulated market runs with the wall clock here (not seeded
    # steps), and once in a while its 20 minutes reached a 1.5 % stop before the time exit.
    rig = make_rig(tmp_path / "s", clock=clock, monitor_interval_sec=300, decision_interval_sec=3600,
                   tp_pct_max=10.0, sl_pct_max=10.0)
    calm(rig)
    try:
        await rig.engine.start()
        rig.engine.executor.open(plan(rig, long_btc(time_in_trade_limit_sec=1200, tp_pct=10.0, sl_pct=10.0)))
        rig.engine._arm_exits()
        meta = rig.store.get_position("BTCUSDT")
        assert meta.stop_loss < meta.entry_price * 0.95  # out of the way of the time exit
        start = time.monotonic()
        while rig.store.get_position("BTCUSDT") is not None and time.monotonic() - start < 10:
            await asyncio.sleep(0.05)
        wall = time.monotonic() - start
        trade = rig.store.trades()[0]
        assert trade.reason is CloseReason.TIME_EXIT
        assert trade.closed_at - meta.opened_at == pytest.approx(1200, abs=1200 * 0.5)  # ±0.5 wall s of slack
        assert 0.5 < wall < 5
    finally:
        await rig.engine.stop()
        rig.store.close()
