"""PaperVenue: Bybit-like fills, margin, one-way positions, rejections and triggers."""

from __future__ import annotations

import threading
import time
from itertools import count

import pytest

from engine.clock import ManualClock
from engine.models import CloseReason, Instrument, OrderRequest, Ticker, VenuePosition
from engine.venues.base import OrderRejected, OutcomeUnknown, Venue, VenueError
from engine.venues.paper import MAINTENANCE_MARGIN_RATE, PaperVenue
from engine.venues.simfeed import SimFeed

T0 = 1_767_225_600.0
FEE = 0.00055
SLIP = 2.0 / 10_000
_ids = count()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def venue(clock: ManualClock) -> PaperVenue:
    feed = SimFeed(["BTCUSDT", "ETHUSDT", "SOLUSDT"], seed=42, start=T0)
    return PaperVenue(feed, clock)


def order(symbol: str, side: str, qty: float, **kw: object) -> OrderRequest:
    link_id = f"t-{next(_ids)}"
    return OrderRequest(symbol=symbol, side=side, qty=qty, order_link_id=link_id, **kw)  # type: ignore[arg-type]


def only_position(venue: PaperVenue, symbol: str = "BTCUSDT") -> VenuePosition:
    (pos,) = [p for p in venue.positions() if p.symbol == symbol]
    return pos


# --- protocol, instruments, market data -------------------------------------------------


def test_is_a_venue_with_bybit_filters(venue: PaperVenue) -> None:
    assert isinstance(venue, Venue)
    assert venue.name == "sim"
    inst = venue.instruments(["BTCUSDT", "ETHUSDT", "SOLUSDT", "NOPEUSDT"])
    assert set(inst) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert (inst["BTCUSDT"].qty_step, inst["BTCUSDT"].min_qty, inst["BTCUSDT"].tick_size) == (0.001, 0.001, 0.1)
    assert (inst["ETHUSDT"].qty_step, inst["ETHUSDT"].tick_size) == (0.01, 0.01)
    assert (inst["SOLUSDT"].qty_step, inst["SOLUSDT"].min_notional) == (0.1, 5)


def test_market_data_follows_the_clock(venue: PaperVenue, clock: ManualClock) -> None:
    first = venue.klines("BTCUSDT", 1, 5)
    clock.advance(120)
    later = venue.klines("BTCUSDT", 1, 5)
    assert later[-1].start == first[-1].start + 120
    assert venue.ticker("BTCUSDT").last == venue.feed.price("BTCUSDT")
    with pytest.raises(VenueError):
        venue.ticker("NOPEUSDT")


# --- fills, fees, margin ----------------------------------------------------------------


def test_market_buy_fills_higher_and_pays_the_taker_fee(venue: PaperVenue) -> None:
    last = venue.ticker("BTCUSDT").last
    info = venue.place_order(order("BTCUSDT", "Buy", 0.01))
    assert info.status == "Filled" and info.filled and info.filled_qty == 0.01
    assert info.avg_price == pytest.approx(last * (1 + SLIP), abs=0.05)  # rounded to the 0.1 tick
    assert info.avg_price > last
    assert venue.wallet == pytest.approx(10_000 - 0.01 * info.avg_price * FEE)
    assert info.order_id and info.realised_pnl is None


def test_market_sell_fills_lower(venue: PaperVenue) -> None:
    last = venue.ticker("ETHUSDT").last
    info = venue.place_order(order("ETHUSDT", "Sell", 0.5))
    assert info.avg_price == pytest.approx(last * (1 - SLIP), abs=0.005)
    assert info.avg_price < last
    assert only_position(venue, "ETHUSDT").side == "short"


def test_balance_is_wallet_plus_upnl_and_available_deducts_margin(venue: PaperVenue) -> None:
    venue.set_leverage("BTCUSDT", 5)
    info = venue.place_order(order("BTCUSDT", "Buy", 0.05))
    pos = only_position(venue)
    bal = venue.balance()
    assert pos.leverage == 5
    assert pos.unrealised_pnl == pytest.approx((pos.mark_price - info.avg_price) * 0.05)
    assert bal.equity == pytest.approx(venue.wallet + pos.unrealised_pnl)
    assert bal.available == pytest.approx(bal.equity - 0.05 * info.avg_price / 5)


