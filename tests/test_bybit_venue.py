"""BybitVenue against the loopback fake through the real pybit client: request shapes,
instruments, positions, one-way mode, leverage, TP/SL, trailing, closes with their reason."""

import time

import pytest

from engine.models import CloseReason, OrderRequest
from engine.venues import bybit as bybit_mod
from engine.venues.base import OrderRejected
from tests.fakes.bybit_rig import venue_for


@pytest.fixture
def venue(srv):
    return venue_for(srv)


def buy(venue, link="o-1", qty=0.01, **over):
    kw = dict(symbol="BTCUSDT", side="Buy", qty=qty, order_link_id=link, take_profit=102_000, stop_loss=98_500)
    kw.update(over)
    return venue.place_order(OrderRequest(**kw))


def test_open_is_a_market_order_with_full_tpsl_one_way_and_the_intent_id(srv, venue):
    info = buy(venue, "o-open-1", qty=0.0129, take_profit=None)
    assert info.filled and info.order_link_id == "o-open-1" and info.avg_price == 100_000
    sent = srv.sent("/v5/order/create")
    assert sent == [{
        "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
        "qty": "0.012",  # rounded down to qtyStep 0.001
        "positionIdx": 0, "orderLinkId": "o-open-1", "tpslMode": "Full", "stopLoss": "98500",
    }]
    # one-way made sure of at start ("not modified" is success)
    assert srv.sent("/v5/position/switch-mode") == [{"category": "linear", "coin": "USDT", "mode": 0}]
    [pos] = venue.positions()
    assert (pos.symbol, pos.side, pos.size, pos.stop_loss, pos.take_profit) == ("BTCUSDT", "long", 0.012, 98_500, None)


def test_prices_are_rounded_to_the_tick(srv, venue):
    buy(venue, take_profit=102_000.06, stop_loss=98_499.94)
    sent = srv.sent("/v5/order/create")[0]
    assert (sent["takeProfit"], sent["stopLoss"]) == ("102000.1", "98499.9")


def test_a_quantity_below_min_order_qty_is_refused_before_sending(srv, venue):
    with pytest.raises(OrderRejected, match="below minOrderQty 0.001"):
        buy(venue, qty=0.0009)
    assert srv.count("/v5/order/create") == 0


def test_instruments_are_cached_and_refreshed(srv, venue, monkeypatch):
    inst = venue.instruments(["BTCUSDT", "NOPEUSDT"])
    assert list(inst) == ["BTCUSDT"]
    b = inst["BTCUSDT"]
    assert (b.qty_step, b.min_qty, b.min_notional, b.tick_size, b.max_leverage) == (0.001, 0.001, 5, 0.1, 100)
    n = srv.count("/v5/market/instruments-info")
    venue.instruments(["BTCUSDT"])
    assert srv.count("/v5/market/instruments-info") == n  # cached
    srv.exchange.instruments["BTCUSDT"].status = "Closed"
    monkeypatch.setattr(bybit_mod, "INSTRUMENT_TTL_SEC", 0.0)
    assert venue.instruments(["BTCUSDT"]) == {}  # refreshed: it no longer trades


def test_leverage_not_modified_is_success(srv, venue):
    venue.set_leverage("BTCUSDT", 5)
    venue.set_leverage("BTCUSDT", 5)  # 110043
    assert srv.sent("/v5/position/set-leverage")[0] == {
        "category": "linear", "symbol": "BTCUSDT", "buyLeverage": "5", "sellLeverage": "5"}
    with pytest.raises(OrderRejected) as e:
        venue.set_leverage("BTCUSDT", 500)
    assert e.value.code == 10001


def test_flat_positions_are_ignored_and_balance_is_the_unified_wallet(srv, venue):
    buy(venue)
    venue.place_order(OrderRequest(symbol="BTCUSDT", side="Sell", qty=0.01, order_link_id="c-1", reduce_only=True))
    rows = srv.exchange.r_positions({"category": "linear", "settleCoin": "USDT"}, None)["list"]
    assert rows and rows[0]["size"] == "0"  # Bybit lists the flat slot ...
    assert venue.positions() == []  # ... which is not a position
    bal = venue.balance()
    assert bal.equity == pytest.approx(10_000 - 2 * 0.01 * 100_000 * 0.00055)
    assert bal.available == pytest.approx(bal.equity)


def test_close_is_reduce_only_market_with_its_own_link_id_and_realised_pnl(srv, venue):
    buy(venue)
    srv.exchange.set_price("BTCUSDT", 101_000)
    info = venue.place_order(OrderRequest(symbol="BTCUSDT", side="Sell", qty=0.01, order_link_id="c-close", reduce_only=True))
    sent = srv.sent("/v5/order/create")[-1]
    assert sent["reduceOnly"] is True and sent["orderLinkId"] == "c-close" and "takeProfit" not in sent
    assert info.filled and info.avg_price == 101_000
    assert info.realised_pnl == pytest.approx(10 - 0.01 * 101_000 * 0.00055 - 0.01 * 100_000 * 0.00055)


