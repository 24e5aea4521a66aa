"""In flight is a state, not a failure (issue 9): an order whose outcome is unknown at a
restart stays unknown until it is found by orderLinkId or certainly cannot land any more
(send time + recv_window + settle margin, never more than order_unknown_timeout_sec);
meanwhile no entry of its symbol is sent (ORDER_IN_FLIGHT). A late fill is recognised by
orderLinkId and recorded against its intent: same side, opposite side netting a
position (in part, in full, or flipping it), or a partial fill.

Each test builds the state a killed process leaves (an EXECUTING intent with its send
time) and, where the order is still on the wire, sends that request through pybit with
the fake holding it before its matching engine; then starts the engine on that state
against the loopback Bybit (real pybit)."""

from __future__ import annotations

import time

import pytest

from engine.guardrails import ORDER_IN_FLIGHT, POSITION_OPEN
from engine.models import Action, CloseReason, IntentStatus
from engine.store import StateStore
from tests.fakes.bybit_rig import in_flight_open, long_btc, make_bybit_rig, scripted, send_raw

CREATE = "/v5/order/create"
LINK = "o-" + "a1" * 16


def leave(state, *intents) -> None:
    """The state a killed process left behind."""
    with StateStore(state) as store:
        for i in intents:
            store.put_intent(i)


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def user_orders(srv):
    return srv.exchange.orders_for("BTCUSDT")


def last_record(rig, symbol="BTCUSDT"):
    return next(r for r in rig.store.decisions() if r.decision.symbol == symbol)


@pytest.mark.parametrize("side", ["long", "short"])
async def test_an_open_in_flight_at_restart_blocks_entries_until_it_lands_then_is_recorded(srv, tmp_path, side):
    """Issue 9, sequence 1 (both sides): killed 0.3 s after an open was sent, the exchange
    holding it; the restart keeps it in flight, blocks the new OPEN_LONG the decider wants,
    and records the order against its intent when it lands. One order on the venue."""
    ex, state = srv.exchange, tmp_path / "state"
    sent = time.time()
    leave(state, in_flight_open(LINK, side, sent_at=sent))
    ex.fail(CREATE, "hold", seconds=3.0)  # inside the 4 s recv_window: it lands
    send_raw(srv, LINK, "Buy" if side == "long" else "Sell", recv_window_ms=4000)
    wait_for(lambda: srv.count(CREATE) == 1, 5, "the killed process's create to reach Bybit")
    time.sleep(0.3)
    rig = make_bybit_rig(srv, state, bybit_recv_window_ms=4000, mode="auto")
    try:
        decider = scripted(rig)
        await rig.engine.start(schedule=False)
        intent = rig.store.get_intent(LINK)
        assert intent.status is IntentStatus.EXECUTING and not rig.lines("ORDER_FAILED")
        assert any(LINK in m and "may still land until" in m for m in rig.lines("IN_FLIGHT"))
        decider.push(long_btc())
        await rig.engine.run_decision_cycle()
        rec = last_record(rig)
        assert rec.status == "BLOCKED" and ORDER_IN_FLIGHT in rec.review.reasons
        assert f"ORDER IN FLIGHT: BTCUSDT open {side} [intent:{LINK}]" in rec.message
        assert srv.count(CREATE) == 1  # nothing else went out
        wait_for(lambda: ex.open_positions(), 6, "the held order to land")
        await rig.engine.run_monitor()
        intent = rig.store.get_intent(LINK)
        [order] = user_orders(srv)
        assert intent.status is IntentStatus.EXECUTED and intent.order_id == order["orderId"]
        meta = rig.store.get_position("BTCUSDT")
        assert (meta.side, meta.qty, meta.intent_id, meta.time_in_trade_limit_sec) == (side, 0.01, LINK, 1800)
        [pos] = ex.open_positions()
        assert pos.size == meta.qty
        decider.push(long_btc())
        await rig.engine.run_decision_cycle()
        assert last_record(rig).status == "BLOCKED"
        assert POSITION_OPEN in last_record(rig).review.reasons or "ONE_WAY" in last_record(rig).review.reasons
        assert len(user_orders(srv)) == 1
    finally:
        rig.store.close()