def test_available_never_goes_below_zero(venue: PaperVenue, clock: ManualClock) -> None:
    venue.set_leverage("BTCUSDT", 1)
    venue.place_order(order("BTCUSDT", "Buy", 0.1))  # ~9700 of 10000 in margin
    venue.feed.inject_move("BTCUSDT", -6.0, over_sec=60)
    clock.advance(90)
    bal = venue.balance()
    assert bal.equity < 0.1 * only_position(venue).entry_price  # the loss ate into the rest
    assert bal.available == 0.0


def test_insufficient_margin_is_110007(venue: PaperVenue) -> None:
    venue.set_leverage("BTCUSDT", 1)
    with pytest.raises(OrderRejected) as e:
        venue.place_order(order("BTCUSDT", "Buy", 0.2))  # ~19400 notional at 1x
    assert e.value.code == 110007 and "ab not enough for new order" in str(e.value)
    assert venue.positions() == [] and venue.wallet == 10_000


# --- one-way positions -----------------------------------------------------------------


def test_same_direction_adds_at_the_average_entry(venue: PaperVenue, clock: ManualClock) -> None:
    a = venue.place_order(order("ETHUSDT", "Buy", 1.0))
    venue.feed.inject_move("ETHUSDT", 3.0, over_sec=30)
    clock.advance(40)
    b = venue.place_order(order("ETHUSDT", "Buy", 2.0))
    pos = only_position(venue, "ETHUSDT")
    assert pos.size == 3.0
    assert pos.entry_price == pytest.approx((a.avg_price + 2 * b.avg_price) / 3)
    assert len(venue.positions()) == 1


def test_opposite_order_reduces_and_realises_pnl(venue: PaperVenue, clock: ManualClock) -> None:
    a = venue.place_order(order("ETHUSDT", "Buy", 2.0))
    venue.feed.inject_move("ETHUSDT", 2.0, over_sec=30)
    clock.advance(40)
    wallet = venue.wallet
    b = venue.place_order(order("ETHUSDT", "Sell", 0.5))
    gross = (b.avg_price - a.avg_price) * 0.5
    close_fee = 0.5 * b.avg_price * FEE
    open_fee_share = 0.5 * a.avg_price * FEE
    assert b.realised_pnl == pytest.approx(gross - close_fee - open_fee_share)  # Bybit's closedPnl is net
    assert venue.wallet == pytest.approx(wallet + gross - close_fee)
    pos = only_position(venue, "ETHUSDT")
    assert (pos.side, pos.size, pos.entry_price) == ("long", 1.5, a.avg_price)
    (trade,) = venue.closed_trades("ETHUSDT", T0)
    assert trade.reason is CloseReason.UNKNOWN and trade.qty == 0.5 and trade.order_id == b.order_id


def test_larger_opposite_order_flips_the_position(venue: PaperVenue) -> None:
    venue.place_order(order("SOLUSDT", "Buy", 10.0))
    info = venue.place_order(order("SOLUSDT", "Sell", 25.0))
    pos = only_position(venue, "SOLUSDT")
    assert (pos.side, pos.size, pos.entry_price) == ("short", 15.0, info.avg_price)
    assert info.realised_pnl is not None and info.filled_qty == 25.0
    (trade,) = venue.closed_trades("SOLUSDT", T0)
    assert trade.side == "long" and trade.qty == 10.0


def test_round_trip_costs_two_fees_and_the_spread(venue: PaperVenue) -> None:
    a = venue.place_order(order("BTCUSDT", "Buy", 0.01))
    b = venue.place_order(order("BTCUSDT", "Sell", 0.01, reduce_only=True))
    assert venue.positions() == []
    expected = (b.avg_price - a.avg_price) * 0.01 - 0.01 * (a.avg_price + b.avg_price) * FEE
    assert b.realised_pnl == pytest.approx(expected)
    assert venue.wallet == pytest.approx(10_000 + expected)
    assert venue.balance().equity == pytest.approx(venue.wallet)


# --- reduce-only ----------------------------------------------------------------------


def test_reduce_only_without_position_is_110017(venue: PaperVenue) -> None:
    with pytest.raises(OrderRejected) as e:
        venue.place_order(order("BTCUSDT", "Sell", 0.01, reduce_only=True))
    assert e.value.code == 110017 and "reduce-only" in str(e.value)


