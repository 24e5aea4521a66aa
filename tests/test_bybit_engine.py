"""The engine on BybitVenue: closes journalled with the venue's reason and PnL, trailing
through trading-stop, and reconciliation at start."""

import asyncio
import time

import pytest

from engine.models import CloseReason, Intent, IntentStatus, PositionMeta
from tests.fakes.bybit_rig import long_btc, make_bybit_rig, plan


@pytest.fixture
def rig(srv, tmp_path):
    r = make_bybit_rig(srv, tmp_path / "state", symbols="BTCUSDT,ETHUSDT")
    yield r
    r.store.close()


def test_a_take_profit_on_bybit_is_journalled_with_its_reason_and_closed_pnl(srv, rig):
    intent = rig.engine.executor.open(plan(rig, long_btc()))
    assert intent.status is IntentStatus.EXECUTED
    meta = rig.store.get_position("BTCUSDT")
    srv.exchange.set_price("BTCUSDT", meta.take_profit + 50)
    report = rig.engine.monitor.run_once()
    assert report.venue_closes == ["BTCUSDT"]
    trade = rig.store.trades()[0]
    row = srv.exchange.closed_pnl[-1]
    assert trade.reason is CloseReason.TAKE_PROFIT and trade.pnl == pytest.approx(float(row["closedPnl"]))
    assert trade.exit_price == pytest.approx(meta.take_profit)
    assert rig.store.get_cooldown("BTCUSDT").reason == "TAKE_PROFIT"


def test_the_monitor_arms_trailing_through_trading_stop(srv, rig):
    rig.engine.executor.open(plan(rig, long_btc(trail_activation_roi=2.0, tp_pct=3.0)))
    srv.exchange.set_price("BTCUSDT", 100_600)  # +0.6 % at 5x: ROI 3 % >= 2 %
    report = rig.engine.monitor.run_once()
    assert report.trailing_armed == ["BTCUSDT"]
    sent = srv.sent("/v5/position/trading-stop")[-1]
    assert sent["tpslMode"] == "Full" and sent["positionIdx"] == 0 and float(sent["trailingStop"]) > 0
    srv.exchange.set_price("BTCUSDT", 100_700)
    srv.exchange.set_price("BTCUSDT", 100_000)
    rig.engine.monitor.run_once()
    assert rig.store.trades()[0].reason is CloseReason.TRAILING_STOP


def test_reconciliation_at_start(srv, tmp_path):
    ex = srv.exchange
    # What the venue did while scalpdesk was down:
    t0 = time.time() - 120
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, "o-landed", reduce=False, create_type="CreateByUser",
             tp="102000", sl="99000")  # the EXECUTING intent's order did land ...
    ex.set_price("BTCUSDT", 98_900)  # ... and its stop loss has closed it since
    ex._fill("ETHUSDT", "Sell", 0.5, 3_500, 0, "by-hand", reduce=False, create_type="CreateByUser")  # opened by hand
    ex.set_price("BTCUSDT", 100_000)
    rig = make_bybit_rig(srv, tmp_path / "state", symbols="BTCUSDT,ETHUSDT")
    try:
        store = rig.store
        store.put_intent(Intent(intent_id="o-landed", kind="OPEN", symbol="BTCUSDT", side="long", qty=0.01,
                                status=IntentStatus.EXECUTING, created_at=t0, updated_at=t0,
                                time_in_trade_limit_sec=1800))
        asyncio.run(rig.engine.start(schedule=False))
        assert store.get_intent("o-landed").status is IntentStatus.EXECUTED
        assert any("RECONCILED: o-landed" in m for m in rig.lines("RECONCILED"))
        # the BTC position it opened is gone: journalled with the venue's reason
        [trade] = store.trades()
        assert trade.symbol == "BTCUSDT" and trade.reason is CloseReason.STOP_LOSS
        # the ETH position nobody knew of: adopted with the default time limit, and said so
        eth = store.get_position("ETHUSDT")
        assert eth.adopted and eth.side == "short" and eth.time_in_trade_limit_sec == rig.settings.default_time_in_trade_limit_sec
        assert any(m.startswith("ADOPTED: ETHUSDT short 0.5") for m in rig.lines("ADOPTED"))
        assert [o["orderLinkId"] for o in ex.orders_for()] == ["o-landed", "by-hand"]  # nothing sent
    finally:
        rig.store.close()


