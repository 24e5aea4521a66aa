"""Exits first (issue 9): a close never waits behind an entry's retries or back-off, and a
time exit the venue refuses is tried again every monitor pass and shown as closing.
Against the loopback Bybit through the real pybit client."""

from __future__ import annotations

import threading
import time

import pytest

from engine.events import PositionsUpdated
from engine.models import CloseReason, IntentStatus
from tests.fakes.bybit_rig import long_btc, make_bybit_rig, plan

CREATE = "/v5/order/create"


@pytest.fixture
def rig(srv, tmp_path):
    r = make_bybit_rig(srv, tmp_path / "state", symbols="BTCUSDT,ETHUSDT", venue_retry_giveup_sec=8)
    yield r
    r.store.close()


def expired_long(rig, symbol="BTCUSDT"):
    """A long the engine opened, now past its time limit."""
    intent = rig.engine.executor.open(plan(rig, long_btc(symbol=symbol, size_pct=8, leverage=4)))
    assert intent.status is IntentStatus.EXECUTED
    meta = rig.store.get_position(symbol)
    rig.store.put_position(meta.model_copy(update={"opened_at": time.time() - meta.time_in_trade_limit_sec - 5}))
    return meta


def burst(srv, only):
    """A 10006 burst on the creates `only` picks: every one refused, reset in 300 ms."""
    srv.exchange.fail(CREATE, "retcode", ret_code=10006, ret_msg="Too many visits!", reset_in_ms=300,
                      times=10_000, when=only)


def retrying(srv, n=2) -> None:
    end = time.monotonic() + 5
    while srv.count(CREATE) < n:
        assert time.monotonic() < end, "the open never reached its retries"
        time.sleep(0.02)


def test_a_time_exit_is_not_held_up_by_an_open_in_its_rate_limit_retries(srv, rig):
    expired_long(rig, "BTCUSDT")
    burst(srv, lambda p: p.get("symbol") == "ETHUSDT")
    eth = plan(rig, long_btc(symbol="ETHUSDT", size_pct=8, leverage=4))
    before = srv.count(CREATE)
    opener = threading.Thread(target=rig.engine.executor.open, args=(eth,), daemon=True)
    opener.start()
    retrying(srv, before + 2)
    started = time.monotonic()
    report = rig.engine.monitor.run_once()
    took = time.monotonic() - started
    assert report.time_exits == ["BTCUSDT"] and took < 3.0, took
    assert opener.is_alive()  # the ETH open is still in its back-off
    [eth_intent] = [i for i in rig.store.intents() if i.symbol == "ETHUSDT"]
    assert eth_intent.status is IntentStatus.EXECUTING  # left to its own thread, not looked up or FAILED
    assert rig.store.trades()[0].reason is CloseReason.TIME_EXIT
    srv.exchange.faults.clear()
    opener.join(10)
    assert rig.store.get_intent(eth_intent.intent_id).status is IntentStatus.EXECUTED


async def test_a_close_of_the_same_symbol_does_not_wait_for_its_entry_in_retries(srv, rig):
    again = plan(rig, long_btc(size_pct=8, leverage=4))  # (planned while flat: it races the close below)
    expired_long(rig, "BTCUSDT")
    burst(srv, lambda p: not p.get("reduceOnly"))  # opens are refused, closes go through
    before = srv.count(CREATE)
    opener = threading.Thread(target=rig.engine.executor.open, args=(again,), daemon=True)
    opener.start()
    retrying(srv, before + 2)
    started = time.monotonic()
    answer = await rig.engine.force_close("BTCUSDT")
    assert answer.ok and "EXECUTED" in answer.message and time.monotonic() - started < 3.0
    assert opener.is_alive() and rig.venue.positions() == []
    opener.join(12)
    failed = rig.store.get_intent(f"o-{again.decision.decision_id.split('-', 1)[1]}")
    assert failed.status is IntentStatus.FAILED and "not placed" in failed.reason and "10006" in failed.reason


def test_a_time_exit_the_venue_refuses_is_tried_every_pass_and_shown_closing(srv, rig):
    expired_long(rig, "BTCUSDT")
    srv.exchange.fail(CREATE, "retcode", ret_code=110001, ret_msg="Order does not exist (fake refusal)",
                      times=2, when=lambda p: bool(p.get("reduceOnly")))
    shown = []
    rig.engine.subscribe(lambda e: shown.append(e.closing) if isinstance(e, PositionsUpdated) else None)
    for attempt in (1, 2):
        report = rig.engine.monitor.run_once()
        assert report.exits_failed == ["BTCUSDT"] and report.time_exits == []
        assert shown[-1] == ["BTCUSDT"]  # the panel shows it closing, countdown at 0
    refused = rig.lines("TIME_EXIT_FAILED")
    assert len(refused) == 2 and all("110001" in m and "tried again next pass" in m for m in refused)
    assert any("(again: the last attempt did not close it)" in m for m in rig.lines("TIME_EXIT"))
    report = rig.engine.monitor.run_once()
    assert report.time_exits == ["BTCUSDT"] and shown[-1] == []
    assert rig.store.trades()[0].reason is CloseReason.TIME_EXIT and rig.venue.positions() == []