def test_reduce_only_that_would_increase_is_110017(venue: PaperVenue) -> None:
    venue.place_order(order("BTCUSDT", "Buy", 0.01))
    with pytest.raises(OrderRejected) as e:
        venue.place_order(order("BTCUSDT", "Buy", 0.01, reduce_only=True))
    assert e.value.code == 110017
    assert only_position(venue).size == 0.01


def test_reduce_only_larger_than_the_position_is_capped(venue: PaperVenue) -> None:
    venue.place_order(order("BTCUSDT", "Sell", 0.02))
    info = venue.place_order(order("BTCUSDT", "Buy", 0.05, reduce_only=True))
    assert info.filled_qty == 0.02 and info.reduce_only
    assert venue.positions() == []  # closed, not flipped


# --- rejections -----------------------------------------------------------------------


@pytest.mark.parametrize("qty", [0.0105, 0.0005, 0.0])
def test_bad_qty_is_10001(venue: PaperVenue, qty: float) -> None:
    with pytest.raises(OrderRejected) as e:
        venue.place_order(order("BTCUSDT", "Buy", qty))
    assert e.value.code == 10001


def test_below_min_notional_is_110094(clock: ManualClock) -> None:
    feed = SimFeed(["XUSDT"], seed=1, start=T0)  # default instrument: ~100 USDT, step 0.01, min 5 USDT
    venue = PaperVenue(feed, clock)
    with pytest.raises(OrderRejected) as e:
        venue.place_order(order("XUSDT", "Buy", 0.04))  # ~4 USDT
    assert e.value.code == 110094
    venue.place_order(order("XUSDT", "Buy", 0.06))
    venue.place_order(order("XUSDT", "Sell", 0.03, reduce_only=True))  # closes may be smaller


def test_instrument_filters_can_be_given(clock: ManualClock) -> None:
    feed = SimFeed(["SOLUSDT"], seed=1, start=T0)
    strict = Instrument(symbol="SOLUSDT", qty_step=1, min_qty=1, min_notional=500, tick_size=0.01)
    venue = PaperVenue(feed, clock, instruments={"SOLUSDT": strict}, name="paper")
    assert venue.instruments(["SOLUSDT"])["SOLUSDT"] == strict
    with pytest.raises(OrderRejected) as e:
        venue.place_order(order("SOLUSDT", "Buy", 1.0))
    assert e.value.code == 110094


def test_duplicate_order_link_id_is_110072(venue: PaperVenue) -> None:
    req = order("BTCUSDT", "Buy", 0.01)
    venue.place_order(req)
    with pytest.raises(OrderRejected) as e:
        venue.place_order(req.model_copy(update={"symbol": "ETHUSDT", "qty": 0.1}))
    assert e.value.code == 110072 and "OrderLinkedID is duplicate" in str(e.value)
    assert only_position(venue).size == 0.01


def test_a_rejected_order_does_not_use_up_its_link_id(venue: PaperVenue) -> None:
    req = order("BTCUSDT", "Sell", 0.01, reduce_only=True)
    with pytest.raises(OrderRejected):
        venue.place_order(req)
    assert venue.order_by_link_id("BTCUSDT", req.order_link_id) is None
    venue.place_order(req.model_copy(update={"reduce_only": False}))
    assert venue.order_by_link_id("BTCUSDT", req.order_link_id) is not None


def test_tp_or_sl_on_the_wrong_side_is_10001(venue: PaperVenue) -> None:
    last = venue.ticker("BTCUSDT").last
    with pytest.raises(OrderRejected) as e:
        venue.place_order(order("BTCUSDT", "Buy", 0.01, take_profit=round(last * 0.99, 1)))
    assert e.value.code == 10001
    with pytest.raises(OrderRejected):
        venue.place_order(order("BTCUSDT", "Sell", 0.01, stop_loss=round(last * 0.99, 1)))
    assert venue.positions() == []


def test_new_leverage_applies_to_the_open_position(venue: PaperVenue) -> None:
    venue.place_order(order("BTCUSDT", "Buy", 0.05))
    before = venue.balance().available
    venue.set_leverage("BTCUSDT", 20)
    pos = only_position(venue)
    assert pos.leverage == 20 and pos.margin == pytest.approx(0.05 * pos.entry_price / 20)
    assert venue.balance().available > before  # half the margin is freed


def test_leverage_beyond_the_instrument_is_rejected(venue: PaperVenue) -> None:
    with pytest.raises(OrderRejected):
        venue.set_leverage("SOLUSDT", 100)


