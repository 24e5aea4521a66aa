"""The rules decider on hand-built features: what it fades, each rule that makes it
stand aside, its TP/SL from the fee floor and ATR; and the stretch feature it reads.
Its figures on the simulated market come from bench/bench_decider.py, not from here."""

import pytest

from engine import guardrails as g
from engine.config import load_settings
from engine.deciders.rules import RuleDecider
from engine.indicators import ema
from engine.market import MEAN_1M, SymbolMarket
from engine.models import Action, Balance, MarketSnapshot, Ticker, Verdict, VenuePosition
from tests.conftest import BALANCE, BTC, features

NOW = 1_767_225_600.0


def stretched(s: float = -1.5, **over):
    """A calm market stretched `s` % from its hour's EMA, the last minute no longer running."""
    base = dict(stretch_pct=s, atr_pct_5m=0.4, ret_1m_pct=0.0, spread_pct=0.0002)
    base.update(over)
    return features(**base)


def decide(f, decider: RuleDecider | None = None, held: str | None = None):
    positions = [VenuePosition(symbol=f.symbol, side=held, size=0.01, entry_price=f.price, mark_price=f.price,
                               leverage=3, unrealised_pnl=0.0)] if held else []
    snap = MarketSnapshot(ts=NOW, symbols={f.symbol: f}, balance=Balance(equity=10_000, available=10_000),
                          positions=positions)
    (d,) = (decider or RuleDecider()).decide_now(snap)
    return d


def test_it_fades_a_stretch_below_with_a_long_and_above_with_a_short():
    long = decide(stretched(-1.5))
    short = decide(stretched(+1.5))
    assert long.action is Action.OPEN_LONG and short.action is Action.OPEN_SHORT
    assert "1.50% below its 1-h EMA" in long.rationale and "above" in short.rationale
    assert long.leverage == 3 and long.size_pct == 10 and long.time_in_trade_limit_sec == 3600


def test_without_the_stretch_feature_it_never_trades():
    # A trend aligned on every timeframe (what the old rules bought) is no reason to trade.
    d = decide(features(trend_1m=1, trend_5m=1, trend_15m=1, rsi_1m=55))
    assert d.action is Action.HOLD and d.rationale.startswith("stand aside")


def test_chop_near_the_mean_stands_aside_under_the_fee_floor():
    d = decide(stretched(-0.9))
    assert d.action is Action.HOLD
    assert "under the 1.00% worth fading (round trip 0.15%)" in d.rationale


def test_the_fee_floor_is_the_round_trip_times_the_margin_over_the_share_expected_back():
    assert RuleDecider().round_trip_pct == pytest.approx(0.15)  # 2 × (0.055 % taker + 0.02 % slippage)
    assert RuleDecider().min_stretch_pct == pytest.approx(1.0)  # 2 × 0.15 / 0.3
    dear = RuleDecider(taker_fee_pct=0.1)  # a dearer venue needs a longer stretch
    assert dear.min_stretch_pct == pytest.approx(2 * 0.24 / 0.3)
    assert decide(stretched(-1.2), dear).action is Action.HOLD
    assert decide(stretched(-1.2)).action is Action.OPEN_LONG


def test_a_wide_spread_stands_aside():
    d = decide(stretched(-1.5, spread_pct=0.08))
    assert d.action is Action.HOLD and "spread 0.080% over 0.05%" in d.rationale


def test_a_regime_too_wild_for_the_largest_stop_stands_aside():
    d = decide(stretched(-1.5, atr_pct_5m=1.5))  # 1.5 × 1.5 % > the 2 % stop allowed
    assert d.action is Action.HOLD and "too wild" in d.rationale
    assert decide(stretched(-1.5, atr_pct_5m=1.3)).action is Action.OPEN_LONG