def test_reduce_only_without_a_position_is_refused_with_bybits_code(srv, venue):
    with pytest.raises(OrderRejected) as e:
        venue.place_order(OrderRequest(symbol="BTCUSDT", side="Sell", qty=0.01, order_link_id="c-x", reduce_only=True))
    assert e.value.code == 110017 and "reduce-only" in e.value.message


def test_klines_come_oldest_first(venue):
    ks = venue.klines("BTCUSDT", 5, 50)
    assert len(ks) == 50 and all(a.start < b.start for a, b in zip(ks, ks[1:]))
    assert ks[-1].start % 300 == 0


@pytest.mark.parametrize(
    "price, reason",
    [(102_100, CloseReason.TAKE_PROFIT), (98_400, CloseReason.STOP_LOSS)],
)
def test_closed_trades_carry_the_closing_orders_reason(srv, venue, price, reason):
    t0 = time.time() - 1
    buy(venue)
    srv.exchange.set_price("BTCUSDT", price)
    assert venue.positions() == []
    [c] = venue.closed_trades("BTCUSDT", since=t0)
    assert c.reason is reason and c.side == "long" and c.qty == 0.01
    assert c.exit_price == (102_000 if reason is CloseReason.TAKE_PROFIT else 98_500)
    assert (c.pnl > 0) == (reason is CloseReason.TAKE_PROFIT)


def test_liquidation_and_lagging_history(srv, venue):
    t0 = time.time() - 1
    venue.set_leverage("BTCUSDT", 50)
    venue.place_order(OrderRequest(symbol="BTCUSDT", side="Buy", qty=0.01, order_link_id="o-liq"))
    srv.exchange.history_lag_sec = 1.0  # closed-pnl and the system order appear a second late
    srv.exchange.set_price("BTCUSDT", 97_000)
    started = time.monotonic()
    [c] = venue.closed_trades("BTCUSDT", since=t0)
    assert c.reason is CloseReason.LIQUIDATION
    assert time.monotonic() - started >= 0.7  # it waited for the history instead of saying UNKNOWN


def test_trailing_stop_is_set_on_the_position_and_closes_it(srv, venue):
    t0 = time.time() - 1
    buy(venue, take_profit=None, stop_loss=None)
    venue.set_trading_stop("BTCUSDT", trailing_stop=500.04)
    assert srv.sent("/v5/position/trading-stop")[-1] == {
        "category": "linear", "symbol": "BTCUSDT", "tpslMode": "Full", "positionIdx": 0, "trailingStop": "500"}
    assert venue.positions()[0].trailing_stop == 500
    venue.set_trading_stop("BTCUSDT", trailing_stop=500)  # 34040 not modified: fine
    srv.exchange.set_price("BTCUSDT", 101_000)
    srv.exchange.set_price("BTCUSDT", 100_400)
    [c] = venue.closed_trades("BTCUSDT", since=t0)
    assert c.reason is CloseReason.TRAILING_STOP and c.exit_price == 100_500


def test_a_hedge_account_is_switched_to_one_way_when_flat(srv, venue):
    srv.exchange.position_mode = 3
    buy(venue)
    assert srv.exchange.position_mode == 0 and srv.sent("/v5/order/create")[0]["positionIdx"] == 0


def test_a_hedge_account_that_cannot_switch_refuses_to_open_and_says_how_to_fix(srv, venue):
    ex = srv.exchange
    ex.position_mode = 3
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 1, "by-hand", reduce=False, create_type="CreateByUser")
    with pytest.raises(OrderRejected) as e:
        buy(venue)
    msg = str(e.value)
    assert "hedge mode" in msg and "BYBIT_HEDGE_MODE" in msg and "One-Way" in msg
    assert srv.count("/v5/order/create") == 0
    # exits keep working: the close uses the hedge slot of the long (positionIdx 1)
    assert [p.side for p in venue.positions()] == ["long"]
    info = venue.place_order(OrderRequest(symbol="BTCUSDT", side="Sell", qty=0.01, order_link_id="c-h", reduce_only=True))
    assert info.filled and srv.sent("/v5/order/create")[-1]["positionIdx"] == 1
    assert venue.positions() == []


def test_hedge_mode_setting_trades_the_hedge_slots(srv):
    srv.exchange.position_mode = 3
    venue = venue_for(srv, hedge_mode=True)
    buy(venue)
    assert srv.count("/v5/position/switch-mode") == 0
    assert srv.sent("/v5/order/create")[0]["positionIdx"] == 1


# --- the position mode is read, not guessed (issue 9) ---------------------------------

SWITCH = "/v5/position/switch-mode"


def test_a_skewed_clock_at_start_is_resynced_not_taken_for_a_hedge_account(srv, venue):
    ex = srv.exchange
    ex.skew_ms = 8_000  # Bybit's clock 8 s ahead: the first signed request is refused (10002)
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, "held", reduce=False, create_type="CreateByUser")
    assert venue.ensure_position_mode() == ""  # one-way: "not modified" after the resync
    assert venue.position_mode == "one-way" and venue.refusal == ""
    assert srv.count(SWITCH) == 2 and srv.count("/v5/market/time") == 1
    info = venue.place_order(OrderRequest(symbol="BTCUSDT", side="Sell", qty=0.01, order_link_id="c-skew",
                                          reduce_only=True))
    assert info.filled and srv.sent("/v5/order/create")[-1]["positionIdx"] == 0


