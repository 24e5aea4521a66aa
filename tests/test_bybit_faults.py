"""Every failure mode of issue 4, through the real pybit client against the fake:
timeouts and connection errors (unknown outcome), duplicates, rate limits, 5xx, clock
skew, refused keys, rejections. Each ends with the right intent status, a log line,
and never a second order."""

import time

import pytest

from engine.models import IntentStatus, OrderRequest
from engine.venues.base import AuthError, OrderRejected
from tests.fakes.bybit_rig import long_btc, make_bybit_rig, plan, venue_for

CREATE = "/v5/order/create"


@pytest.fixture
def venue(srv):
    return venue_for(srv)


@pytest.fixture
def rig(srv, tmp_path):
    r = make_bybit_rig(srv, tmp_path / "state")
    yield r
    r.store.close()


def order(link="o-1", qty=0.01):
    return OrderRequest(symbol="BTCUSDT", side="Buy", qty=qty, order_link_id=link, take_profit=102_000, stop_loss=98_500)


def user_orders(srv):
    return srv.exchange.orders_for("BTCUSDT")


def links(srv):
    return [p["orderLinkId"] for p in srv.sent(CREATE)]


# --- timeouts and connection errors -------------------------------------------------


def test_timeout_after_the_order_landed_is_found_by_lookup_not_resent(srv, venue):
    srv.exchange.fail(CREATE, "delay_after", seconds=1.0)  # processed, answer after the 0.5 s timeout
    info = venue.place_order(order("o-late-answer"))
    assert info.filled and info.order_link_id == "o-late-answer"
    assert links(srv) == ["o-late-answer"] and len(user_orders(srv)) == 1


def test_timeout_when_the_order_appears_only_after_a_moment(srv, venue):
    ex = srv.exchange
    ex.lookup_lag_sec = 1.2  # a fresh order is invisible to the lookups for a while
    ex.fail(CREATE, "delay_after", seconds=1.0)
    info = venue.place_order(order("o-lagging"))
    assert info.filled
    assert links(srv) == ["o-lagging"]  # not resent while it could still appear
    assert len(user_orders(srv)) == 1


def test_a_request_that_never_landed_is_sent_again_with_the_same_link_id_once_certainly_absent(srv, venue):
    srv.exchange.fail(CREATE, "drop", seconds=1.0)  # held past the timeout, then discarded
    started = time.monotonic()
    info = venue.place_order(order("o-dropped"))
    assert info.filled
    assert links(srv) == ["o-dropped", "o-dropped"] and len(user_orders(srv)) == 1
    # the resend waited for send time + recv_window (1 s) + the settle margin
    [t1, t2] = [t for t, _, p, _ in srv.exchange.requests if p == CREATE]
    assert t2 - t1 >= 1.0 + 1.5 - 0.1
    assert time.monotonic() - started < 4.0


def test_a_connection_reset_is_an_unknown_outcome_too(srv, venue):
    srv.exchange.fail(CREATE, "reset")
    info = venue.place_order(order("o-reset"))
    assert info.filled and links(srv) == ["o-reset", "o-reset"] and len(user_orders(srv)) == 1


def test_a_retry_answered_duplicate_is_resolved_by_lookup_not_a_failure(srv, venue):
    ex = srv.exchange
    ex.lookup_lag_sec = 3.0  # long enough for the look-up to believe it absent and resend
    ex.history_lag_sec = 3.0  # the executions too
    ex.fail(CREATE, "delay_after", seconds=1.0)
    info = venue.place_order(order("o-dup"))
    assert info.filled and info.order_link_id == "o-dup"
    assert links(srv) == ["o-dup", "o-dup"]  # the second got 110072
    assert len(user_orders(srv)) == 1