async def test_an_order_killed_before_it_left_is_failed_at_its_deadline_not_before(srv, tmp_path):
    """SIGKILL between the durable write and the send: nothing reaches Bybit. The intent
    stays in flight until send time + recv_window + settle margin, then FAILED, and the
    symbol trades again."""
    state = tmp_path / "state"
    sent = time.time()
    leave(state, in_flight_open(LINK, sent_at=sent))
    rig = make_bybit_rig(srv, state, mode="auto")  # recv_window 1 s: may land until sent + 2.5 s
    try:
        decider = scripted(rig)
        await rig.engine.start(schedule=False)
        assert rig.store.get_intent(LINK).status is IntentStatus.EXECUTING
        assert rig.engine.executor.land_by(rig.store.get_intent(LINK)) == pytest.approx(sent + 2.5)
        decider.push(long_btc())
        await rig.engine.run_decision_cycle()
        assert ORDER_IN_FLIGHT in last_record(rig).review.reasons
        wait_for(lambda: time.time() >= sent + 2.6, 5, "the deadline")
        await rig.engine.run_monitor()
        failed = rig.store.get_intent(LINK)
        assert failed.status is IntentStatus.FAILED and "can no longer land" in failed.reason
        decider.push(long_btc())
        await rig.engine.run_decision_cycle()
        assert last_record(rig).status == "EXECUTED" and len(user_orders(srv)) == 1
    finally:
        rig.store.close()


async def test_in_flight_never_longer_than_order_unknown_timeout(srv, tmp_path):
    state = tmp_path / "state"
    sent = time.time() - 4.0
    leave(state, in_flight_open(LINK, sent_at=sent))
    rig = make_bybit_rig(srv, state, bybit_recv_window_ms=60_000, order_unknown_timeout_sec=5)
    try:
        await rig.engine.start(schedule=False)
        assert rig.engine.executor.land_by(rig.store.get_intent(LINK)) == pytest.approx(sent + 5)
        assert rig.store.get_intent(LINK).status is IntentStatus.EXECUTING
        wait_for(lambda: time.time() >= sent + 5.05, 3, "order_unknown_timeout_sec")
        await rig.engine.run_monitor()
        assert rig.store.get_intent(LINK).status is IntentStatus.FAILED
    finally:
        rig.store.close()


async def test_while_lookups_fail_an_order_stays_in_flight_past_its_deadline(srv, tmp_path):
    ex, state = srv.exchange, tmp_path / "state"
    sent = time.time() - 10
    leave(state, in_flight_open(LINK, sent_at=sent))
    ex.fail("/v5/order/realtime", "http", status=502, times=1000)
    rig = make_bybit_rig(srv, state)
    try:
        await rig.engine.start(schedule=False)
        assert rig.store.get_intent(LINK).status is IntentStatus.EXECUTING  # past the deadline, but not known
        assert any(LINK in m and "stays in flight" in m for m in rig.lines("LOOKUP_FAILED"))
        assert "BTCUSDT" in rig.engine.executor.in_flight()
        ex.faults.clear()
        await rig.engine.run_monitor()
        assert rig.store.get_intent(LINK).status is IntentStatus.FAILED
        assert rig.engine.executor.in_flight() == {}
    finally:
        rig.store.close()


async def test_an_order_the_order_caches_lost_is_resolved_from_the_executions(srv, tmp_path):
    ex, state = srv.exchange, tmp_path / "state"
    sent = time.time()
    leave(state, in_flight_open(LINK, sent_at=sent))
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, LINK, reduce=False, create_type="CreateByUser")
    ex.lookup_lag_sec = 600  # realtime and history do not show it (Bybit restarted, history lags)
    rig = make_bybit_rig(srv, state)
    try:
        await rig.engine.start(schedule=False)
        intent = rig.store.get_intent(LINK)
        assert intent.status is IntentStatus.EXECUTED and intent.order_id == user_orders(srv)[0]["orderId"]
        assert rig.store.get_position("BTCUSDT").intent_id == LINK
    finally:
        rig.store.close()


# --- late fills that land after the intent was given up on -----------------------------


