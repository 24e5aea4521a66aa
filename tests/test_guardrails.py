"""Every guardrail and clamp, REVERSE conversion, one-way rejection; and a property
test: no decision, however wild, yields an order outside the allowed ranges."""

import math

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from engine import guardrails as g
from engine.config import load_settings
from engine.models import Action, Balance, Cooldown, Decision, Instrument, Verdict
from tests.conftest import BALANCE, BTC, features

NOW = 1_767_225_600.0


def ctx(**over):
    base = dict(
        now=NOW,
        balance=BALANCE,
        positions={},
        cooldowns={},
        features={"BTCUSDT": features()},
        instruments={"BTCUSDT": BTC},
    )
    base.update(over)
    return g.ReviewContext(**base)


def dec(action="OPEN_LONG", **over):
    base = dict(symbol="BTCUSDT", action=action, confidence=0.8, tp_pct=2.0, sl_pct=1.5, leverage=5, size_pct=10)
    base.update(over)
    return Decision(**base)


@pytest.fixture
def s(settings):
    return settings


def test_a_clean_open_executes_with_sized_order(s):
    r = g.review(dec(), ctx(), s)
    assert r.verdict is Verdict.EXECUTE and r.reasons == []
    o = r.order
    assert o.side == "long" and o.leverage == 5
    # 10 % of 10 000 at 5x = 5 000 notional at the ask 100 000.1 -> 0.049 BTC (qty step 0.001)
    assert o.qty == pytest.approx(0.049)
    assert o.take_profit == pytest.approx(102_000.1, abs=0.1) and o.stop_loss == pytest.approx(98_500.1, abs=0.1)
    assert o.take_profit > o.price > o.stop_loss


def test_short_prices_mirror(s):
    r = g.review(dec("OPEN_SHORT"), ctx(features={"BTCUSDT": features(trend_1m=-1, trend_5m=-1, trend_15m=-1)}), s)
    assert r.verdict is Verdict.EXECUTE
    assert r.order.side == "short" and r.order.stop_loss > r.order.price > r.order.take_profit


def test_hold_is_hold(s):
    assert g.review(dec("HOLD"), ctx(), s).verdict is Verdict.HOLD


def test_crash_guard_on_5m_move(s):
    f = features(ret_5m_pct=-0.5, atr_pct_1m=0.08)  # 0.5 % > 4 × 0.08 %
    r = g.review(dec(), ctx(features={"BTCUSDT": f}), s)
    assert r.verdict is Verdict.BLOCKED and g.CRASH_GUARD in r.reasons
    assert "5m move" in " ".join(r.detail)


def test_crash_guard_on_last_candle_range(s):
    f = features(last_range_1m_pct=0.3, atr_pct_1m=0.08)  # 0.3 % > 3 × 0.08 %
    r = g.review(dec(), ctx(features={"BTCUSDT": f}), s)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.CRASH_GUARD]


def test_crash_guard_thresholds_are_settings(tmp_path):
    loose = load_settings(state_dir=tmp_path, crash_return_atr_mult=10, crash_range_atr_mult=10)
    f = features(ret_5m_pct=-0.5, last_range_1m_pct=0.3, atr_pct_1m=0.08)
    assert g.review(dec(), ctx(features={"BTCUSDT": f}), loose).verdict is Verdict.EXECUTE


def test_insufficient_margin(s):
    r = g.review(dec(), ctx(balance=Balance(equity=9.0, available=9.0)), s)
    assert r.verdict is Verdict.BLOCKED and g.INSUFFICIENT_MARGIN in r.reasons


def test_margin_needed_above_available(s):
    r = g.review(dec(), ctx(balance=Balance(equity=10_000, available=500)), s)  # needs ~1000
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.INSUFFICIENT_MARGIN]


def test_conflicting_signals(s):
    f = features(trend_1m=1, trend_15m=-1)
    r = g.review(dec(), ctx(features={"BTCUSDT": f}), s)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.CONFLICTING_SIGNALS]


def test_cooldown_active_blocks_and_expired_does_not(s):
    cd = Cooldown(symbol="BTCUSDT", side="long", reason="STOP_LOSS", started_at=NOW - 60, until=NOW + 240)
    r = g.review(dec(), ctx(cooldowns={"BTCUSDT": cd}), s)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.COOLDOWN]
    assert "240s left" in r.detail[0]
    expired = cd.model_copy(update={"until": NOW - 1})
    assert g.review(dec(), ctx(cooldowns={"BTCUSDT": expired}), s).verdict is Verdict.EXECUTE


def test_one_way_rejects_the_opposite_direction(s):
    r = g.review(dec("OPEN_SHORT"), ctx(positions={"BTCUSDT": "long"}), s)
    assert r.verdict is Verdict.BLOCKED and g.ONE_WAY in r.reasons
    assert "ONE-WAY MODE: Cannot open short while long position exists" in r.detail