def test_metadata_of_a_position_closed_while_down_is_journalled_with_the_venues_reason(srv, tmp_path):
    ex = srv.exchange
    opened = time.time() - 60
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, "o-old", reduce=False, create_type="CreateByUser", tp="101000")
    ex.set_price("BTCUSDT", 101_100)
    rig = make_bybit_rig(srv, tmp_path / "state")
    try:
        rig.store.put_position(PositionMeta(symbol="BTCUSDT", side="long", opened_at=opened, time_in_trade_limit_sec=1800,
                                            entry_price=100_000, qty=0.01, leverage=10, intent_id="o-old"))
        asyncio.run(rig.engine.start(schedule=False))
        [trade] = rig.store.trades()
        assert trade.reason is CloseReason.TAKE_PROFIT and trade.exit_price == 101_000
        assert rig.store.get_position("BTCUSDT") is None
    finally:
        rig.store.close()


async def test_a_hedge_account_that_cannot_switch_degrades_the_engine_at_start(srv, tmp_path):
    ex = srv.exchange
    ex.position_mode = 3
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 1, "by-hand", reduce=False, create_type="CreateByUser")
    rig = make_bybit_rig(srv, tmp_path / "state", symbols="BTCUSDT,ETHUSDT")
    try:
        await rig.engine.start(schedule=False)
        assert "hedge mode" in rig.engine.degraded and "BYBIT_HEDGE_MODE" in rig.engine.degraded
        assert rig.engine.paused
        assert rig.engine.state_event().degraded == rig.engine.degraded
        # exits keep working: the adopted long can still be closed
        assert "EXECUTED" in (await rig.engine.force_close("BTCUSDT")).message
        await rig.engine.run_monitor()
        assert len(rig.lines("DEGRADED")) == 1  # said once, not on every pass
    finally:
        rig.store.close()


async def test_venue_log_lines_reach_the_operators_log(srv, tmp_path):
    srv.exchange.position_mode = 3  # flat hedge account: switched to one-way at start, and said so
    rig = make_bybit_rig(srv, tmp_path / "state", symbols="BTCUSDT")
    try:
        await rig.engine.start(schedule=False)
        assert "Bybit USDT perpetuals switched to one-way mode" in rig.lines("VENUE")
        await rig.engine.stop()
        import logging

        logging.getLogger("engine.venues.bybit").warning("after stop")
        assert "after stop" not in rig.lines("VENUE")
    finally:
        rig.store.close()


# --- issue 9: a skewed clock is not a hedge account; degraded stops entries only --------


async def test_a_skewed_clock_at_start_is_not_taken_for_a_hedge_account_and_the_time_exit_closes(srv, tmp_path):
    """Issue 9, sequence 2 replayed: Bybit's clock 8 s ahead, a one-way account holding a
    long whose time limit has passed. The mode check resyncs (10002) and reads "not
    modified": no hedge refusal, no TRADING STOPPED, and the time exit closes the long
    with positionIdx 0."""
    ex = srv.exchange
    ex.skew_ms = 8_000
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, "o-held", reduce=False, create_type="CreateByUser")
    rig = make_bybit_rig(srv, tmp_path / "state")
    try:
        rig.store.put_position(PositionMeta(symbol="BTCUSDT", side="long", opened_at=time.time() - 1900,
                                            time_in_trade_limit_sec=1800, entry_price=100_000, qty=0.01,
                                            leverage=10, intent_id="o-held"))
        await rig.engine.start(schedule=False)
        assert rig.engine.degraded == "" and not rig.lines("DEGRADED")
        assert not any("hedge mode" in m for m in rig.lines())
        assert rig.venue.position_mode == "one-way" and srv.count("/v5/market/time") >= 1
        closes = [p for p in srv.sent("/v5/order/create") if p.get("reduceOnly")]
        assert [c["positionIdx"] for c in closes] == [0]
        assert ex.open_positions() == [] and rig.store.trades()[0].reason is CloseReason.TIME_EXIT
    finally:
        rig.store.close()