def test_unknown_outcome_is_bounded_then_failed_and_a_late_fill_is_adopted_never_reopened(srv, rig):
    # Every create passes the gateway and is held before the matching engine: the client
    # times out each time, and the look-ups cannot see it.
    gate = srv.exchange.gate(CREATE, phase="accepted")
    review = plan(rig, long_btc())
    started = time.monotonic()
    intent = rig.engine.executor.open(review)
    elapsed = time.monotonic() - started
    assert 5.0 <= elapsed < 8.0  # order_unknown_timeout_sec=5
    if intent.status is IntentStatus.EXECUTING:
        # The venue gave up while its last resend could still land: in flight until that
        # request's landing window (send + recv_window 1 s + 1.5 s) has passed.
        assert rig.engine.executor.land_by(intent) <= intent.sent_at + 2.5
        assert "BTCUSDT" in rig.engine.executor.in_flight()
        while time.time() < rig.engine.executor.land_by(intent):
            time.sleep(0.05)
        rig.engine.executor.resolve_pending()
        intent = rig.store.get_intent(intent.intent_id)
    assert intent.status is IntentStatus.FAILED
    assert "outcome unknown" in intent.reason and "not found on the venue by orderLinkId" in intent.reason
    assert any("ORDER OUTCOME UNKNOWN" in m for m in rig.lines("ORDER_UNKNOWN"))
    assert any(intent.intent_id in m for m in rig.lines("ORDER_FAILED"))
    assert user_orders(srv) == [] and rig.store.get_position("BTCUSDT") is None
    # The held requests land after all (both carry the same orderLinkId: one order).
    gate.release()
    deadline = time.monotonic() + 3
    while not rig.venue.positions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(user_orders(srv)) == 1 and set(links(srv)) == {intent.intent_id}
    sent_before = srv.count(CREATE)
    report = rig.engine.monitor.run_once()
    assert report.adopted == ["BTCUSDT"]
    meta = rig.store.get_position("BTCUSDT")
    assert meta.adopted and meta.intent_id == intent.intent_id and meta.time_in_trade_limit_sec == 1800
    assert rig.store.get_intent(intent.intent_id).status is IntentStatus.EXECUTED
    assert any(f"late fill of intent {intent.intent_id}" in m for m in rig.lines("ADOPTED"))
    # the same decision is never opened again
    again = rig.engine.executor.open(review)
    assert again.intent_id == intent.intent_id and srv.count(CREATE) == sent_before


# --- rate limits, 5xx, clock ----------------------------------------------------------


def test_rate_limit_waits_for_the_reset_header_and_keeps_the_link_id(srv, venue):
    srv.exchange.fail(CREATE, "retcode", ret_code=10006, ret_msg="Too many visits!", reset_in_ms=400, times=2)
    started = time.monotonic()
    info = venue.place_order(order("o-rl"))
    assert info.filled and time.monotonic() - started >= 0.7  # honoured the reset time twice
    assert links(srv) == ["o-rl"] * 3 and len(user_orders(srv)) == 1


def test_rate_limit_past_the_give_up_time_fails_the_intent_with_a_reason(srv, rig):
    srv.exchange.fail(CREATE, "retcode", ret_code=10006, ret_msg="Too many visits!", reset_in_ms=400, times=100)
    intent = rig.engine.executor.open(plan(rig, long_btc()))
    assert intent.status is IntentStatus.FAILED
    assert "gave up" in intent.reason and "10006" in intent.reason
    assert len(set(links(srv))) == 1 and user_orders(srv) == []
    assert any("ORDER FAILED BTCUSDT" in m and "gave up" in m for m in rig.lines("ORDER_FAILED"))


def test_5xx_backs_off_and_retries_with_the_same_link_id(srv, venue):
    srv.exchange.fail(CREATE, "http", status=503, times=2)
    info = venue.place_order(order("o-503"))
    assert info.filled and links(srv) == ["o-503"] * 3 and len(user_orders(srv)) == 1
    # a 5xx may have reached the matching engine: it looked the order up before each resend
    assert srv.count("/v5/order/realtime") >= 2


def test_5xx_after_the_order_landed_is_found_not_resent(srv, venue):
    srv.exchange.fail(CREATE, "http_after", status=502)
    info = venue.place_order(order("o-502"))
    assert info.filled and links(srv) == ["o-502"] and len(user_orders(srv)) == 1


