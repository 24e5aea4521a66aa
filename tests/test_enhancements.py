"""The original system's "future enhancements" (engine.enhance): each changes the parameter
it should, within its range, is off when switched off, and says so on the decision's
detail screen (a clamp; the adaptive cooldown on the trade)."""

from __future__ import annotations

import pytest

from app.dialogs import _trade_lines, decision_sections
from engine import enhance
from engine import guardrails as g
from engine.config import SettingsError, load_settings
from engine.market import ATR_MEDIAN_1M, SymbolMarket
from engine.models import (
    Action,
    CloseReason,
    Decision,
    DecisionRecord,
    DecisionStatus,
    PositionMeta,
    Ticker,
    Trade,
    Verdict,
)
from tests.conftest import BALANCE, BTC, features
from tests.rig import make_rig

NOW = 1_767_225_600.0


@pytest.fixture
def settings(settings):
    """The defaults, with the enhancements that are off by default switched on."""
    return settings.model_copy(update={"mtf_confirmation": True, "dynamic_time_limit": True})


def ctx(f=None):
    return g.ReviewContext(now=NOW, balance=BALANCE, features={"BTCUSDT": f or features()}, instruments={"BTCUSDT": BTC})


def dec(action=Action.OPEN_LONG, **over):
    base = dict(symbol="BTCUSDT", action=action, confidence=0.8, tp_pct=2.0, sl_pct=1.5, size_pct=10)
    base.update(over)
    return Decision(**base)


def clamp(review, name):
    return next((c for c in review.clamps if c.field == name), None)


# --- multi-timeframe confirmation ----------------------------------------------------------


@pytest.mark.parametrize("trends, side, expected", [
    ((1, 1, 1), "long", 0.85),  # all three with it: a step up
    ((1, 1, 0), "long", 0.80),  # two of three: as proposed
    ((1, 0, 0), "long", 0.75),  # one short of two: a step down
    ((1, -1, 1), "long", 0.75),  # two with it, one against
    ((0, 0, 0), "long", 0.70),
    ((-1, -1, -1), "short", 0.85),
    ((1, 1, 1), "short", 0.55),  # 0 with it, 3 against: -5 steps
])
def test_mtf_confirmation_moves_the_confidence_by_the_trends_that_agree(settings, trends, side, expected):
    f = features(trend_1m=trends[0], trend_5m=trends[1], trend_15m=trends[2])
    out, c = enhance.mtf_confidence(0.8, side, f, settings)
    assert out == pytest.approx(expected)
    assert (c is None) == (expected == 0.8)


def test_mtf_confirmation_comes_before_leverage_size_and_low_confidence(settings):
    off = settings.model_copy(update={"mtf_confirmation": False})
    up = g.review(dec(), ctx(), settings)  # the calm features: 1m/5m/15m all up
    plain = g.review(dec(), ctx(), off)
    assert up.decision.confidence == 0.85 and plain.decision.confidence == 0.8
    c = clamp(up, "confidence")
    assert (c.original, c.value) == (0.8, 0.85) and "multi-timeframe confirmation: 3 of 1m/5m/15m" in c.why
    assert clamp(plain, "confidence") is None
    # leverage and size follow the confirmed confidence: 0.75 allows 6x and 14 %, 0.70 5x and 12.8 %
    up, plain = (g.review(dec(confidence=0.7, size_pct=None), ctx(), x).decision for x in (settings, off))
    assert (up.leverage, up.size_pct) == (6, 14) and (plain.leverage, plain.size_pct) == (5, 12.8)
    # a cut below min_confidence blocks, and says what was proposed
    weak = features(trend_1m=1, trend_5m=0, trend_15m=0)
    r = g.review(dec(confidence=0.52), ctx(weak), settings)
    assert r.verdict is Verdict.BLOCKED and r.reasons == [g.LOW_CONFIDENCE]
    assert "0.47 under 0.5 (0.52 as proposed" in r.detail[0]
    assert g.review(dec(confidence=0.52), ctx(weak), off).verdict is Verdict.EXECUTE
    # within 0–1
    assert g.review(dec(confidence=0.98), ctx(), settings).decision.confidence == 1.0