async def test_degraded_stops_entries_only_close_decisions_and_time_exits_run(srv, tmp_path):
    from engine.models import Action
    from tests.fakes.bybit_rig import scripted

    ex = srv.exchange
    ex.position_mode = 3  # a hedge account with positions: it cannot be switched
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 1, "by-hand-1", reduce=False, create_type="CreateByUser")
    ex._fill("ETHUSDT", "Sell", 0.5, 3_500, 2, "by-hand-2", reduce=False, create_type="CreateByUser")
    rig = make_bybit_rig(srv, tmp_path / "state", symbols="BTCUSDT,ETHUSDT", mode="auto")
    try:
        decider = scripted(rig)
        await rig.engine.start(schedule=False)
        assert "hedge mode" in rig.engine.degraded
        assert "TRADING STOPPED for new entries (exits keep running)" in rig.lines("DEGRADED")[0]
        assert "no new entries; exits keep running" in rig.engine.state_event().message
        # an AI CLOSE decision still runs (on the long's own positionIdx 1), an open is refused
        decider.push(long_btc(action=Action.CLOSE), long_btc(symbol="ETHUSDT", action=Action.OPEN_LONG))
        rig.engine.pause(False)  # the operator resuming does not bring entries back while degraded
        await rig.engine.run_decision_cycle()
        by_symbol = {r.decision.symbol: r for r in rig.store.decisions()}
        assert by_symbol["BTCUSDT"].status == "EXECUTED"
        assert by_symbol["ETHUSDT"].status == "BLOCKED" and "PAUSED" in by_symbol["ETHUSDT"].review.reasons
        assert [p.symbol for p in rig.venue.positions()] == ["ETHUSDT"]
        # the time exit of the short runs too, on positionIdx 2
        meta = rig.store.get_position("ETHUSDT")
        rig.store.put_position(meta.model_copy(update={"opened_at": time.time() - meta.time_in_trade_limit_sec - 1}))
        await rig.engine.run_monitor()
        assert rig.venue.positions() == []
        assert [p["positionIdx"] for p in srv.sent("/v5/order/create") if p.get("reduceOnly")] == [1, 2]
        assert {t.reason for t in rig.store.trades()} == {CloseReason.AI_CLOSE, CloseReason.TIME_EXIT}
    finally:
        rig.store.close()


async def test_an_account_switched_to_hedge_mid_run_is_read_again_not_refused_every_cycle(srv, tmp_path):
    from tests.fakes.bybit_rig import scripted

    ex = srv.exchange
    rig = make_bybit_rig(srv, tmp_path / "state", mode="auto", symbols="BTCUSDT,ETHUSDT")
    try:
        decider = scripted(rig)
        await rig.engine.start(schedule=False)
        with ex.lock:
            ex.position_mode = 3  # switched by hand on Bybit, flat
        decider.push(long_btc())
        await rig.engine.run_decision_cycle()
        assert rig.store.decisions()[0].status == "EXECUTED" and len(ex.open_positions()) == 1
        assert ex.position_mode == 0  # read again on the mismatch and switched back (flat)
        await rig.engine.force_close("BTCUSDT")
        # Switched again, and now open orders keep it in hedge mode: the refusal is said,
        # the engine degrades (entries stop) instead of failing an open every cycle.
        with ex.lock:
            ex.position_mode = 3
        ex.fail("/v5/position/switch-mode", "retcode", ret_code=110028,
                ret_msg="You have open orders, so position mode cannot be switched", times=10)
        decider.push(long_btc(symbol="ETHUSDT"))  # (BTCUSDT is cooling down after its close)
        await rig.engine.run_decision_cycle()
        failed = rig.store.decisions()[0]
        assert failed.status == "FAILED" and "hedge mode" in failed.message and "110028" in failed.message
        decider.push(long_btc(symbol="ETHUSDT"))
        await rig.engine.run_decision_cycle()
        assert "hedge mode" in rig.engine.degraded and "110028" in rig.engine.degraded
        assert rig.store.decisions()[0].status == "BLOCKED"
        assert len(ex.orders_for()) == 2  # the first open and its close, nothing more
    finally:
        rig.store.close()