def test_5xx_for_good_gives_up_with_the_intent_failed(srv, rig):
    srv.exchange.fail(CREATE, "http", status=503, times=100)
    intent = rig.engine.executor.open(plan(rig, long_btc()))
    assert intent.status is IntentStatus.FAILED and "gave up" in intent.reason and "503" in intent.reason
    assert user_orders(srv) == []


def test_timestamp_error_resyncs_the_clock_once_then_retries(srv, venue):
    srv.exchange.skew_ms = 3_000  # Bybit's clock 3 s ahead: our timestamps fall out of recv_window
    assert venue.balance().equity == 10_000
    assert srv.count("/v5/market/time") == 1 and abs(venue.client.offset_ms - 3_000) < 500
    info = venue.place_order(order("o-skew"))
    assert info.filled and srv.count("/v5/market/time") == 1  # no further resync needed


def test_a_second_timestamp_error_is_not_retried_in_a_loop(srv, venue):
    venue.ensure_position_mode()
    srv.exchange.fail(CREATE, "retcode", ret_code=10002, ret_msg="invalid request, please check your server timestamp", times=5)
    with pytest.raises(OrderRejected) as e:
        venue.place_order(order("o-skew2"))
    assert e.value.code == 10002 and srv.count(CREATE) == 2 and srv.count("/v5/market/time") == 1


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "qty, code, words",
    [(0.2, 110007, "ab not enough"), (0.00001, 10001, "minOrderQty")],
)
def test_rejections_fail_the_intent_with_bybits_code_and_message(srv, rig, qty, code, words):
    review = plan(rig, long_btc())
    if code == 110007:
        srv.exchange.wallet = 100.0
    review = review.model_copy(update={"order": review.order.model_copy(update={"qty": qty})})
    intent = rig.engine.executor.open(review)
    assert intent.status is IntentStatus.FAILED and str(code) in intent.reason and words in intent.reason
    assert any(words in m and str(code) in m for m in rig.lines("ORDER_FAILED"))
    assert user_orders(srv) == []


def test_a_reduce_only_rejection_fails_the_close_with_bybits_code(srv, rig):
    rig.engine.executor.open(plan(rig, long_btc()))
    srv.exchange.fail(CREATE, "retcode", ret_code=110017, ret_msg="current position is zero, cannot fix reduce-only order qty")
    from engine.models import CloseReason

    intent = rig.engine.executor.close("BTCUSDT", CloseReason.FORCE_CLOSE)
    assert intent.status is IntentStatus.FAILED and "110017" in intent.reason and "reduce-only" in intent.reason


def test_refused_keys_stop_trading_without_a_retry_loop(srv, tmp_path):
    rig = make_bybit_rig(srv, tmp_path / "state", bybit_api_secret="wrong-secret-not-real")
    try:
        import asyncio

        asyncio.run(rig.engine.start(schedule=False))
        assert rig.engine.degraded and "10004" in rig.engine.degraded
        assert any("TRADING STOPPED" in m for m in rig.lines("DEGRADED"))
        sent = len(srv.exchange.requests)
        with pytest.raises(AuthError):
            rig.venue.balance()
        with pytest.raises(AuthError):
            rig.venue.place_order(order("o-never"))
        private = [p for _, _, p, _ in srv.exchange.requests[sent:] if not p.startswith("/v5/market/")]
        assert private == []  # remembered: no further private request reaches Bybit
    finally:
        rig.store.close()


def test_a_read_only_key_fails_the_order_and_degrades_the_engine(srv, rig):
    import asyncio

    from tests.fakes.bybit_exchange import FAKE_KEY

    asyncio.run(rig.engine.start(schedule=False))
    assert not rig.engine.degraded
    srv.exchange.read_only.add(FAKE_KEY)
    review = plan(rig, long_btc())
    from engine.models import DecisionRecord

    record = DecisionRecord(decision=review.decision, review=review, status="PROPOSED", recorded_at=time.time())
    asyncio.run(rig.engine._execute(record))
    assert "10005" in rig.engine.degraded and rig.engine.paused
    failed = [i for i in rig.store.intents() if i.status is IntentStatus.FAILED]
    assert len(failed) == 1 and "10005" in failed[0].reason
    assert user_orders(srv) == []
