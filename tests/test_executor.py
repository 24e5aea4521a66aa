"""Intents: durable before sending, idempotent, unknown outcomes looked up, never resent."""

import threading

import pytest

from engine.models import CloseReason, IntentStatus
from engine.venues.base import OrderRejected, OutcomeUnknown
from tests.rig import long_btc, make_rig, plan


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path / "state")
    yield r
    r.store.close()


def test_intent_is_durable_and_executing_before_the_order_is_sent(rig):
    review = plan(rig, long_btc())
    seen = {}
    real = rig.venue.place_order

    def spy(order):
        # A fresh read of the file, as a restarted process would see it.
        from engine.store import check_state_dir

        seen["status"] = rig.store.get_intent(order.order_link_id).status
        seen["files_ok"] = all(ok for _, ok, _ in check_state_dir(rig.store.state_dir))
        return real(order)

    rig.venue.place_order = spy
    intent = rig.engine.executor.open(review)
    assert seen == {"status": IntentStatus.EXECUTING, "files_ok": True}
    assert intent.status is IntentStatus.EXECUTED
    assert intent.intent_id.startswith("o-") and len(intent.intent_id) <= 36
    order = rig.venue.order_by_link_id("BTCUSDT", intent.intent_id)
    assert order is not None and order.filled
    meta = rig.store.get_position("BTCUSDT")
    assert meta.intent_id == intent.intent_id and meta.time_in_trade_limit_sec == 1800 and meta.cooldown_sec == 900
    assert "Intent registered: " + intent.intent_id + " for BTCUSDT long" in rig.lines()


def test_the_same_intent_is_never_sent_twice(rig):
    review = plan(rig, long_btc())
    first = rig.engine.executor.open(review)
    sent = []
    rig.venue.place_order = lambda o: sent.append(o)
    again = rig.engine.executor.open(review)
    assert again.intent_id == first.intent_id and sent == []
    assert f"IDEMPOTENT: intent_id={first.intent_id} already processed (EXECUTED)" in rig.lines("IDEMPOTENT")
    assert len(rig.venue.positions()) == 1


def test_a_rejection_is_failed_with_the_venues_code(rig):
    rig.venue.fail_next("place_order", OrderRejected("ab not enough for new order", code=110007))
    intent = rig.engine.executor.open(plan(rig, long_btc()))
    assert intent.status is IntentStatus.FAILED and "110007" in intent.reason
    assert rig.venue.positions() == [] and rig.store.get_position("BTCUSDT") is None


def test_timeout_after_the_order_landed_is_resolved_by_lookup(rig):
    rig.venue.fail_next("place_order", OutcomeUnknown("read timeout"), after=True)
    intent = rig.engine.executor.open(plan(rig, long_btc()))
    assert intent.status is IntentStatus.EXECUTED
    assert len(rig.venue.positions()) == 1 and rig.store.get_position("BTCUSDT") is not None
    assert any("ORDER OUTCOME UNKNOWN" in m for m in rig.lines("ORDER_UNKNOWN"))


def test_timeout_before_it_landed_stays_executing_then_fails_without_resending(rig):
    rig.venue.fail_next("place_order", OutcomeUnknown("connect timeout"))
    intent = rig.engine.executor.open(plan(rig, long_btc()))
    assert intent.status is IntentStatus.EXECUTING
    sent = []
    rig.venue.place_order = lambda o: sent.append(o)
    rig.engine.executor.resolve_pending()
    assert rig.store.get_intent(intent.intent_id).status is IntentStatus.EXECUTING  # too young to give up
    rig.clock.advance(61)  # the paper venue has no landing window: order_unknown_timeout_sec (60 s)
    rig.engine.executor.resolve_pending()
    failed = rig.store.get_intent(intent.intent_id)
    assert failed.status is IntentStatus.FAILED and "not found on the venue" in failed.reason
    assert sent == []


def test_pending_intent_found_later_was_never_sent(rig):
    from engine.models import Intent

    now = rig.clock.now()
    rig.store.put_intent(Intent(intent_id="o-abc", kind="OPEN", symbol="BTCUSDT", side="long", qty=0.01, created_at=now, updated_at=now))
    rig.engine.executor.resolve_pending()
    assert rig.store.get_intent("o-abc").status is IntentStatus.FAILED


def test_close_is_reduce_only_journals_and_starts_the_cooldown(rig):
    rig.engine.executor.open(plan(rig, long_btc()))
    sent = []
    real = rig.venue.place_order
    rig.venue.place_order = lambda o: (sent.append(o), real(o))[1]
    rig.clock.advance(120)
    intent = rig.engine.executor.close("BTCUSDT", CloseReason.FORCE_CLOSE)
    assert intent.status is IntentStatus.EXECUTED and intent.close_reason is CloseReason.FORCE_CLOSE
    assert len(sent) == 1 and sent[0].reduce_only and sent[0].side == "Sell"
    assert rig.venue.positions() == [] and rig.store.get_position("BTCUSDT") is None
    trade = rig.store.trades()[0]
    assert trade.reason is CloseReason.FORCE_CLOSE and trade.duration_sec == 120
    cd = rig.store.get_cooldown("BTCUSDT")
    assert cd.until - cd.started_at == 900 and cd.reason == "FORCE_CLOSE"


def test_racing_closes_send_one_order(rig):
    rig.engine.executor.open(plan(rig, long_btc()))
    sent = []
    real = rig.venue.place_order
    rig.venue.place_order = lambda o: (sent.append(o), real(o))[1]
    threads = [
        threading.Thread(target=rig.engine.executor.close, args=("BTCUSDT", reason))
        for reason in (CloseReason.FORCE_CLOSE, CloseReason.TIME_EXIT, CloseReason.FORCE_CLOSE)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sent) == 1
    assert len(rig.store.trades()) == 1
    assert len(rig.lines("NOTHING_TO_CLOSE")) == 2


def test_the_journal_keeps_fees_and_the_deciding_decisions(rig):
    review = plan(rig, long_btc())
    opened = rig.engine.executor.open(review)
    meta = rig.store.get_position("BTCUSDT")
    taker = rig.venue.taker_fee
    assert meta.open_fee == pytest.approx(meta.qty * meta.entry_price * taker)
    assert meta.decision_id == review.decision.decision_id
    rig.clock.advance(120)
    rig.engine.executor.close("BTCUSDT", CloseReason.AI_CLOSE, decision_id="d-closer")
    trade = rig.store.trades()[0]
    close_fee = trade.qty * trade.exit_price * taker
    assert trade.fees == pytest.approx(meta.open_fee + close_fee)
    gross = (trade.exit_price - trade.entry_price) * trade.qty
    assert trade.pnl == pytest.approx(gross - trade.fees)  # the journal's PnL is net of both fees
    assert trade.decision_id == review.decision.decision_id and trade.close_decision_id == "d-closer"
    assert trade.intent_id == opened.intent_id and trade.cooldown_sec == 900
