"""The monitor: time exits, closes by the venue with their reason, trailing, adoption,
cooldowns that survive restarts."""

import pytest

from engine.models import CloseReason, OrderRequest
from tests.rig import long_btc, make_rig, plan


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path / "state")
    yield r
    r.store.close()


def opened(rig, **over):
    intent = rig.engine.executor.open(plan(rig, long_btc(**over)))
    assert intent.status.value == "EXECUTED"
    return rig.store.get_position("BTCUSDT")


def test_position_metadata_and_time_exit(rig):
    meta = opened(rig, time_in_trade_limit_sec=1800)
    assert meta.opened_at == rig.clock.now() and meta.time_in_trade_limit_sec == 1800
    assert meta.seconds_left(rig.clock.now() + 600) == 1200
    rig.clock.advance(1790)
    report = rig.engine.monitor.run_once()
    assert report.time_exits == [] and len(rig.venue.positions()) == 1
    rig.clock.advance(60)
    report = rig.engine.monitor.run_once()
    assert report.time_exits == ["BTCUSDT"]
    assert rig.venue.positions() == []
    assert "TIME-BASED EXIT: BTCUSDT long - in trade for 1850s (limit: 1800s)" in rig.lines("TIME_EXIT")
    assert "Found 1 expired positions" in rig.lines("TIME_EXIT")
    assert "Time-based exit executed for BTCUSDT long" in rig.lines("TIME_EXIT")
    trade = rig.store.trades()[0]
    assert trade.reason is CloseReason.TIME_EXIT and trade.duration_sec == 1850
    assert rig.store.get_cooldown("BTCUSDT").reason == "TIME_EXIT"


@pytest.mark.parametrize(
    "move, reason",
    [(+3.0, CloseReason.TAKE_PROFIT), (-2.5, CloseReason.STOP_LOSS), (-15.0, CloseReason.STOP_LOSS)],
)
def test_closes_by_the_venue_are_journalled_with_their_reason(rig, move, reason):
    opened(rig, tp_pct=2.0, sl_pct=1.5)
    rig.feed.inject_move("BTCUSDT", move, over_sec=60)
    rig.clock.advance(120)
    report = rig.engine.monitor.run_once()
    assert report.venue_closes == ["BTCUSDT"]
    trade = rig.store.trades()[0]
    assert trade.reason is reason
    assert (trade.pnl > 0) == (reason is CloseReason.TAKE_PROFIT)
    assert trade.roi_pct == pytest.approx(trade.pnl / (trade.entry_price * trade.qty / trade.leverage) * 100, rel=1e-3)
    assert rig.store.get_position("BTCUSDT") is None
    cd = rig.store.get_cooldown("BTCUSDT")
    assert cd.until - cd.started_at == 900 and cd.reason == reason.value


def test_liquidation_is_journalled(rig):
    # No stop loss on the venue: only liquidation can close it.
    opened(rig, leverage=10, confidence=1.0)
    rig.venue.set_trading_stop("BTCUSDT", stop_loss=0)
    rig.feed.inject_move("BTCUSDT", -15.0, over_sec=60)
    rig.clock.advance(120)
    rig.engine.monitor.run_once()
    assert rig.store.trades()[0].reason is CloseReason.LIQUIDATION


def test_trailing_is_armed_at_the_activation_roi(rig):
    opened(rig, tp_pct=3.0, leverage=5, trail_activation_roi=2.0)  # 2 % ROI at 5x = +0.4 % price
    rig.engine.monitor.run_once()
    assert rig.store.get_position("BTCUSDT").trailing_armed is False
    rig.feed.inject_move("BTCUSDT", +1.0, over_sec=30)
    rig.clock.advance(45)
    report = rig.engine.monitor.run_once()
    assert report.trailing_armed == ["BTCUSDT"]
    assert rig.store.get_position("BTCUSDT").trailing_armed is True
    assert rig.venue.positions()[0].trailing_stop
    assert any(m.startswith("TRAILING ARMED: BTCUSDT long") for m in rig.lines("TRAILING"))
    # then a fall closes it by the trailing stop
    rig.feed.inject_move("BTCUSDT", -0.9, over_sec=30)
    rig.clock.advance(60)
    rig.engine.monitor.run_once()
    assert rig.store.trades()[0].reason is CloseReason.TRAILING_STOP


def test_a_position_without_metadata_is_adopted_with_the_default_limit(rig):
    rig.venue.place_order(OrderRequest(symbol="ETHUSDT", side="Sell", qty=0.5, order_link_id="by-hand-1"))
    report = rig.engine.monitor.run_once()
    assert report.adopted == ["ETHUSDT"]
    meta = rig.store.get_position("ETHUSDT")
    assert meta.adopted and meta.side == "short" and meta.time_in_trade_limit_sec == 2400
    assert any(m.startswith("ADOPTED: ETHUSDT short 0.5") for m in rig.lines("ADOPTED"))
    rig.clock.advance(2400)
    rig.engine.monitor.run_once()
    trade = rig.store.trades()[0]
    assert trade.reason is CloseReason.TIME_EXIT and trade.adopted
    cd = rig.store.get_cooldown("ETHUSDT")
    assert cd.until - cd.started_at == 300  # COOLDOWN_MINUTES=5 when the decision gave none


def test_cooldowns_persist_across_restarts(rig):
    opened(rig)
    rig.engine.executor.close("BTCUSDT", CloseReason.FORCE_CLOSE)
    again = rig.reopen()
    try:
        cd = again.store.get_cooldown("BTCUSDT")
        assert cd is not None and cd.active(again.clock.now())
        again.clock.advance(901)
        assert not cd.active(again.clock.now())
    finally:
        again.store.close()
        rig.store = again.store  # the fixture closes it again: harmless