def test_same_direction_is_not_pyramided(s):
    r = g.review(dec("OPEN_LONG"), ctx(positions={"BTCUSDT": "long"}), s)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.POSITION_OPEN]


def test_max_positions(tmp_path):
    s = load_settings(state_dir=tmp_path, max_open_positions=2)
    r = g.review(dec(), ctx(positions={"ETHUSDT": "long", "SOLUSDT": "short"}), s)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.MAX_POSITIONS]


def test_low_confidence_and_paused(s):
    assert g.review(dec(confidence=0.2), ctx(), s).reasons == [g.LOW_CONFIDENCE]
    assert g.review(dec(), ctx(paused=True), s).reasons == [g.PAUSED]


def test_unknown_symbol(s):
    r = g.review(dec(symbol="DOGEUSDT"), ctx(), s)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.UNKNOWN_SYMBOL]


def test_reverse_becomes_close(s):
    r = g.review(dec("REVERSE"), ctx(positions={"BTCUSDT": "long"}), s)
    assert r.verdict is Verdict.CONVERTED and r.reasons == [g.REVERSE_DISABLED]
    assert r.decision.action is Action.CLOSE and r.order is None
    assert r.summary() == "CONVERTED: REVERSE_DISABLED"


def test_reverse_without_position_is_blocked(s):
    r = g.review(dec("REVERSE"), ctx(), s)
    assert r.verdict is Verdict.BLOCKED and g.NO_POSITION in r.reasons


def test_reverse_when_enabled_opens_the_other_side(tmp_path):
    s = load_settings(state_dir=tmp_path, enable_reverse=True)
    f = features(trend_1m=-1, trend_5m=-1, trend_15m=-1)
    r = g.review(dec("REVERSE"), ctx(positions={"BTCUSDT": "long"}, features={"BTCUSDT": f}), s)
    assert r.verdict is Verdict.EXECUTE and r.order.side == "short"


def test_close_goes_through_every_entry_guard(s):
    crash = features(ret_5m_pct=-5, trend_1m=1, trend_15m=-1)
    cd = Cooldown(symbol="BTCUSDT", reason="X", started_at=NOW, until=NOW + 999)
    r = g.review(
        dec("CLOSE", confidence=0.0),
        ctx(positions={"BTCUSDT": "long"}, features={"BTCUSDT": crash}, cooldowns={"BTCUSDT": cd},
            balance=Balance(equity=1, available=0), paused=True),
        s,
    )
    assert r.verdict is Verdict.EXECUTE
    assert g.review(dec("CLOSE"), ctx(), s).reasons == [g.NO_POSITION]


def test_every_clamp_is_recorded(s):
    d = dec(tp_pct=9, sl_pct=0.1, leverage=50, size_pct=90, time_in_trade_limit_sec=10, cooldown_sec=99999,
            trail_activation_roi=500, confidence=1.0)
    r = g.review(d, ctx(), s)
    assert r.verdict is Verdict.EXECUTE
    fields = {c.field for c in r.clamps}
    assert fields == {"tp_pct", "sl_pct", "leverage", "size_pct", "time_in_trade_limit_sec", "cooldown_sec", "trail_activation_roi"}
    f = r.decision
    assert (f.tp_pct, f.sl_pct, f.leverage, f.size_pct) == (3, 1, 10, 20)
    assert (f.time_in_trade_limit_sec, f.cooldown_sec) == (1200, 1800)
    assert f.trail_activation_roi == 30  # TP's ROI: 3 % × 10x
    lev = next(c for c in r.clamps if c.field == "leverage")
    assert lev.original == 50 and lev.value == 10


def test_leverage_and_size_follow_confidence(s):
    s = s.model_copy(update={"mtf_confirmation": False})  # the confidence as given (see test_enhancements)
    low = g.review(dec(confidence=0.5, leverage=None, size_pct=None), ctx(), s).decision
    high = g.review(dec(confidence=1.0, leverage=None, size_pct=None), ctx(), s).decision
    assert (low.leverage, low.size_pct) == (3, 8)
    assert (high.leverage, high.size_pct) == (10, 20)
    capped = g.review(dec(confidence=0.6, leverage=10, size_pct=20), ctx(), s)
    assert capped.decision.leverage < 10 and capped.decision.size_pct < 20
    assert any("confidence 0.60 allows at most" in c.why for c in capped.clamps)