def test_a_move_still_running_stands_aside_until_it_stalls():
    d = decide(stretched(-1.6, ret_1m_pct=-0.5))  # the last minute fell a third of the stretch further
    assert d.action is Action.HOLD and "still running" in d.rationale
    assert decide(stretched(-1.6, ret_1m_pct=-0.3)).action is Action.OPEN_LONG
    assert decide(stretched(-1.6, ret_1m_pct=+0.5)).action is Action.OPEN_LONG  # bouncing already


def test_tp_is_the_way_back_to_the_mean_and_sl_twice_atr_capped_at_the_largest_stop():
    d = decide(stretched(+1.8, atr_pct_5m=0.6))
    assert d.tp_pct == pytest.approx(1.8) and d.sl_pct == pytest.approx(1.2)
    d = decide(stretched(+1.8, atr_pct_5m=1.2))
    assert d.sl_pct == pytest.approx(2.0)
    # The trailing stop arms only at the TP's ROI: it never cuts the snap-back short.
    assert d.trail_activation_roi == pytest.approx(1.8 * 3)


def test_confidence_grows_with_the_edge_over_the_floor():
    assert decide(stretched(-1.0)).confidence == pytest.approx(0.6)
    assert decide(stretched(-2.0)).confidence == pytest.approx(0.7)
    assert decide(stretched(-10.0)).confidence == pytest.approx(0.9)


def test_the_guardrails_take_its_open_as_it_is():
    s = load_settings(state_dir="/nonexistent")
    d = decide(stretched(-1.5, atr_pct_5m=0.6))
    review = g.review(d, g.ReviewContext(now=NOW, balance=BALANCE, features={"BTCUSDT": stretched(-1.5)},
                                         instruments={"BTCUSDT": BTC}), s)
    assert review.verdict is Verdict.EXECUTE and review.clamps == []
    assert review.decision.leverage == 3 and review.decision.tp_pct == 1.5 and review.decision.sl_pct == 1.2


def test_an_open_position_is_held_to_its_exits_or_closed_at_the_mean_if_asked():
    assert decide(stretched(-0.4), held="long").action is Action.HOLD
    assert decide(stretched(+0.1), held="long").action is Action.HOLD
    closer = RuleDecider(close_at_mean=True)
    assert decide(stretched(-0.4), closer, held="long").action is Action.HOLD
    d = decide(stretched(+0.1), closer, held="long")
    assert d.action is Action.CLOSE and "back at its 1-h EMA" in d.rationale
    assert decide(stretched(-0.1), closer, held="short").action is Action.CLOSE


def test_stretch_is_the_price_against_the_ema_of_1m_closes_kept_candle_by_candle():
    closes = [100.0 + (i % 7) * 0.3 - i * 0.01 for i in range(150)]
    m = SymbolMarket("BTCUSDT")
    m.add_1m((60.0 * i, c, c + 0.1, c - 0.1, c, 1.0) for i, c in enumerate(closes[:100]))
    m.add_1m((60.0 * i, c, c + 0.1, c - 0.1, c, 1.0) for i, c in enumerate(closes) if i >= 90)  # overlap skipped
    price = 97.0
    f = m.features(Ticker(symbol="BTCUSDT", last=price, mark=price, bid=price - 0.01, ask=price + 0.01))
    assert f.stretch_pct == pytest.approx((price / ema(closes, MEAN_1M)[-1] - 1) * 100)
    assert f.stretch_pct < -1


def test_the_fee_floor_is_the_settings_round_trip():
    from engine.factory import build_decider

    default = build_decider(load_settings(state_dir="/nonexistent"))
    assert default.round_trip_pct == pytest.approx(2 * (0.055 + 0.02))
    cheap = build_decider(load_settings(state_dir="/nonexistent", taker_fee_pct=0.02, slippage_bps=1))
    assert cheap.round_trip_pct == pytest.approx(2 * (0.02 + 0.01))
    # a stretch too small for the default fees clears the cheaper round trip
    small = stretched(-0.6)
    assert decide(small).action is Action.HOLD
    assert decide(small, cheap).action is Action.OPEN_LONG