# --- dynamic time limit ------------------------------------------------------------------------


@pytest.mark.parametrize("atr, median, expected", [
    (0.10, 0.08, 1920),  # faster than usual: 2400 × 0.8
    (0.06, 0.08, 3200),  # quieter: 2400 × 1.33
    (0.40, 0.08, 1200),  # far faster: the range's floor, 20 min
    (0.02, 0.08, 3600),  # far quieter: its ceiling, 60 min
])
def test_dynamic_time_limit_scales_with_atr_against_its_median_within_the_range(settings, atr, median, expected):
    f = features(atr_pct_1m=atr, atr_pct_1m_median=median, last_range_1m_pct=0.0)
    r = g.review(dec(), ctx(f), settings)
    assert r.verdict is Verdict.EXECUTE and r.decision.time_in_trade_limit_sec == expected
    c = clamp(r, "time_in_trade_limit_sec")
    assert (c.original, c.value) == (2400, expected) and c.why.startswith("dynamic time limit: ATR(1m)")
    assert settings.time_limit_min_sec <= expected <= settings.time_limit_max_sec


def test_dynamic_time_limit_scales_the_deciders_own_limit_and_is_off_when_switched_off(settings):
    f = features(atr_pct_1m=0.16, atr_pct_1m_median=0.08, last_range_1m_pct=0.0)
    assert g.review(dec(time_in_trade_limit_sec=3000), ctx(f), settings).decision.time_in_trade_limit_sec == 1500
    off = settings.model_copy(update={"dynamic_time_limit": False})
    r = g.review(dec(), ctx(f), off)
    assert r.decision.time_in_trade_limit_sec == 2400 and clamp(r, "time_in_trade_limit_sec") is None
    unknown = features(atr_pct_1m=0.16, atr_pct_1m_median=0.0, last_range_1m_pct=0.0)  # no history yet
    assert g.review(dec(), ctx(unknown), settings).decision.time_in_trade_limit_sec == 2400


def test_the_market_keeps_the_median_of_atr_1m_over_the_last_24_hours():
    m = SymbolMarket("BTCUSDT")
    rows = [(60.0 * i, 100.0, 100.5, 99.5, 100.0, 1.0) for i in range(2000)]  # 1 % ranges for 33 h
    m.add_1m(rows)
    assert len(m.atr_hist) == ATR_MEDIAN_1M
    ticker = Ticker(symbol="BTCUSDT", last=100.0, mark=100.0, bid=99.9, ask=100.1)
    assert m.features(ticker).atr_pct_1m_median == pytest.approx(1.0)
    m.add_1m((60.0 * i, 100.0, 101.5, 98.5, 100.0, 1.0) for i in range(2000, 2030))  # a wild half hour
    f = m.features(ticker)
    assert f.atr_pct_1m > 2.5 and f.atr_pct_1m_median == pytest.approx(1.0)  # the median barely moves


# --- adaptive cooldown ---------------------------------------------------------------------


@pytest.mark.parametrize("losses, expected", [(0, 300), (1, 450), (2, 675), (3, 1012), (5, 1800), (12, 1800)])
def test_adaptive_cooldown_grows_with_the_losing_streak_within_the_range(settings, losses, expected):
    out, why = enhance.adaptive_cooldown(300, losses, "BTCUSDT", settings)
    assert out == expected and settings.cooldown_min_sec <= out <= settings.cooldown_max_sec
    assert (why == "") == (losses == 0)
    off = settings.model_copy(update={"adaptive_cooldown": False})
    assert enhance.adaptive_cooldown(300, losses, "BTCUSDT", off) == (300, "")


def _meta(symbol="ETHUSDT"):
    return PositionMeta(symbol=symbol, side="long", opened_at=NOW, time_in_trade_limit_sec=1800, cooldown_sec=300,
                        entry_price=100.0, qty=1.0, leverage=5)