def failed_open(link, side, *, qty=0.01):
    return in_flight_open(link, side, sent_at=time.time() - 120, qty=qty).model_copy(
        update={"status": IntentStatus.FAILED, "reason": "outcome unknown for 60s: not found on the venue"}
    )


async def _long_tracked(rig, srv):
    """A long opened by the engine (its own intent), tracked with metadata."""
    from tests.fakes.bybit_rig import plan

    intent = rig.engine.executor.open(plan(rig, long_btc(size_pct=8, leverage=4)))
    assert intent.status is IntentStatus.EXECUTED
    return rig.store.get_position("BTCUSDT")


@pytest.mark.parametrize("late_qty", ["full", "part", "more"])
async def test_a_late_short_netting_the_long_is_journalled_as_late_fill_against_its_intent(srv, tmp_path, late_qty):
    """Issue 9, sequence 1 with a short: the late order nets the long. The journal says
    LATE_FILL (not UNKNOWN), the intent records its order id, state agrees with the venue."""
    ex, state = srv.exchange, tmp_path / "state"
    short = "o-" + "5e" * 16
    leave(state, failed_open(short, "short"))
    rig = make_bybit_rig(srv, state)
    try:
        await rig.engine.start(schedule=False)
        meta = await _long_tracked(rig, srv)
        size = {"full": meta.qty, "part": round(meta.qty / 2, 3), "more": round(meta.qty + 0.004, 3)}[late_qty]
        ex._fill("BTCUSDT", "Sell", size, 100_000, 0, short, reduce=False, create_type="CreateByUser")  # lands now
        await rig.engine.run_monitor()
        [trade] = rig.store.trades()
        intent = rig.store.get_intent(short)
        late_order = next(o for o in user_orders(srv) if o["orderLinkId"] == short)
        assert trade.reason is CloseReason.LATE_FILL and trade.side == "long"
        assert trade.qty == pytest.approx(min(size, meta.qty))
        assert intent.status is IntentStatus.EXECUTED and intent.order_id == late_order["orderId"]
        assert any("netted by the late short open" in m and short in m for m in rig.lines("LATE_FILL"))
        venue = {p.symbol: p for p in rig.venue.positions()}
        held = rig.store.get_position("BTCUSDT")
        if late_qty == "full":
            assert venue == {} and held is None
        elif late_qty == "part":
            assert (held.side, held.qty) == ("long", venue["BTCUSDT"].size) and venue["BTCUSDT"].side == "long"
            assert trade.cooldown_sec is None  # the rest is still open
        else:  # one-way flip: the rest opened a short, which is the late intent's
            assert (held.side, held.qty, held.intent_id) == ("short", venue["BTCUSDT"].size, short)
            assert venue["BTCUSDT"].side == "short"
    finally:
        rig.store.close()


async def test_a_late_same_side_fill_onto_a_tracked_position_is_recorded_and_sized(srv, tmp_path):
    """The duplicate of sequence 1 (venue 0.054, state 0.027) can no longer happen: if an
    order lands after its deadline anyway, the size follows the venue and the intent says."""
    ex, state = srv.exchange, tmp_path / "state"
    late = "o-" + "d0" * 16
    leave(state, failed_open(late, "long"))
    rig = make_bybit_rig(srv, state)
    try:
        await rig.engine.start(schedule=False)
        meta = await _long_tracked(rig, srv)
        ex._fill("BTCUSDT", "Buy", meta.qty, 100_000, 0, late, reduce=False, create_type="CreateByUser")
        report = rig.engine.monitor.run_once()
        assert report.resized == ["BTCUSDT"]
        [pos] = rig.venue.positions()
        assert rig.store.get_position("BTCUSDT").qty == pos.size == pytest.approx(2 * meta.qty)
        assert rig.store.get_intent(late).status is IntentStatus.EXECUTED
        assert any("grew by" in m and late in m for m in rig.lines("LATE_FILL"))
    finally:
        rig.store.close()