def test_a_time_exit_whose_position_list_fails_does_not_stop_the_others(srv, rig, monkeypatch):
    expired_long(rig, "BTCUSDT")
    expired_long(rig, "ETHUSDT")
    real = rig.engine.executor.close
    calls = []

    def close(symbol, reason, decision_id=None):
        calls.append(symbol)
        if symbol == "BTCUSDT":
            from engine.venues.base import VenueError

            raise VenueError("no answer from Bybit (get_positions): ReadTimeout")
        return real(symbol, reason, decision_id)

    monkeypatch.setattr(rig.engine.executor, "close", close)
    report = rig.engine.monitor.run_once()
    assert calls == ["BTCUSDT", "ETHUSDT"] and report.time_exits == ["ETHUSDT"] and report.exits_failed == ["BTCUSDT"]
    assert any("TIME EXIT BTCUSDT not sent" in m for m in rig.lines("TIME_EXIT_FAILED"))


async def test_the_positions_panel_shows_a_due_exit_as_closing():
    from textual.app import App

    from engine.models import PositionMeta, VenuePosition
    from widgets.positions import PositionsPanel

    class Host(App):
        def compose(self):
            yield PositionsPanel()

    now = 1_000_000.0
    pos = VenuePosition(symbol="BTCUSDT", side="long", size=0.01, entry_price=100_000, mark_price=100_000,
                        leverage=5, unrealised_pnl=0)
    meta = PositionMeta(symbol="BTCUSDT", side="long", opened_at=now - 1900, time_in_trade_limit_sec=1800,
                        entry_price=100_000, qty=0.01, leverage=5)
    async with Host().run_test() as pilot:
        panel = pilot.app.query_one(PositionsPanel)
        panel.show([pos], [meta], now)
        assert panel._exit_cell("BTCUSDT").plain == "EXIT"
        panel.show([pos], [meta], now, closing=["BTCUSDT"])
        assert panel._exit_cell("BTCUSDT").plain == "closing" and panel.tick(now + 1) == []


# --- a clean stop (SIGTERM / Ctrl+C) ------------------------------------------------------


async def _open_in_retries(srv, rig, fault_kind: dict):
    import asyncio

    from tests.fakes.bybit_rig import scripted

    decider = scripted(rig)
    await rig.engine.start(schedule=False)
    srv.exchange.fail(CREATE, times=10_000, **fault_kind)
    decider.push(long_btc())
    cycle = asyncio.create_task(rig.engine.run_decision_cycle())
    end = time.monotonic() + 5
    while srv.count(CREATE) < 2:
        assert time.monotonic() < end, "the open never reached its retries"
        await asyncio.sleep(0.02)
    return cycle


async def test_a_stop_during_an_opens_rate_limit_retries_finishes_it_as_not_placed(srv, tmp_path):
    rig = make_bybit_rig(srv, tmp_path / "state", mode="auto", venue_retry_giveup_sec=30)
    cycle = await _open_in_retries(srv, rig, dict(kind="retcode", ret_code=10006, ret_msg="Too many visits!",
                                                  reset_in_ms=300))
    started = time.monotonic()
    await rig.engine.stop()
    assert time.monotonic() - started < 2.0
    [intent] = rig.store.intents()  # written before the store closes
    assert intent.status is IntentStatus.FAILED and "stopping" in intent.reason and "not placed" in intent.reason
    assert rig.store.decisions()[0].status == "FAILED"
    assert not rig.lines("LEFT_UNKNOWN")
    rig.store.close()
    await cycle  # finished, no error
    assert srv.exchange.orders_for() == []


async def test_a_stop_when_the_order_may_have_landed_leaves_it_in_flight_and_says_which(srv, tmp_path):
    state = tmp_path / "state"
    rig = make_bybit_rig(srv, state, mode="auto", venue_retry_giveup_sec=30)
    cycle = await _open_in_retries(srv, rig, dict(kind="http", status=503))  # a 5xx may have been seen
    await rig.engine.stop()
    [intent] = rig.store.intents()
    assert intent.status is IntentStatus.EXECUTING and intent.sent_at is not None
    [said] = rig.lines("LEFT_UNKNOWN")[-1:]
    assert intent.intent_id in said and "the next start looks them up by orderLinkId" in said
    rig.store.close()
    await cycle
    srv.exchange.faults.clear()
    again = make_bybit_rig(srv, state)  # the next start resolves it (not there: FAILED at its deadline)
    try:
        await again.engine.start(schedule=False)
        end = time.monotonic() + 5
        while again.store.get_intent(intent.intent_id).status is IntentStatus.EXECUTING:
            assert time.monotonic() < end
            time.sleep(0.2)
            await again.engine.run_monitor()
        assert again.store.get_intent(intent.intent_id).status is IntentStatus.FAILED
    finally:
        again.store.close()


async def test_a_stop_does_not_wait_for_a_cycle_that_waits_for_its_ai(srv, tmp_path):
    import asyncio

    from tests.fakes.bybit_rig import scripted

    rig = make_bybit_rig(srv, tmp_path / "state", mode="auto")
    try:
        decider = scripted(rig)
        decider.delay = 5.0  # a slow model
        await rig.engine.start(schedule=False)
        decider.push(long_btc())
        cycle = asyncio.create_task(rig.engine.run_decision_cycle())
        while not rig.engine._deciding:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await rig.engine.stop()
        assert time.monotonic() - started < 1.0
        rig.store.close()
        await cycle  # the answer comes after the stop: nothing is written, nothing sent
        assert srv.exchange.orders_for() == [] and srv.count(CREATE) == 0
    finally:
        rig.store.close()
