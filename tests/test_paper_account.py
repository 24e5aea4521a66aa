"""The paper account survives restarts: balance, positions with TP/SL and trailing, orders."""

from __future__ import annotations

import pytest

from engine.clock import ManualClock
from engine.config import load_settings
from engine.factory import StoreAccounts, build_engine, build_venue, engine_clock
from engine.models import CloseReason, OrderRequest
from engine.store import StateStore
from engine.venues.paper import PaperVenue
from engine.venues.simfeed import SimFeed
from tests.rig import long_btc, plan

T0 = 1_767_225_600.0


def order(symbol: str, side: str, qty: float, link: str, **kw: object) -> OrderRequest:
    return OrderRequest(symbol=symbol, side=side, qty=qty, order_link_id=link, **kw)  # type: ignore[arg-type]


def test_a_paper_account_comes_back_whole_after_a_restart(tmp_path):
    clock = ManualClock(T0)
    feed = SimFeed(["BTCUSDT", "ETHUSDT"], seed=3, start=T0)
    with StateStore(tmp_path) as store:
        venue = PaperVenue(feed, clock, account=StoreAccounts(store))
        last = feed.price("BTCUSDT")
        venue.place_order(order("BTCUSDT", "Buy", 0.01, "o-1", take_profit=round(last * 1.05, 1),
                                stop_loss=round(last * 0.95, 1)))
        venue.set_leverage("ETHUSDT", 7)
        venue.place_order(order("ETHUSDT", "Sell", 0.5, "o-2"))
        venue.set_trading_stop("ETHUSDT", trailing_stop=20.0)
        clock.advance(600)
        before = (venue.wallet, venue.positions(), venue.balance())
    # a new process: the same market (same seed and clock), the account from the store
    with StateStore(tmp_path) as store:
        again = PaperVenue(feed, clock, account=StoreAccounts(store))
        assert (again.wallet, again.positions(), again.balance()) == before
        eth = next(p for p in again.positions() if p.symbol == "ETHUSDT")
        assert eth.leverage == 7 and eth.trailing_stop == 20.0
        assert again.order_by_link_id("BTCUSDT", "o-1").filled
        # a new order does not reuse an order id of the first run
        info = again.place_order(order("ETHUSDT", "Buy", 0.5, "o-3", reduce_only=True))
        assert info.order_id != again.order_by_link_id("BTCUSDT", "o-1").order_id


def test_each_paper_venue_keeps_its_own_account(tmp_path):
    clock = ManualClock(T0)
    feed = SimFeed(["BTCUSDT"], seed=3, start=T0)
    with StateStore(tmp_path) as store:
        sim = PaperVenue(feed, clock, account=StoreAccounts(store), name="sim")
        sim.place_order(order("BTCUSDT", "Buy", 0.01, "o-1"))
        paper = PaperVenue(feed, clock, account=StoreAccounts(store), name="paper")
        assert paper.positions() == [] and paper.wallet == 10_000


async def test_open_positions_and_equity_survive_an_engine_restart_on_sim(tmp_path):
    settings = load_settings(state_dir=tmp_path / "state", mode="auto")
    clock = ManualClock(T0 + 3600)
    engine = build_engine(settings, clock=clock, headless=True)
    await engine.start(schedule=False)

    class Rig:  # what tests.rig.plan needs
        pass

    rig = Rig()
    rig.venue, rig.clock, rig.settings = engine.venue, clock, settings  # type: ignore[attr-defined]
    engine.executor.open(plan(rig, long_btc()))
    clock.advance(120)
    equity = engine.venue.balance().equity
    await engine.stop()
    engine.store.close()

    again = build_engine(settings, clock=clock, headless=True)
    await again.start(schedule=False)
    try:
        assert [p.symbol for p in again.venue.positions()] == ["BTCUSDT"]
        assert again.store.trades() == []  # not journalled as closed, reason UNKNOWN
        assert again.venue.balance().equity == pytest.approx(equity)
        assert again.store.get_position("BTCUSDT") is not None
    finally:
        await again.stop()
        again.store.close()


def test_a_faster_sim_clock_resumes_where_the_market_was_and_never_goes_back(tmp_path):
    settings = load_settings(state_dir=tmp_path, sim_speed=10)
    ahead = 4_102_444_800.0  # 2100-01-01: a fast run left the market there
    clock = engine_clock(settings, resume=ahead)
    assert clock.rate == 10 and ahead <= clock.now() < ahead + 60
    assert engine_clock(load_settings(state_dir=tmp_path), resume=None).rate == 1
    assert engine_clock(load_settings(state_dir=tmp_path), resume=ahead).now() >= ahead


def test_a_venue_close_saves_the_time_it_was_last_seen(tmp_path):
    clock = ManualClock(T0)
    settings = load_settings(state_dir=tmp_path)
    with StateStore(tmp_path) as store:
        venue = build_venue(settings, clock, store)
        clock.advance(3600)
        venue.close()  # type: ignore[attr-defined]
        assert store.get_paper_account("sim").saved_at == T0 + 3600


def test_nothing_is_lost_when_a_close_happened_while_it_was_down(tmp_path):
    """The stop loss of a saved position fires in the market after the restart."""
    clock = ManualClock(T0)
    feed = SimFeed(["BTCUSDT"], seed=3, start=T0)
    with StateStore(tmp_path) as store:
        venue = PaperVenue(feed, clock, account=StoreAccounts(store))
        last = feed.price("BTCUSDT")
        venue.place_order(order("BTCUSDT", "Buy", 0.01, "o-1", stop_loss=round(last * 0.99, 1)))
    feed.inject_move("BTCUSDT", -4.0, over_sec=60)
    clock.advance(3600)
    with StateStore(tmp_path) as store:
        again = PaperVenue(feed, clock, account=StoreAccounts(store))
        assert again.positions() == []
        (closed,) = again.closed_trades("BTCUSDT", T0)
        assert closed.reason is CloseReason.STOP_LOSS