def test_the_losing_streak_lengthens_the_cooldown_a_win_resets_it_and_a_restart_keeps_it(tmp_path):
    rig = make_rig(tmp_path / "s", adaptive_cooldown=True)
    book = rig.engine.executor.book

    def close(pnl, symbol="ETHUSDT"):
        rig.store.put_position(_meta(symbol))
        return book.record_close(_meta(symbol), 99.0, pnl, CloseReason.STOP_LOSS)

    assert [close(-5).cooldown_sec, close(-5).cooldown_sec] == [450, 675]
    assert close(-1, "BTCUSDT").cooldown_sec == 450  # each symbol has its own streak
    t = close(-5)
    assert t.cooldown_sec == 1012 and t.cooldown_why.startswith("adaptive cooldown: 3 losses in a row on ETHUSDT")
    assert rig.store.get_cooldown("ETHUSDT").until - rig.store.get_cooldown("ETHUSDT").started_at == 1012
    assert "adaptive cooldown" in rig.lines("COOLDOWN")[-1]
    won = close(+5)
    assert won.cooldown_sec == 300 and won.cooldown_why == ""
    close(-5)
    again = rig.reopen(adaptive_cooldown=True)  # the streak is read from the journal
    try:
        again.store.put_position(_meta())
        assert again.engine.executor.book.record_close(_meta(), 99.0, -5, CloseReason.STOP_LOSS).cooldown_sec == 675
        off = make_rig(tmp_path / "s2", adaptive_cooldown=False)
        off.store.put_position(_meta())
        assert off.engine.executor.book.record_close(_meta(), 99.0, -5, CloseReason.STOP_LOSS).cooldown_sec == 300
        off.store.close()
    finally:
        again.store.close()


def test_losing_streak_skips_other_symbols_and_parts_closed():
    def t(symbol, pnl, cooldown=300):
        return Trade(symbol=symbol, side="long", qty=1, entry_price=1, exit_price=1, opened_at=0, closed_at=1,
                     pnl=pnl, roi_pct=0, duration_sec=1, reason=CloseReason.STOP_LOSS, cooldown_sec=cooldown)

    newest_first = [t("ETH", -1), t("BTC", 5), t("ETH", 3, cooldown=None), t("ETH", -2), t("ETH", 1), t("ETH", -9)]
    assert enhance.losing_streak(newest_first, "ETH") == 2
    assert enhance.losing_streak(newest_first, "BTC") == 0


# --- what the detail screen shows ----------------------------------------------------------


def test_the_detail_screen_lists_what_an_enhancement_changed(settings):
    f = features(atr_pct_1m=0.16, atr_pct_1m_median=0.08, last_range_1m_pct=0.0)
    review = g.review(dec(), ctx(f), settings)
    rec = DecisionRecord(decision=dec(), review=review, status=DecisionStatus.EXECUTED, recorded_at=NOW)
    clamps = dict(decision_sections(rec, f, None))["Clamps"]
    assert "confidence: 0.8 → 0.85  multi-timeframe confirmation" in clamps
    assert "time_in_trade_limit_sec: 2400 → 1200  dynamic time limit: ATR(1m) 0.160% against its 24 h median 0.080%" in clamps
    trade = Trade(symbol="BTCUSDT", side="long", qty=1, entry_price=1, exit_price=1, opened_at=0, closed_at=60, pnl=-1,
                  roi_pct=0, duration_sec=60, reason=CloseReason.STOP_LOSS, cooldown_sec=450,
                  cooldown_why="adaptive cooldown: 1 loss in a row on BTCUSDT, 300s × 1.5^1, allowed 300–1800s")
    assert "         adaptive cooldown: 1 loss in a row on BTCUSDT" in _trade_lines(trade)


@pytest.mark.parametrize("name, value", [("cooldown_loss_factor", 0.5), ("mtf_confidence_step", 0.9),
                                         ("dynamic_time_limit", "maybe")])
def test_bad_enhancement_settings_are_refused_clearly(tmp_path, name, value):
    with pytest.raises(SettingsError) as err:
        load_settings(state_dir=tmp_path, **{name: value})
    assert f"invalid setting SCALPDESK_{name.upper()}={value!r}" in str(err.value)