def test_switch_mode_refused_for_another_reason_is_that_reason_and_the_mode_is_read(srv, venue, caplog):
    ex = srv.exchange
    ex.fail(SWITCH, "retcode", ret_code=10001, ret_msg="params error: coin invalid")
    assert venue.ensure_position_mode() == ""  # the position list says one-way
    assert any("params error: coin invalid" in r.getMessage() and "one-way" in r.getMessage() for r in caplog.records)
    # a hedge account whose switch is refused for another reason: hedge, and the reason as it was
    ex.position_mode = 3
    ex.fail(SWITCH, "retcode", ret_code=10001, ret_msg="params error: coin invalid")
    venue.forget_position_mode()
    refusal = venue.ensure_position_mode()
    assert "hedge mode" in refusal and "params error: coin invalid" in refusal and "10001" in refusal


def test_switch_mode_rate_limited_is_retried_like_any_request(srv, venue):
    srv.exchange.fail(SWITCH, "retcode", ret_code=10006, ret_msg="Too many visits!", reset_in_ms=200, times=2)
    assert venue.ensure_position_mode() == "" and venue.position_mode == "one-way"
    assert srv.count(SWITCH) == 3


def test_a_mode_that_cannot_be_read_refuses_the_open_with_the_reason_and_is_asked_again(srv, venue):
    srv.exchange.fail(SWITCH, "http", status=502, times=100)  # pybit: FailedRequestError, our back-off
    with pytest.raises(OrderRejected, match="not sent: Bybit busy"):
        buy(venue)
    assert srv.count("/v5/order/create") == 0 and venue.position_mode == "unknown"
    srv.exchange.faults.clear()
    assert buy(venue).filled and venue.position_mode == "one-way"


def test_an_account_switched_to_hedge_mid_run_is_read_again_on_the_mismatch(srv, venue):
    ex = srv.exchange
    assert buy(venue, "o-a").filled
    venue.place_order(OrderRequest(symbol="BTCUSDT", side="Sell", qty=0.01, order_link_id="c-a", reduce_only=True))
    with ex.lock:
        ex.position_mode = 3  # switched by hand on Bybit while flat
        ex.touched.clear()  # (so the position list shows nothing that would tell first)
    info = buy(venue, "o-b")
    assert info.filled
    sent = [(p["orderLinkId"], p["positionIdx"]) for p in srv.sent("/v5/order/create")]
    assert sent[-2:] == [("o-b", 0), ("o-b", 0)]  # refused 10001, mode read (switched back), sent again
    assert ex.position_mode == 0 and srv.count(SWITCH) == 2
    assert len([o for o in ex.orders_for("BTCUSDT") if o["orderLinkId"] == "o-b"]) == 1


def test_a_hedge_account_with_hedge_mode_set_but_one_way_uses_idx_0(srv):
    venue = venue_for(srv, hedge_mode=True)  # BYBIT_HEDGE_MODE=true on a one-way account
    assert buy(venue).filled and srv.sent("/v5/order/create")[0]["positionIdx"] == 0


def test_closes_use_the_positionidx_the_venue_reports(srv, venue):
    ex = srv.exchange
    ex.position_mode = 3
    ex._fill("BTCUSDT", "Sell", 0.01, 100_000, 2, "by-hand", reduce=False, create_type="CreateByUser")
    [pos] = venue.positions()
    assert (pos.side, pos.position_idx) == ("short", 2)
    info = venue.place_order(OrderRequest(symbol="BTCUSDT", side="Buy", qty=0.01, order_link_id="c-idx",
                                          reduce_only=True, position_idx=pos.position_idx))
    assert info.filled and srv.sent("/v5/order/create")[-1]["positionIdx"] == 2 and venue.positions() == []


# --- look-ups -----------------------------------------------------------------------------


def test_an_order_the_order_caches_do_not_show_is_found_in_the_executions(srv, venue):
    buy(venue, "o-exec")
    srv.exchange.lookup_lag_sec = 60  # realtime and history do not show it (cache wiped, history lagging)
    info = venue.order_by_link_id("BTCUSDT", "o-exec")
    assert info is not None and info.filled and info.filled_qty == 0.01 and info.avg_price == 100_000
    assert info.status == "Filled" and info.fee == pytest.approx(0.01 * 100_000 * 0.00055)
    assert srv.sent("/v5/execution/list")[-1]["orderLinkId"] == "o-exec"
    assert venue.order_by_link_id("BTCUSDT", "o-nothing") is None


def test_a_partly_filled_market_order_is_reported_with_what_filled(srv, venue):
    srv.exchange.partial_fills.append(0.5)
    info = buy(venue, "o-half", qty=0.02)
    assert info.filled and info.filled_qty == 0.01 and info.status == "PartiallyFilledCanceled"
    assert venue.positions()[0].size == 0.01