# --- triggers along the path ---------------------------------------------------------------


def _open_with_stops(venue: PaperVenue, side: str, tp_pct: float, sl_pct: float) -> float:
    """Open BTC with TP/SL at the given percent from the price; return the entry."""
    last = venue.ticker("BTCUSDT").last
    s = 1 if side == "Buy" else -1
    tp, sl = round(last * (1 + s * tp_pct / 100), 1), round(last * (1 - s * sl_pct / 100), 1)
    info = venue.place_order(order("BTCUSDT", side, 0.01, take_profit=tp, stop_loss=sl))
    pos = only_position(venue)
    assert (pos.take_profit, pos.stop_loss) == (tp, sl)
    return info.avg_price


@pytest.mark.parametrize(("side", "move", "reason"), [
    ("Buy", 5.0, CloseReason.TAKE_PROFIT),
    ("Buy", -5.0, CloseReason.STOP_LOSS),
    ("Sell", -5.0, CloseReason.TAKE_PROFIT),
    ("Sell", 5.0, CloseReason.STOP_LOSS),
])
def test_tp_and_sl_hit_when_a_clock_jump_crosses_them(
    venue: PaperVenue, clock: ManualClock, side: str, move: float, reason: CloseReason
) -> None:
    _open_with_stops(venue, side, tp_pct=2.0, sl_pct=2.0)
    pos = only_position(venue)
    level = pos.take_profit if reason is CloseReason.TAKE_PROFIT else pos.stop_loss
    venue.feed.inject_move("BTCUSDT", move, over_sec=120)
    clock.advance(3600)  # far past the move: only the path shows where it crossed
    assert venue.positions() == []
    (trade,) = venue.closed_trades("BTCUSDT", T0)
    assert trade.reason is reason
    if reason is CloseReason.TAKE_PROFIT:
        assert trade.exit_price == level
    else:  # stops slip against the position
        assert trade.exit_price == pytest.approx(level, rel=3 * SLIP)
    assert T0 < trade.closed_at < T0 + 200  # when the path crossed, in clock time
    fill = venue.order_by_id("BTCUSDT", trade.order_id)
    assert fill is not None and fill.status == "Filled" and fill.reduce_only
    assert fill.realised_pnl == pytest.approx(trade.pnl)
    assert venue.wallet == pytest.approx(10_000 + trade.pnl)


def test_trailing_stop_follows_the_best_price(venue: PaperVenue, clock: ManualClock) -> None:
    entry = venue.place_order(order("BTCUSDT", "Buy", 0.01)).avg_price
    dist = round(entry * 0.01, 1)
    venue.set_trading_stop("BTCUSDT", trailing_stop=dist, active_price=round(entry * 1.01, 1))
    assert only_position(venue).trailing_stop == dist
    venue.feed.inject_move("BTCUSDT", 4.0, over_sec=120)
    clock.advance(150)
    assert only_position(venue).size == 0.01  # still riding the move up
    top = max(p for _, p in venue.feed.path_since("BTCUSDT", T0))
    venue.feed.inject_move("BTCUSDT", -4.0, over_sec=120)
    clock.advance(3600)
    (trade,) = venue.closed_trades("BTCUSDT", T0)
    assert trade.reason is CloseReason.TRAILING_STOP
    assert trade.exit_price == pytest.approx(top - dist, rel=3 * SLIP)
    assert trade.pnl > 0  # it locked in most of the move


def test_trailing_stop_waits_for_its_active_price(venue: PaperVenue, clock: ManualClock) -> None:
    entry = venue.place_order(order("BTCUSDT", "Buy", 0.01)).avg_price
    venue.set_trading_stop("BTCUSDT", trailing_stop=round(entry * 0.005, 1), active_price=round(entry * 1.05, 1))
    venue.feed.inject_move("BTCUSDT", -3.0, over_sec=120)  # would hit a 0.5 % trail at once
    clock.advance(600)
    assert only_position(venue).size == 0.01


def test_trading_stop_zero_cancels(venue: PaperVenue, clock: ManualClock) -> None:
    _open_with_stops(venue, "Buy", tp_pct=2.0, sl_pct=2.0)
    venue.set_trading_stop("BTCUSDT", trailing_stop=50.0, stop_loss=0, take_profit="0")  # type: ignore[arg-type]
    venue.set_trading_stop("BTCUSDT", trailing_stop=0)
    pos = only_position(venue)
    assert (pos.take_profit, pos.stop_loss, pos.trailing_stop) == (None, None, None)
    venue.feed.inject_move("BTCUSDT", -4.0, over_sec=120)
    clock.advance(600)
    assert only_position(venue).size == 0.01  # no stop left to hit


