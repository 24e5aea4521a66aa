"""The market watch: what would block an entry (guardrails.entry_blocks, the same rules as
review()), the engine's events that carry it, the panel fed by them, and number formats."""

from __future__ import annotations

import pytest
from textual.geometry import Region

import app.console as console
from app.console import ScalpDeskApp
from engine import guardrails
from engine.config import load_settings
from engine.events import BlocksUpdated, MarketUpdated
from engine.models import Action, Balance, Cooldown, Decision, DecisionRecord
from tests.conftest import BALANCE, BTC, features
from tests.painted import lines_of, sent_spans
from tests.test_console_scenes import SYMBOLS, decision, hold_cycle, make_app, rig, settle, started  # noqa: F401 (fixture)
from widgets import format as fmt

NARROW = (80, 24)
WIDE = (160, 48)


def ctx(**over) -> guardrails.ReviewContext:
    base = dict(now=1000.0, balance=BALANCE, features={"BTCUSDT": features()}, instruments={"BTCUSDT": BTC})
    base.update(over)
    return guardrails.ReviewContext(**base)


def codes(blocks) -> list[str]:
    return [b.code for b in blocks]


# --- entry_blocks: the guardrails' own rules ----------------------------------------------


def test_nothing_blocks_an_entry_on_a_calm_market(settings):
    assert guardrails.entry_blocks("BTCUSDT", ctx(), settings) == []


@pytest.mark.parametrize("over, code", [
    (dict(paused=True), guardrails.PAUSED),
    (dict(cooldowns={"BTCUSDT": Cooldown(symbol="BTCUSDT", reason="STOP_LOSS", started_at=900, until=1200)}),
     guardrails.COOLDOWN),
    (dict(positions={"ETHUSDT": "long", "SOLUSDT": "long", "XRPUSDT": "short"}), guardrails.MAX_POSITIONS),
    (dict(balance=Balance(equity=10_000, available=3)), guardrails.INSUFFICIENT_MARGIN),
    (dict(features={"BTCUSDT": features(ret_5m_pct=-2.0)}), guardrails.CRASH_GUARD),
    (dict(features={"BTCUSDT": features(trend_1m=1, trend_15m=-1)}), guardrails.CONFLICTING_SIGNALS),
])
def test_each_entry_rule_blocks_as_review_does(settings, over, code):
    c = ctx(**over)
    blocks = guardrails.entry_blocks("BTCUSDT", c, settings)
    assert codes(blocks) == [code]
    for action in (Action.OPEN_LONG, Action.OPEN_SHORT):
        review = guardrails.review(Decision(symbol="BTCUSDT", action=action, confidence=0.9), c, settings)
        assert code in review.reasons and blocks[0].text in review.detail  # one rule, one line


def test_a_cooldown_says_when_it_ends(settings):
    cd = Cooldown(symbol="BTCUSDT", reason="STOP_LOSS", started_at=900, until=1212)
    [b] = guardrails.entry_blocks("BTCUSDT", ctx(cooldowns={"BTCUSDT": cd}), settings)
    assert b.until == 1212 and b.text == "COOLDOWN: BTCUSDT after STOP_LOSS, 212s left"


def test_an_open_position_blocks_both_sides_its_own_first(settings):
    blocks = guardrails.entry_blocks("BTCUSDT", ctx(positions={"BTCUSDT": "short"}), settings)
    assert codes(blocks) == [guardrails.POSITION_OPEN, guardrails.ONE_WAY]
    assert "Cannot open long while short position exists" in blocks[1].text


def test_a_symbol_without_market_data_is_said_so(settings):
    assert codes(guardrails.entry_blocks("ETHUSDT", ctx(), settings)) == [guardrails.UNKNOWN_SYMBOL]


# --- the engine's events --------------------------------------------------------------------


