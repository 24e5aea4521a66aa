"""An AUTO entry whose decider took its time (a model: seconds) is reviewed again on the
market at send time: sized and bracketed (TP/SL) from the price it fills near, not the one
the model was shown; nothing is sent when that market cannot be read. A quick decider (the
rule decider, a replay's standing clock) is not reviewed twice."""

from __future__ import annotations

import pytest

from engine.models import MarketSnapshot
from engine.venues.base import VenueError
from tests.rig import ScriptedDecider, calm, long_btc, make_rig


class SlowDecider(ScriptedDecider):
    """Takes `seconds` of market time to answer, as a model does; `during` runs meanwhile."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.clock = None
        self.during = None
        self.shown: list[MarketSnapshot] = []

    async def decide(self, snapshot: MarketSnapshot):
        self.shown.append(snapshot)
        self.clock.advance(self.seconds)
        if self.during is not None:
            self.during()
        return await super().decide(snapshot)


def rig_with(tmp_path, seconds: float):
    decider = SlowDecider(seconds)
    rig = make_rig(tmp_path / "state", decider=decider, mode="auto")
    decider.clock = rig.clock
    calm(rig)
    real = rig.engine.market.features

    def calm_features(symbols, now, tickers=None):  # the second look sees the same calm market
        feats = real(symbols, now, tickers)
        return {s: f.model_copy(update=dict(trend_1m=1, trend_5m=1, trend_15m=1, ret_5m_pct=0.0, last_range_1m_pct=0.0))
                for s, f in feats.items()}

    rig.engine.market.features = calm_features
    return rig


def executed(rig):
    [rec] = [r for r in rig.store.decisions() if r.status == "EXECUTED"]
    return rec


@pytest.fixture
def slow(tmp_path):
    rig = rig_with(tmp_path, 60.0)
    yield rig
    rig.store.close()


async def test_an_entry_decided_on_an_old_market_is_sized_and_bracketed_on_the_market_now(slow):
    rig = slow
    await rig.engine.start(schedule=False)
    rig.decider.push(long_btc(tp_pct=2.0, sl_pct=1.5))
    await rig.engine.run_decision_cycle()
    shown_ask = rig.decider.shown[0].symbols["BTCUSDT"].ask
    ask_now = rig.venue.ticker("BTCUSDT").ask
    assert ask_now != shown_ask  # the market moved while the model thought (else this proves nothing)
    order = executed(rig).review.order
    assert order.price == ask_now
    assert order.take_profit == pytest.approx(ask_now * 1.02, rel=1e-4)
    assert order.stop_loss == pytest.approx(ask_now * 0.985, rel=1e-4)
    intent = rig.store.get_intent(executed(rig).intent_id)
    assert (intent.take_profit, intent.stop_loss) == (order.take_profit, order.stop_loss)
    [line] = rig.lines("REPRICED")
    assert line.startswith("BTCUSDT OPEN_LONG reviewed again on the market now (the model saw it 60.0 s ago)")
    assert executed(rig).inputs.price == rig.venue.ticker("BTCUSDT").last


async def test_nothing_is_sent_when_the_market_cannot_be_read_at_send_time(slow):
    rig = slow
    await rig.engine.start(schedule=False)

    def gone(*_a, **_k):
        raise VenueError("market data endpoint down")

    rig.decider.during = lambda: setattr(rig.engine.market, "features", gone)
    rig.decider.push(long_btc())
    await rig.engine.run_decision_cycle()
    assert rig.venue.positions() == []
    [rec] = [r for r in rig.store.decisions() if r.decision.symbol == "BTCUSDT"]
    assert rec.status == "BLOCKED" and rec.review.reasons == ["NO_MARKET_DATA"]
    assert "its market could not be read when it was to be sent" in rec.message


async def test_a_quick_decider_is_not_reviewed_twice(tmp_path):
    rig = rig_with(tmp_path, 0.2)
    try:
        await rig.engine.start(schedule=False)
        rig.decider.push(long_btc())
        await rig.engine.run_decision_cycle()
        assert rig.lines("REPRICED") == []
        assert executed(rig).review.order.price == rig.decider.shown[0].symbols["BTCUSDT"].ask
    finally:
        rig.store.close()


async def test_approve_mode_leaves_the_second_look_to_the_approval(tmp_path):
    rig = rig_with(tmp_path, 60.0)
    try:
        rig.engine.set_mode("approve")
        await rig.engine.start(schedule=False)
        rig.decider.push(long_btc())
        await rig.engine.run_decision_cycle()
        assert rig.lines("REPRICED") == []
        [pending] = [r for r in rig.store.decisions() if r.status == "PENDING"]
        answer = await rig.engine.approve(pending.decision.decision_id)
        assert answer.ok, answer
        assert executed(rig).review.order.price == rig.venue.ticker("BTCUSDT").ask
    finally:
        rig.store.close()