def test_set_trading_stop_sets_tp_sl_and_needs_a_position(venue: PaperVenue, clock: ManualClock) -> None:
    with pytest.raises(OrderRejected):
        venue.set_trading_stop("BTCUSDT", stop_loss=1.0)
    venue.place_order(order("BTCUSDT", "Sell", 0.01))
    last = venue.ticker("BTCUSDT").last
    venue.set_trading_stop("BTCUSDT", stop_loss=round(last * 1.02, 1))
    with pytest.raises(OrderRejected):  # a short's TP above the price
        venue.set_trading_stop("BTCUSDT", take_profit=round(last * 1.01, 1))
    venue.feed.inject_move("BTCUSDT", 4.0, over_sec=120)
    clock.advance(600)
    assert venue.closed_trades("BTCUSDT", T0)[0].reason is CloseReason.STOP_LOSS


def test_liquidation_when_the_move_exceeds_the_margin(venue: PaperVenue, clock: ManualClock) -> None:
    venue.set_leverage("BTCUSDT", 50)
    entry = venue.place_order(order("BTCUSDT", "Buy", 0.05)).avg_price
    liq = only_position(venue).liq_price
    assert liq == pytest.approx(entry * (1 - 1 / 50 + MAINTENANCE_MARGIN_RATE), abs=0.1)
    venue.feed.inject_move("BTCUSDT", -5.0, over_sec=120)
    clock.advance(3600)
    (trade,) = venue.closed_trades("BTCUSDT", T0)
    assert trade.reason is CloseReason.LIQUIDATION
    assert trade.exit_price == pytest.approx(liq, rel=3 * SLIP)
    assert trade.pnl < -0.8 * 0.05 * entry / 50  # most of the margin is gone


def test_stop_loss_before_liquidation_when_one_tick_crosses_both(venue: PaperVenue, clock: ManualClock) -> None:
    venue.set_leverage("BTCUSDT", 50)
    sl = round(venue.feed.price("BTCUSDT") * 0.99, 1)
    entry = venue.place_order(order("BTCUSDT", "Buy", 0.01, stop_loss=sl)).avg_price
    assert only_position(venue).liq_price > entry * 0.98
    venue.feed.inject_move("BTCUSDT", -10.0, over_sec=1)  # one tick through SL and liq price
    clock.advance(60)
    assert venue.closed_trades("BTCUSDT", T0)[0].reason is CloseReason.STOP_LOSS


def test_a_trigger_far_back_in_a_long_jump_is_not_missed(venue: PaperVenue, clock: ManualClock) -> None:
    _open_with_stops(venue, "Buy", tp_pct=20.0, sl_pct=3.0)
    venue.feed.inject_move("BTCUSDT", -8.0, over_sec=120, at=T0 + 3600)
    clock.advance(6 * 3600)  # more than the feed's tick buffer
    (trade,) = venue.closed_trades("BTCUSDT", T0)
    assert trade.reason is CloseReason.STOP_LOSS
    assert T0 + 3600 < trade.closed_at < T0 + 3600 + 130


def test_trigger_times_are_clock_times_when_the_feed_runs_faster(clock: ManualClock) -> None:
    feed = SimFeed(["BTCUSDT"], seed=42, start=T0 + 10_000, speed=10)
    venue = PaperVenue(feed, clock)
    _open_with_stops(venue, "Buy", tp_pct=2.0, sl_pct=2.0)
    feed.inject_move("BTCUSDT", -5.0, over_sec=100)
    clock.advance(60)  # 600 s of market
    (trade,) = venue.closed_trades("BTCUSDT", T0)
    assert T0 < trade.closed_at <= T0 + 10


# --- closed trades and orders ---------------------------------------------------------------