async def test_a_late_partial_fill_is_adopted_with_what_filled_and_its_limits(srv, tmp_path):
    ex, state = srv.exchange, tmp_path / "state"
    late = "o-" + "9a" * 16
    leave(state, failed_open(late, "long", qty=0.02))
    rig = make_bybit_rig(srv, state)
    try:
        ex.partial_fills.append(0.5)
        send_raw(srv, late, "Buy", "0.02").join(5)
        await rig.engine.start(schedule=False)
        meta = rig.store.get_position("BTCUSDT")
        assert (meta.qty, meta.intent_id, meta.time_in_trade_limit_sec) == (0.01, late, 1800)
        intent = rig.store.get_intent(late)
        assert intent.status is IntentStatus.EXECUTED and intent.order_id
    finally:
        rig.store.close()


async def test_a_position_is_not_adopted_while_an_open_of_its_symbol_is_in_flight(srv, tmp_path):
    """The position is probably that order's: it gets that intent's limits once found, not
    the default ones; the log says why it waits."""
    ex, state = srv.exchange, tmp_path / "state"
    leave(state, in_flight_open(LINK, sent_at=time.time()))
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, LINK, reduce=False, create_type="CreateByUser")
    ex.lookup_lag_sec = ex.history_lag_sec = 1.0  # it landed; the look-ups do not show it yet
    rig = make_bybit_rig(srv, state)
    try:
        await rig.engine.start(schedule=False)
        assert rig.store.get_position("BTCUSDT") is None
        assert any("NOT ADOPTED YET: BTCUSDT long" in m and LINK in m for m in rig.lines("NOT_ADOPTED"))
        time.sleep(1.1)
        await rig.engine.run_monitor()
        meta = rig.store.get_position("BTCUSDT")
        assert meta.intent_id == LINK and not meta.adopted and meta.time_in_trade_limit_sec == 1800
    finally:
        rig.store.close()


async def test_untracked_positions_wait_for_the_lookups_and_say_so(srv, tmp_path):
    ex, state = srv.exchange, tmp_path / "state"
    late = "o-" + "7c" * 16
    leave(state, failed_open(late, "long"))
    ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, "by-hand", reduce=False, create_type="CreateByUser")
    rig = make_bybit_rig(srv, state)
    try:
        ex.fail("/v5/order/realtime", "http", status=502, times=1000)
        await rig.engine.start(schedule=False)
        assert rig.store.get_position("BTCUSDT") is None
        [said] = rig.lines("NOT_ADOPTED")
        assert "order look-ups fail" in said and "HTTP 502" in said
        await rig.engine.run_monitor()
        assert len(rig.lines("NOT_ADOPTED")) == 1  # said once
        ex.faults.clear()
        await rig.engine.run_monitor()
        meta = rig.store.get_position("BTCUSDT")
        assert meta.adopted and meta.intent_id is None  # by hand, not the late order
    finally:
        rig.store.close()


async def test_an_acknowledged_order_not_visible_yet_gets_the_whole_unknown_timeout(srv, tmp_path):
    ex = srv.exchange
    rig = make_bybit_rig(srv, tmp_path / "state")
    try:
        from tests.fakes.bybit_rig import plan

        await rig.engine.start(schedule=False)
        ex.lookup_lag_sec = ex.history_lag_sec = 600  # acknowledged, then invisible to every look-up
        intent = rig.engine.executor.open(plan(rig, long_btc()))
        assert intent.status is IntentStatus.EXECUTING and intent.order_id == user_orders(srv)[0]["orderId"]
        assert rig.engine.executor.land_by(intent) == pytest.approx(intent.sent_at + 5)  # order_unknown_timeout_sec
        assert "BTCUSDT" in rig.engine.executor.in_flight()
    finally:
        rig.store.close()


async def test_a_decision_to_close_is_never_blocked_by_an_order_in_flight(srv, tmp_path):
    state = tmp_path / "state"
    leave(state, in_flight_open("o-" + "ee" * 16, sent_at=time.time(), symbol="BTCUSDT"))
    srv.exchange._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, "by-hand", reduce=False, create_type="CreateByUser")
    rig = make_bybit_rig(srv, state, mode="auto")
    try:
        decider = scripted(rig)
        await rig.engine.start(schedule=False)
        decider.push(long_btc(action=Action.CLOSE))
        await rig.engine.run_decision_cycle()
        assert last_record(rig).status == "EXECUTED" and rig.venue.positions() == []
    finally:
        rig.store.close()