async def test_the_cycle_carries_the_blocks_and_changes_come_between_cycles(rig):
    e = rig.engine
    await e.start(schedule=False)
    await e.run_decision_cycle()
    [market] = [ev for ev in rig.events if isinstance(ev, MarketUpdated)]
    assert set(market.blocks) == set(SYMBOLS) and all(b == [] for b in market.blocks.values())
    assert len(market.closes["BTCUSDT"]) == 60  # the sparkline's hour
    # an open: BTC is blocked at once, not at the next cycle
    rig.decider.push(decision("BTCUSDT"))
    await e.run_decision_cycle()
    await e.approve(next(iter(e.pending)))
    changes = [ev for ev in rig.events if isinstance(ev, BlocksUpdated)]
    assert codes(changes[-1].blocks["BTCUSDT"]) == [guardrails.POSITION_OPEN, guardrails.ONE_WAY]
    # a close: the cooldown replaces the position, with its end
    await e.force_close("BTCUSDT")
    last = [ev for ev in rig.events if isinstance(ev, BlocksUpdated)][-1]
    [cd] = last.blocks["BTCUSDT"]
    assert cd.code == guardrails.COOLDOWN and cd.until == rig.store.get_cooldown("BTCUSDT").until
    # a pause blocks every symbol; nothing new, nothing sent
    e.pause(True)
    last = [ev for ev in rig.events if isinstance(ev, BlocksUpdated)][-1]
    assert all(guardrails.PAUSED in codes(bs) for bs in last.blocks.values())
    n = len([ev for ev in rig.events if isinstance(ev, BlocksUpdated)])
    await e.run_monitor()
    assert len([ev for ev in rig.events if isinstance(ev, BlocksUpdated)]) == n
    await e.stop()


# --- the panel ------------------------------------------------------------------------------