def test_closed_trades_newest_first_since_and_per_symbol(venue: PaperVenue, clock: ManualClock) -> None:
    venue.place_order(order("BTCUSDT", "Buy", 0.01))
    venue.place_order(order("BTCUSDT", "Sell", 0.01, reduce_only=True))
    clock.advance(100)
    _open_with_stops(venue, "Buy", tp_pct=1.0, sl_pct=1.0)
    venue.feed.inject_move("BTCUSDT", 3.0, over_sec=60)
    venue.place_order(order("ETHUSDT", "Sell", 0.1))
    venue.place_order(order("ETHUSDT", "Buy", 0.1, reduce_only=True))
    clock.advance(300)
    trades = venue.closed_trades("BTCUSDT", T0)
    assert [t.reason for t in trades] == [CloseReason.TAKE_PROFIT, CloseReason.UNKNOWN]
    assert trades[0].closed_at > trades[1].closed_at
    assert [t.reason for t in venue.closed_trades("BTCUSDT", T0 + 50)] == [CloseReason.TAKE_PROFIT]
    assert [t.symbol for t in venue.closed_trades("ETHUSDT", T0)] == ["ETHUSDT"]


def test_order_by_link_id(venue: PaperVenue) -> None:
    req = order("BTCUSDT", "Buy", 0.01)
    info = venue.place_order(req)
    assert venue.order_by_link_id("BTCUSDT", req.order_link_id) == info
    assert venue.order_by_link_id("ETHUSDT", req.order_link_id) is None
    assert venue.order_by_link_id("BTCUSDT", "never-sent") is None


# --- fault injection ----------------------------------------------------------------


def test_fail_before_leaves_no_trace(venue: PaperVenue) -> None:
    venue.fail_next("place_order", OutcomeUnknown("timeout"))
    req = order("BTCUSDT", "Buy", 0.01)
    with pytest.raises(OutcomeUnknown):
        venue.place_order(req)
    assert venue.positions() == []
    assert venue.order_by_link_id("BTCUSDT", req.order_link_id) is None
    venue.place_order(req)  # only the next call fails
    assert only_position(venue).size == 0.01


def test_fail_after_the_order_landed(venue: PaperVenue) -> None:
    venue.fail_next("place_order", OutcomeUnknown("timeout"), after=True)
    req = order("BTCUSDT", "Buy", 0.01)
    with pytest.raises(OutcomeUnknown):
        venue.place_order(req)
    found = venue.order_by_link_id("BTCUSDT", req.order_link_id)
    assert found is not None and found.status == "Filled"
    assert only_position(venue).size == 0.01
    with pytest.raises(OrderRejected) as e:  # sending it again is caught as a duplicate
        venue.place_order(req)
    assert e.value.code == 110072


def test_faults_for_other_calls_and_unknown_kinds(venue: PaperVenue) -> None:
    venue.fail_next("positions", VenueError("boom", code=10016))
    venue.fail_next("balance", OutcomeUnknown("slow"))
    with pytest.raises(VenueError):
        venue.positions()
    with pytest.raises(OutcomeUnknown):
        venue.balance()
    assert venue.positions() == []
    with pytest.raises(ValueError):
        venue.fail_next("place_ordr", OutcomeUnknown("typo"))


# --- time and threads ----------------------------------------------------------------


def test_an_hour_jump_completes(venue: PaperVenue, clock: ManualClock) -> None:
    venue.place_order(order("BTCUSDT", "Buy", 0.01))
    venue.place_order(order("ETHUSDT", "Sell", 0.1))
    clock.advance(3600)
    assert venue.balance().equity > 0
    assert venue.feed.now == T0 + 3600


def test_concurrent_orders_never_spend_more_margin_than_there_is(
    venue: PaperVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    venue.place_order(order("ETHUSDT", "Buy", 0.1))  # so the margin check reads a mark price
    venue.set_leverage("SOLUSDT", 1)
    real_ticker = venue.feed.ticker

    def slow_ticker(symbol: str) -> Ticker:
        time.sleep(0.002)  # a slow read inside the margin check: without the lock, threads interleave here
        return real_ticker(symbol)

    monkeypatch.setattr(venue.feed, "ticker", slow_ticker)
    filled: list[str] = []
    errors: list[Exception] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        try:  # ~3900 USDT of margin each: two fit in 10000, three do not
            filled.append(venue.place_order(order("SOLUSDT", "Buy", 16.0)).order_id)
        except OrderRejected as e:
            if e.code != 110007:
                errors.append(e)
        except Exception as e:  # noqa: BLE001 - a thread's exception would be lost
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(filled) == len(set(filled)) == 2
    assert only_position(venue, "SOLUSDT").size == 32.0