@pytest.mark.parametrize("action", [Action.OPEN_LONG, Action.OPEN_SHORT])
def test_order_in_flight_blocks_entries_of_its_symbol_either_side_never_a_close(action, settings):
    from engine import guardrails
    from tests.conftest import BALANCE, BTC, features

    ctx = guardrails.ReviewContext(
        now=0.0, balance=BALANCE, features={"BTCUSDT": features()}, instruments={"BTCUSDT": BTC},
        in_flight={"BTCUSDT": "open long [intent:o-x] sent 1s ago, outcome unknown; it may land until 12:00:21 UTC"},
    )
    review = guardrails.review(long_btc(action=action), ctx, settings)
    assert review.verdict.value == "BLOCKED" and review.reasons == [ORDER_IN_FLIGHT]
    assert review.detail == ["ORDER IN FLIGHT: BTCUSDT open long [intent:o-x] sent 1s ago, outcome unknown; it may "
                             "land until 12:00:21 UTC; no BTCUSDT entry until it is found or can no longer land"]
    other = guardrails.review(long_btc(action=action, symbol="ETHUSDT"), ctx, settings)
    assert ORDER_IN_FLIGHT not in other.reasons
    held = guardrails.ReviewContext(now=0.0, balance=BALANCE, positions={"BTCUSDT": "long"}, in_flight=ctx.in_flight,
                                    features=ctx.features, instruments=ctx.instruments)
    assert guardrails.review(long_btc(action=Action.CLOSE), held, settings).verdict.value == "EXECUTE"


async def test_metadata_of_a_position_closed_before_a_new_open_is_journalled_not_reused(srv, tmp_path):
    """A take profit closes the long between two monitor passes and the next cycle opens a
    new long: the old metadata is journalled with the venue's reason, the new position gets
    its own (its own time limit from now), never the old one's."""
    from tests.fakes.bybit_rig import plan

    rig = make_bybit_rig(srv, tmp_path / "state")
    try:
        await rig.engine.start(schedule=False)
        old = await _long_tracked(rig, srv)
        srv.exchange.set_price("BTCUSDT", old.take_profit + 50)  # TP on the venue, not seen yet
        srv.exchange.set_price("BTCUSDT", 100_000)
        fresh = rig.engine.executor.open(plan(rig, long_btc(size_pct=8, leverage=4)))
        assert fresh.status is IntentStatus.EXECUTED
        [trade] = rig.store.trades()
        assert trade.reason is CloseReason.TAKE_PROFIT and trade.intent_id == old.intent_id
        meta = rig.store.get_position("BTCUSDT")
        assert meta.intent_id == fresh.intent_id and meta.opened_at > old.opened_at
        assert rig.engine.monitor.run_once().venue_closes == []  # nothing left to reconcile
    finally:
        rig.store.close()


async def test_an_in_flight_open_found_filled_onto_a_tracked_long_is_named_as_the_growth(srv, tmp_path):
    from tests.fakes.bybit_rig import plan

    ex, state = srv.exchange, tmp_path / "state"
    leave(state, in_flight_open(LINK, sent_at=time.time(), qty=0.01))
    ex.lookup_lag_sec = ex.history_lag_sec = 1.5  # its order lands; the look-ups show it a moment later
    rig = make_bybit_rig(srv, state, bybit_recv_window_ms=5000)
    try:
        # (only a test can send this entry: the guardrails would say ORDER_IN_FLIGHT)
        review = plan(rig, long_btc(size_pct=8, leverage=4))
        ex._fill("BTCUSDT", "Buy", 0.01, 100_000, 0, LINK, reduce=False, create_type="CreateByUser")
        await rig.engine.start(schedule=False)
        assert rig.store.get_intent(LINK).status is IntentStatus.EXECUTING
        rig.engine.executor.open(review)
        time.sleep(1.6)
        await rig.engine.run_monitor()
        [pos] = rig.venue.positions()
        meta = rig.store.get_position("BTCUSDT")
        assert meta.qty == pos.size and rig.store.get_intent(LINK).status is IntentStatus.EXECUTED
        assert any("grew by 0.01" in m and LINK in m for m in rig.lines("LATE_FILL"))
    finally:
        rig.store.close()
