"""Prices that tick on the simulated and paper venues (issue 13, part 4): positions' marks
and uPnL and the market watch move a few times a wall-clock second, whatever the sim's
--speed; a TP/SL the paper venue fires between monitor passes is journalled at once; and
none of it runs in a replay or under a driven clock."""

from __future__ import annotations

import asyncio
import time

from engine import guardrails
from engine.clock import ScaledClock, SystemClock
from engine.events import EngineState, PositionsUpdated
from engine.factory import build_engine
from engine.config import load_settings
from engine.features import symbol_features
from engine.models import CloseReason, IntentStatus
from tests.fakes.bybit_server import BybitFakeServer
from tests.fakes.bybit_ws_server import BybitWsServer
from tests.rig import long_btc, make_rig, plan

QUIET = dict(monitor_interval_sec=300, decision_interval_sec=3600)


async def until(cond, timeout=5.0, what="the condition"):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_sim_marks_tick_in_wall_time_at_any_speed(tmp_path):
    rig = make_rig(tmp_path / "state", clock=ScaledClock(50), **QUIET)
    arrivals: list[tuple[float, PositionsUpdated]] = []
    rig.engine.subscribe(lambda e: arrivals.append((time.monotonic(), e))
                         if isinstance(e, PositionsUpdated) and e.code == "MARKS" else None)
    try:
        await rig.engine.start()
        assert rig.engine.marks is not None and rig.engine.marks.status == "live"
        assert [e.feed for e in rig.events if isinstance(e, EngineState)][-1] == "live"
        intent = await asyncio.to_thread(rig.engine.executor.open, plan(rig, long_btc(size_pct=8)))
        assert intent.status is IntentStatus.EXECUTED
        arrivals.clear()
        began = time.monotonic()
        await asyncio.sleep(2.0)
        span = time.monotonic() - began
        ticks = [e for _, e in arrivals]
        # 50x: 100 market seconds of ticks in two wall seconds, published at most 4 a wall second.
        assert 4 <= len(ticks) <= 4 * span + 1, (len(ticks), span)
        gaps = [b - a for (a, _), (b, _) in zip(arrivals, arrivals[1:])]
        assert min(gaps) >= 0.2, gaps
        marks = {e.positions[0].mark_price for e in ticks if e.positions}
        assert len(marks) >= 3, "the mark moves"
        last = ticks[-1].positions[0]
        assert last.unrealised_pnl == (last.mark_price - last.entry_price) * last.size
        assert ticks[-1].metas and ticks[-1].metas[0].symbol == "BTCUSDT"  # the countdown keeps its metadata
    finally:
        await rig.engine.stop()
        rig.store.close()


async def test_a_stop_the_sim_fires_between_monitor_passes_is_journalled_at_once(tmp_path):
    rig = make_rig(tmp_path / "state", clock=ScaledClock(20), **QUIET)
    try:
        await rig.engine.start()
        intent = await asyncio.to_thread(rig.engine.executor.open, plan(rig, long_btc(size_pct=8)))
        assert intent.status is IntentStatus.EXECUTED
        await rig.engine.run_monitor()
        price = rig.venue.ticker("BTCUSDT").last
        # A TP and an SL a hair away: the ticking market crosses one of them within moments.
        await asyncio.to_thread(rig.venue.set_trading_stop, "BTCUSDT", take_profit=price * 1.00005,
                                stop_loss=price * 0.99995)
        await until(lambda: rig.store.trades(), timeout=5, what="the close")
        [trade] = rig.store.trades()
        assert trade.reason in (CloseReason.TAKE_PROFIT, CloseReason.STOP_LOSS)
        assert rig.engine.marks.passes >= 1
        assert any(w.startswith("polled: BTCUSDT") for w in rig.engine.marks.wanted)
        await until(lambda: any(c.symbol == "BTCUSDT" for c in rig.store.cooldowns()), what="the cooldown")
    finally:
        await rig.engine.stop()
        rig.store.close()