async def test_rows_update_in_place_with_the_latest_decision_and_its_reason(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await hold_cycle(pilot, rig)
        table = app.market.table
        assert table.keys() == SYMBOLS
        assert table.get_cell("BTCUSDT", "decision").plain == "HOLD no aligned trend (1m +1, 5m -1, 15m +1)"
        assert table.get_cell("BTCUSDT", "entry").plain == "ready"
        assert len(table.get_cell("BTCUSDT", "spark").plain) == 14
        first = table.get_cell("BTCUSDT", "last").plain
        rig.clock.advance(300)
        rig.decider.push(decision("BTCUSDT", rationale="breakout above the 15m range"))
        await pilot.press("r")
        await settle(pilot)
        assert table.keys() == SYMBOLS  # the same rows, changed in place
        assert table.get_cell("BTCUSDT", "decision").plain == "OPEN_LONG waiting for approval · breakout ab…"
        assert table.get_cell("BTCUSDT", "last").plain != first
        assert app.market.border_title == f"Market · {fmt.clock(rig.clock.now())} UTC"
        # the line under the table says the cursor row's decision in full
        assert "breakout above the 15m range" in app.market.detail_text("BTCUSDT")


async def test_a_cooldown_counts_down_in_the_row_and_goes(rig, monkeypatch):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        rig.decider.push(decision("ETHUSDT", cooldown_sec=300))
        await rig.engine.run_decision_cycle()
        await rig.engine.approve(next(iter(rig.engine.pending)))
        await rig.engine.force_close("ETHUSDT")
        await settle(pilot)
        table = app.market.table
        assert table.get_cell("ETHUSDT", "entry").plain == "COOLDOWN 05:00"
        rig.clock.advance(100)
        await pilot.pause(console.TICK_SEC * 2.5)
        assert table.get_cell("ETHUSDT", "entry").plain == "COOLDOWN 03:20"
        assert "COOLDOWN: ETHUSDT after FORCE_CLOSE, 03:20 left" in app.market.detail_text("ETHUSDT")
        rig.clock.advance(201)
        await pilot.pause(console.TICK_SEC * 2.5)
        assert table.get_cell("ETHUSDT", "entry").plain == "ready"


async def test_prices_wait_for_the_tick_and_a_change_of_blocks_after_them_stays(rig, monkeypatch):
    """Marks bring the market watch's prices between ticks: painted with the tick's own
    repaint, in the order they came (a BlocksUpdated after a MarketUpdated wins)."""
    from app.messages import EngineEvent
    from engine.models import EntryBlock

    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await hold_cycle(pilot, rig)
        monkeypatch.setattr(console, "TICK_SEC", 3600.0)
        table = app.market.table
        before = table.get_cell("BTCUSDT", "last").plain
        now = rig.clock.now()
        app.on_engine_event(EngineEvent(MarketUpdated(ts=now, level="debug", features={"BTCUSDT": features(price=123_456.7)},
                                                      blocks={"BTCUSDT": []})))
        paused = [EntryBlock(code=guardrails.PAUSED, text="PAUSED: new entries paused")]
        app.on_engine_event(EngineEvent(BlocksUpdated(ts=now, level="debug", blocks={"BTCUSDT": paused})))
        assert table.get_cell("BTCUSDT", "last").plain == before  # not yet: the tick paints
        app._tick()
        assert table.get_cell("BTCUSDT", "last").plain == "123,456.7"
        assert table.get_cell("BTCUSDT", "entry").plain.startswith("PAUSED")


async def test_of_two_market_pictures_in_a_tick_only_the_newest_is_painted(rig, monkeypatch):
    """Marks send the whole market watch up to four times a second: a picture that sets every
    symbol an earlier one set makes the earlier one's paint wasted work; one for fewer
    symbols does not."""
    from app.messages import EngineEvent

    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await hold_cycle(pilot, rig)
        monkeypatch.setattr(console, "TICK_SEC", 3600.0)
        painted = []
        real = app.market.market
        monkeypatch.setattr(app.market, "market", lambda f, *a: (painted.append({s: x.price for s, x in f.items()}), real(f, *a))[1])
        now = rig.clock.now()

        def prices(**p: float) -> EngineEvent:
            return EngineEvent(MarketUpdated(ts=now, level="debug", blocks={s: [] for s in p},
                                             features={s: features(s, price=v) for s, v in p.items()}))

        app.on_engine_event(prices(BTCUSDT=1.0, ETHUSDT=2.0))
        app.on_engine_event(prices(BTCUSDT=3.0))  # fewer symbols: both are painted
        app.on_engine_event(prices(BTCUSDT=4.0, ETHUSDT=5.0))  # covers both before it
        app._tick()
        assert painted == [{"BTCUSDT": 4.0, "ETHUSDT": 5.0}]
        app.on_engine_event(prices(BTCUSDT=6.0, ETHUSDT=7.0))
        app.on_engine_event(prices(BTCUSDT=8.0))
        app._tick()
        assert painted[1:] == [{"BTCUSDT": 6.0, "ETHUSDT": 7.0}, {"BTCUSDT": 8.0}]
        assert app.market.table.get_cell("ETHUSDT", "last").plain == "7.00"


async def test_key_5_shows_the_market_watch_as_a_tab(rig):
    app = make_app(rig)
    async with app.run_test(size=NARROW) as pilot:
        await started(pilot)
        await hold_cycle(pilot, rig)
        assert not app.market.display or not app.market.has_class("-current")
        await pilot.press("5")
        await settle(pilot)
        assert app.current_panel == "market" and app.market.has_class("-current")
        assert app.focused is app.market.table
        await pilot.press("down")
        await settle(pilot)
        assert app.market.table.cursor_key == "ETHUSDT"
        assert app.market._detail.content.startswith("ETHUSDT HOLD at")


async def test_history_fills_the_latest_decisions_after_a_restart(rig):
    rig.store.add_decision(DecisionRecord(
        decision=Decision(symbol="SOLUSDT", action=Action.HOLD, confidence=0.2, rationale="RSI(1m) 81: overbought"),
        status="HOLD", message="RSI(1m) 81: overbought", recorded_at=rig.clock.now() - 30))
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await rig.engine.run_decision_cycle()  # no decision for SOL this time: the one on file shows
        await settle(pilot)
        assert app.market.table.get_cell("SOLUSDT", "decision").plain == "HOLD RSI(1m) 81: overbought"


async def test_a_new_title_repaints_the_title_line_only(rig, monkeypatch):
    """The market watch's title carries the time of its prices, which change every second:
    Textual's own setter repainted the whole panel for it (every row of the table rendered
    and written to the terminal again). Now only the top border line is."""
    from widgets.titles import set_border_title

    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await hold_cycle(pilot, rig)
        monkeypatch.setattr(console, "TICK_SEC", 3600.0)  # nothing else repaints meanwhile
        await pilot.pause()
        panel = app.market
        sent = await sent_spans(pilot, monkeypatch, lambda: set_border_title(panel, "Market · 12:34:56 UTC"))
        top_y = panel.region.y  # the panel's top border line, on screen
        assert lines_of(sent) == {top_y}
        [top] = panel.render_lines(Region(0, 0, panel.outer_size.width, 1))
        assert "Market · 12:34:56 UTC" in top.text  # and the line shows the new title
        # Textual's own setter, for contrast: every line of the panel
        sent = await sent_spans(pilot, monkeypatch, lambda: setattr(panel, "border_title", "Market · 12:34:57 UTC"))
        assert lines_of(sent) == set(range(top_y, top_y + panel.outer_size.height))


async def test_a_countdown_in_the_detail_does_not_lay_out_the_screen(rig, monkeypatch):
    """The line under the table counts a cooldown down every second. It is laid out again
    (the whole screen's layout, then the panel repainted) only when its wrapped height
    changes, not whenever a line of it is longer than the width (a long reason)."""
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        rig.decider.push(decision("BTCUSDT", cooldown_sec=300, rationale="a long reason " * 12))
        await rig.engine.run_decision_cycle()
        await rig.engine.approve(next(iter(rig.engine.pending)))
        await rig.engine.force_close("BTCUSDT")
        await settle(pilot)
        assert app.market.table.cursor_key == "BTCUSDT"
        detail = app.market._detail
        rig.clock.advance(1)  # a tick: painted once at its width (it had none while hidden)
        await pilot.pause(console.TICK_SEC * 2.5)
        assert len(detail.content.splitlines()[0]) > detail.content_region.width  # the reason wraps
        layouts = []  # the layouts the detail asks for (other widgets may ask for theirs meanwhile)
        real = detail.refresh
        monkeypatch.setattr(detail, "refresh", lambda *a, layout=False, **k: (layout and layouts.append(1), real(*a, layout=layout, **k))[1])
        before = detail.content
        rig.clock.advance(6)
        await pilot.pause(console.TICK_SEC * 2.5)
        assert detail.content != before and "04:53 left" in detail.content  # it ticked
        assert layouts == []
        height = detail.outer_size.height
        rig.decider.push(decision("BTCUSDT", Action.HOLD, confidence=0.3, rationale="a longer reason " * 30))
        rig.clock.advance(400)
        await rig.engine.run_decision_cycle()
        await settle(pilot)
        assert layouts  # three lines now: laid out again
        assert detail.outer_size.height > height


# --- formats ---------------------------------------------------------------------------------


def test_size_tp_sl_prices_and_quantities_read_at_a_glance():
    rec = DecisionRecord(decision=Decision(symbol="BTCUSDT", action=Action.OPEN_LONG, confidence=0.8, size_pct=15.704,
                                           leverage=7, tp_pct=1.0, sl_pct=1.0), status="PENDING", recorded_at=0)
    assert fmt.size_lev(rec) == "15.7% × 7x"
    assert fmt.tp_sl(rec) == "+1.0% / −1.0%"
    fmt.set_ticks({"BTCUSDT": 0.1, "ETHUSDT": 0.01, "DOGEUSDT": 0.00001, "XYZUSDT": 0.5})
    assert fmt.price(97012.345, "BTCUSDT") == "97,012.3"
    assert fmt.price(3384.3, "ETHUSDT") == "3,384.30"
    assert fmt.price(0.123456, "DOGEUSDT") == "0.12346"
    assert fmt.price(12.5, "XYZUSDT") == "12.5"
    assert fmt.qty(1234567.5) == "1,234,567.5" and fmt.qty(0.098) == "0.098" and fmt.qty(1200.0) == "1,200"
    assert fmt.elapsed(3723.9) == "1:02:03"