def test_missing_tp_sl_come_from_atr(s):
    r = g.review(dec(tp_pct=None, sl_pct=None), ctx(features={"BTCUSDT": features(atr_pct_5m=0.6)}), s)
    assert r.decision.tp_pct == pytest.approx(1.2)  # 2 × 0.6
    assert r.decision.sl_pct == pytest.approx(1.0)  # 1.5 × 0.6 = 0.9 -> clamped to 1
    assert {c.field for c in r.clamps if c.original is None} == {"tp_pct", "sl_pct"}


def test_an_order_that_rounds_to_nothing_is_blocked(s):
    big_step = Instrument(symbol="BTCUSDT", qty_step=1, min_qty=1, min_notional=5, tick_size=0.1)
    r = g.review(dec(), ctx(instruments={"BTCUSDT": big_step}), s)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.QTY_TOO_SMALL] and r.order is None
    small = g.review(dec(), ctx(balance=Balance(equity=12, available=12)), s)
    assert small.reasons == [g.QTY_TOO_SMALL]


def test_quantities_respect_the_step_exactly(s):
    eth = Instrument(symbol="ETHUSDT", qty_step=0.01, min_qty=0.01, min_notional=5, tick_size=0.01)
    r = g.review(dec(symbol="ETHUSDT"), ctx(features={"ETHUSDT": features("ETHUSDT", 3333.33)}, instruments={"ETHUSDT": eth}), s)
    assert r.order.qty == round(r.order.qty, 2)
    assert repr(r.order.qty) == repr(round(r.order.qty, 2))  # no 0.30000000000000004


def test_review_is_pure(s):
    c, d = ctx(), dec()
    assert g.review(d, c, s) == g.review(d, c, s)


finite = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@hsettings(max_examples=400, deadline=None)
@given(
    action=st.sampled_from(list(Action)),
    confidence=st.floats(0, 1),
    lev=st.none() | finite,
    size=st.none() | finite,
    tp=st.none() | finite,
    sl=st.none() | finite,
    limit=st.none() | st.integers(1, 10**9),
    cooldown=st.none() | st.integers(0, 10**9),
    trail=st.none() | finite,
    equity=st.floats(0, 1e8),
    price=st.floats(0.0001, 1e6),
    atr=st.floats(0, 50),
    held=st.sampled_from([None, "long", "short"]),
)
def test_no_decision_however_wild_leaves_the_ranges(action, confidence, lev, size, tp, sl, limit, cooldown, trail, equity, price, atr, held):
    s = load_settings()
    d = Decision(symbol="BTCUSDT", action=action, confidence=confidence, leverage=lev, size_pct=size, tp_pct=tp,
                 sl_pct=sl, time_in_trade_limit_sec=limit, cooldown_sec=cooldown, trail_activation_roi=trail)
    c = ctx(balance=Balance(equity=equity, available=equity), positions={"BTCUSDT": held} if held else {},
            features={"BTCUSDT": features(price=price, bid=price, ask=price, atr_pct_5m=atr)})
    r = g.review(d, c, s)
    if r.order is None:
        assert r.verdict is not Verdict.EXECUTE or r.decision.action in (Action.CLOSE, Action.HOLD)
        return
    f, o = r.decision, r.order
    assert s.leverage_min <= o.leverage <= s.leverage_max and o.leverage == f.leverage
    assert s.size_pct_min <= f.size_pct <= s.size_pct_max
    assert o.margin <= equity * s.size_pct_max / 100 + 1e-9
    assert s.tp_pct_min <= f.tp_pct <= s.tp_pct_max and s.sl_pct_min <= f.sl_pct <= s.sl_pct_max
    assert s.time_limit_min_sec <= f.time_in_trade_limit_sec <= s.time_limit_max_sec
    assert s.cooldown_min_sec <= f.cooldown_sec <= s.cooldown_max_sec
    assert o.qty >= BTC.min_qty and o.notional >= BTC.min_notional
    assert math.isclose(o.qty / BTC.qty_step, round(o.qty / BTC.qty_step), abs_tol=1e-6)
    sign = 1 if o.side == "long" else -1
    assert (o.take_profit - o.price) * sign > 0 and (o.price - o.stop_loss) * sign > 0 and o.stop_loss > 0
    move_tp = abs(o.take_profit / o.price - 1) * 100
    move_sl = abs(o.stop_loss / o.price - 1) * 100
    tick_slack = BTC.tick_size / o.price * 100
    assert s.tp_pct_min - tick_slack <= move_tp <= s.tp_pct_max + tick_slack
    assert s.sl_pct_min - tick_slack <= move_sl <= s.sl_pct_max + tick_slack


def test_tp_sl_that_cannot_bracket_the_price_are_blocked(s):
    coarse = Instrument(symbol="BTCUSDT", qty_step=0.001, min_qty=0.001, min_notional=5, tick_size=10_000)
    r = g.review(dec(), ctx(instruments={"BTCUSDT": coarse}), s)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.BAD_PRICE]