async def test_nothing_ticks_under_a_driven_clock_or_driven_timers(tmp_path):
    rig = make_rig(tmp_path / "a")  # a ManualClock, as a replay's
    try:
        await rig.engine.start()
        assert rig.engine.marks is None
        assert [e.feed for e in rig.events if isinstance(e, EngineState)][-1] == ""
    finally:
        await rig.engine.stop()
        rig.store.close()
    rig = make_rig(tmp_path / "b", clock=ScaledClock(10), **QUIET)
    try:
        await rig.engine.start(schedule=False)  # a test drives the timers
        assert rig.engine.marks is None
    finally:
        await rig.engine.stop()
        rig.store.close()


async def test_marks_per_sec_zero_turns_it_off(tmp_path):
    rig = make_rig(tmp_path / "state", clock=ScaledClock(10), marks_per_sec=0, **QUIET)
    try:
        await rig.engine.start()
        assert rig.engine.marks is None
    finally:
        await rig.engine.stop()
        rig.store.close()


async def test_paper_ticks_from_the_public_stream_and_fires_its_take_profit_at_once(tmp_path):
    with BybitFakeServer() as srv, BybitWsServer(srv.exchange) as ws:
        settings = load_settings(state_dir=tmp_path / "state", venue="paper", symbols="BTCUSDT",
                                 bybit_base_url=srv.url, bybit_ws_url=ws.url, bybit_timeout_sec=2, **QUIET)
        engine = build_engine(settings, clock=SystemClock())
        events: list = []
        engine.subscribe(events.append)
        try:
            await engine.start()
            marks = engine.marks
            await until(lambda: marks.status == "live", what="the public stream")
            venue = engine.venue
            f = symbol_features(venue.ticker("BTCUSDT"), venue.klines("BTCUSDT", 1, 200),
                                venue.klines("BTCUSDT", 5, 100), venue.klines("BTCUSDT", 15, 100))
            f = f.model_copy(update=dict(trend_1m=1, trend_5m=1, trend_15m=1, ret_5m_pct=0.0, last_range_1m_pct=0.0))
            ctx = guardrails.ReviewContext(now=time.time(), balance=venue.balance(), positions={},
                                           features={"BTCUSDT": f}, instruments=venue.instruments(["BTCUSDT"]))
            review = guardrails.review(long_btc(size_pct=8), ctx, settings)
            intent = await asyncio.to_thread(engine.executor.open, review)
            assert intent.status is IntentStatus.EXECUTED
            await engine.run_monitor()
            tp = engine.store.get_position("BTCUSDT").take_profit
            polled = srv.count("/v5/market/tickers")
            for price in (100_050.0, 100_100.0, 100_150.0):  # marks tick with the pushed prices
                await asyncio.to_thread(srv.exchange.set_price, "BTCUSDT", price)
                await asyncio.sleep(0.3)
            # The live price walks up through the TP, pushed by the stream only.
            for step in range(1, 6):
                await asyncio.to_thread(srv.exchange.set_price, "BTCUSDT", 100_000 + (tp - 100_000) * step / 4)
                await asyncio.sleep(0.05)
            pushed = time.monotonic()
            await until(lambda: engine.store.trades(), timeout=3, what="the paper TP")
            assert time.monotonic() - pushed < 1.0
            [trade] = engine.store.trades()
            assert trade.reason is CloseReason.TAKE_PROFIT and trade.exit_price == tp
            assert srv.count("/v5/market/tickers") == polled, "prices came from the stream, not REST polls"
            ticks = [e for e in events if isinstance(e, PositionsUpdated) and e.code == "MARKS" and e.positions]
            assert {100_050.0, 100_100.0, 100_150.0} <= {e.positions[0].mark_price for e in ticks}
        finally:
            await engine.stop()
            engine.store.close()
