"""The console's flows, driven with Textual's Pilot over a real engine on the seeded
simulated market (ManualClock, scripted decider, no scheduler)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from textual.widgets import Input

import app.console as console
from app.console import ScalpDeskApp, find_styles
from app.dialogs import ChoiceScreen, ConfirmScreen, DecisionScreen, HelpScreen
from engine.events import LogEvent, UsageUpdated
from engine.models import Action, CloseReason
from tests.painted import lines_of, sent_spans
from tests.rig import plan
from tests.test_console_scenes import decision, live_rig, make_app, rig, scene_rig, settle, started, wait  # noqa: F401 (fixtures)

WIDE = (160, 48)



def toasts(app: ScalpDeskApp) -> list[str]:
    return [n.message for n in app._notifications]


def open_position(rig, symbol: str, **over) -> None:
    """A position opened through the executor (as an approved decision would be)."""
    rig.engine.executor.open(plan(rig, decision(symbol, **over)))


def cell(app: ScalpDeskApp, table, key: str, col: str) -> str:
    return table.get_cell(key, col).plain


async def propose(pilot, rig, *decisions) -> list[str]:
    """Queue decisions and press r: the engine runs a cycle; returns the pending ids."""
    rig.decider.push(*decisions)
    await pilot.press("r")
    await settle(pilot)
    return pilot.app.decisions.pending_ids


# --- approve, reject, expiry ------------------------------------------------------------


async def test_approve_executes_an_order(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        [did] = await propose(pilot, rig, decision("BTCUSDT"))
        assert app.bells == 1  # a new pending decision rings the terminal bell in APPROVE mode
        assert any("waits for you" in t for t in toasts(app))
        assert app.status.pending == 1 and rig.venue.positions() == []
        assert cell(app, app.decisions.pending, did, "left") == "02:00"
        await pilot.press("y")
        await settle(pilot)
        assert [p.symbol for p in rig.venue.positions()] == ["BTCUSDT"]
        assert app.decisions.pending_ids == []
        assert cell(app, app.decisions.history, did, "outcome") == "EXECUTED"
        assert app.positions.table.has("BTCUSDT") and app.status.positions == 1
        assert any("BTCUSDT OPEN_LONG approved" in t for t in toasts(app))


async def test_reject_never_executes(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        [did] = await propose(pilot, rig, decision("ETHUSDT"))
        await pilot.press("n")
        await settle(pilot)
        assert rig.venue.positions() == [] and rig.engine.pending == {}
        assert cell(app, app.decisions.history, did, "outcome") == "REJECTED by operator"
        assert rig.store.decisions(limit=1)[0].status == "REJECTED"


async def test_a_decision_expires_on_the_engines_timer_and_the_countdown_shows_it(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        [did] = await propose(pilot, rig, decision("SOLUSDT"))
        await wait(rig, rig.settings.approval_timeout_sec - 20)
        await pilot.pause(console.TICK_SEC * 2.5)
        left = app.decisions.pending.get_cell(did, "left")
        assert left.plain == "00:20" and left.style == app.decisions.pending.get_component_rich_style(
            "decisions--urgent", partial=True)
        await wait(rig, 20)  # the engine's own expiry timer fires: the console only shows it
        await settle(pilot)
        assert app.decisions.pending_ids == []
        assert cell(app, app.decisions.history, did, "outcome") == "EXPIRED (not approved in time)"
        assert rig.venue.positions() == []


async def test_an_expired_decision_cannot_be_approved_and_the_console_says_so(rig, monkeypatch):
    monkeypatch.setattr(console, "TICK_SEC", 3600.0)  # no tick: the row still shows when y is pressed
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        [did] = await propose(pilot, rig, decision("BTCUSDT"))
        rig.clock.advance(rig.settings.approval_timeout_sec + 1)
        await pilot.press("y")
        assert any("has expired: it cannot be approved" in t for t in toasts(app))
        await settle(pilot)
        assert rig.venue.positions() == []
        assert cell(app, app.decisions.history, did, "outcome").startswith("EXPIRED")
        assert any("has expired and cannot be approved" in line for line in app.log_panel.plain_lines)


async def test_the_detail_screen_shows_rationale_clamps_inputs_and_audit(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await propose(pilot, rig, decision("XRPUSDT", leverage=25, size_pct=40, rationale="breakout above the 15m range"))
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, DecisionScreen)
        text = "\n".join(f"{t}\n{b}" for t, b in screen.sections())
        assert "breakout above the 15m range" in text
        assert "leverage: 25 → 10" in text  # the clamp, with its reason
        assert "Inputs it saw" in text and "RSI(14)" in text  # the market the decider saw
        await pilot.press("escape")
        assert not isinstance(app.screen, DecisionScreen)


# --- force close, close all -------------------------------------------------------------


async def test_force_close_asks_then_closes_journals_and_starts_a_cooldown(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        open_position(rig, "BTCUSDT")
        open_position(rig, "ETHUSDT", action=Action.OPEN_SHORT)
        await rig.engine.run_monitor()
        await settle(pilot)
        app.positions.table.focus()
        await pilot.press("down")  # ETHUSDT
        await pilot.press("c")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        body = "\n".join(dialog.lines)
        eth = next(p for p in rig.venue.positions() if p.symbol == "ETHUSDT")
        assert dialog.title_text == "Force close ETHUSDT?"
        assert f"SHORT {eth.size:g} ETHUSDT" in body and "PnL now" in body
        await pilot.press("n")  # cancel: nothing happens
        await settle(pilot)
        assert {p.symbol for p in rig.venue.positions()} == {"BTCUSDT", "ETHUSDT"}
        real = rig.venue.place_order
        answer = threading.Event()  # the venue answers when the test has looked (a sleep raced a slow machine)
        rig.venue.place_order = lambda order: (answer.wait(10), real(order))[1]  # (called in a worker thread)
        await pilot.press("c")
        await pilot.press("y")
        assert app.positions.table.get_cell("ETHUSDT", "exit").plain == "closing"  # at once, before the venue answers
        answer.set()
        await settle(pilot)
        assert {p.symbol for p in rig.venue.positions()} == {"BTCUSDT"}
        assert rig.store.trades()[0].reason is CloseReason.FORCE_CLOSE
        assert not app.positions.table.has("ETHUSDT")
        assert app.cooldowns.table.has("ETHUSDT")
        assert cell(app, app.cooldowns.table, "ETHUSDT", "reason") == "FORCE_CLOSE"
        assert any("FORCE CLOSE requested for ETHUSDT" in line for line in app.log_panel.plain_lines)


async def test_close_all_closes_everything_and_pauses_entries(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        for sym in ("BTCUSDT", "SOLUSDT"):
            open_position(rig, sym)
        await rig.engine.run_monitor()
        await settle(pilot)
        await pilot.press("X")
        assert isinstance(app.screen, ConfirmScreen) and "Close ALL 2 positions?" == app.screen.title_text
        await pilot.press("y")
        await settle(pilot)
        assert rig.venue.positions() == [] and rig.engine.paused
        assert app.status.paused and app.positions.positions == {}
        assert {r.reason for r in rig.store.trades()} == {CloseReason.FORCE_CLOSE}
        assert set(app.cooldowns.cooldowns) == {"BTCUSDT", "SOLUSDT"}


# --- mode, pause, cycle -----------------------------------------------------------------


async def test_auto_needs_a_confirmation_and_approve_needs_none(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert rig.engine.mode == "approve"
        await pilot.press("a", "y")
        await settle(pilot)
        assert rig.engine.mode == "auto" and app.status.mode == "auto"
        assert app.query_one("#st-mode").has_class("-auto")
        await pilot.press("a")  # back to APPROVE: the safe way needs no confirmation
        assert not isinstance(app.screen, ConfirmScreen)
        await settle(pilot)
        assert rig.engine.mode == "approve"


async def test_auto_on_a_live_venue_needs_the_word_typed(live_rig):
    rig = live_rig
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        assert app.query_one("#st-venue").has_class("-live")
        await pilot.press("a")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen) and dialog.require == "AUTO"
        await pilot.press("y", "enter")  # y types a letter, Enter checks it: not AUTO
        await settle(pilot)
        assert rig.engine.mode == "approve" and app.screen is dialog
        assert "not AUTO" in str(dialog.query_one("#dialog-error").render())
        await pilot.press(*"auto", "enter")  # the word, in capitals
        await settle(pilot)
        assert rig.engine.mode == "approve" and app.screen is dialog
        await pilot.press(*"AUTO", "enter")
        await settle(pilot)
        assert rig.engine.mode == "auto" and not isinstance(app.screen, ConfirmScreen)


async def test_pause_blocks_entries_but_not_exits(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        open_position(rig, "BTCUSDT", time_in_trade_limit_sec=1200)
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert rig.engine.paused and app.query_one("#st-state").has_class("-paused")
        rig.decider.push(decision("ETHUSDT"))
        await pilot.press("r")
        await settle(pilot)
        [rec] = [r for r in app.decisions.records.values() if r.decision.symbol == "ETHUSDT"]
        assert rec.status == "BLOCKED" and "PAUSED" in rec.review.reasons
        await wait(rig, 1200)  # the position's own timer: the time exit runs, paused or not
        await settle(pilot)
        assert rig.venue.positions() == [] and rig.store.trades()[0].reason is CloseReason.TIME_EXIT
        await pilot.press("p")
        await settle(pilot)
        assert not rig.engine.paused and app.query_one("#st-state").has_class("-running")


async def test_the_countdown_ticks_turns_urgent_and_the_time_exit_shows(rig, monkeypatch):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        open_position(rig, "SOLUSDT", time_in_trade_limit_sec=1200)
        await settle(pilot)
        table = app.positions.table
        style = lambda name: table.get_component_rich_style(f"positions--{name}", partial=True)  # noqa: E731
        assert table.get_cell("SOLUSDT", "exit").plain == "20:00"
        await wait(rig, 1200 - 61)
        app.positions.tick(rig.clock.now())
        assert table.get_cell("SOLUSDT", "exit").plain == "01:01"
        assert table.get_cell("SOLUSDT", "exit").style == style("countdown")
        await wait(rig, 2)
        app.positions.tick(rig.clock.now())
        assert table.get_cell("SOLUSDT", "exit").plain == "00:59"
        assert table.get_cell("SOLUSDT", "exit").style == style("urgent")  # the last minute
        rig.clock.advance(59)  # the clock alone: the countdown shows the exit is due...
        app.positions.tick(rig.clock.now())
        assert table.get_cell("SOLUSDT", "exit").plain == "EXIT"
        await rig.engine.timers.run_due()  # ...and the engine's timer, due now, closes it
        await settle(pilot)
        assert not table.has("SOLUSDT") and rig.venue.positions() == []
        assert cell(app, app.cooldowns.table, "SOLUSDT", "reason") == "TIME_EXIT"
        log = "\n".join(app.log_panel.plain_lines)
        assert "TIME-BASED EXIT: SOLUSDT long - in trade for 1200s (limit: 1200s)" in log
        assert "Position closed: SOLUSDT long TIME_EXIT" in log


async def test_cooldowns_tick_and_disappear_when_over(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        open_position(rig, "BTCUSDT", cooldown_sec=300)
        await rig.engine.force_close("BTCUSDT")
        await settle(pilot)
        assert cell(app, app.cooldowns.table, "BTCUSDT", "left") == "05:00"
        rig.clock.advance(299.5)
        app.cooldowns.tick(rig.clock.now())
        assert cell(app, app.cooldowns.table, "BTCUSDT", "left") == "00:01"
        rig.clock.advance(0.5)
        await pilot.pause(console.TICK_SEC * 2.5)
        assert not app.cooldowns.table.has("BTCUSDT") and app.cooldowns.has_class("-empty")


# --- responsiveness ---------------------------------------------------------------------


async def test_keys_answer_while_the_venue_and_the_ai_are_slow(rig):
    """A blocking venue call and a slow decider run off the event loop: every key still
    shows its effect at once."""
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        [did] = await propose(pilot, rig, decision("BTCUSDT"))
        real = rig.venue.place_order
        placed = threading.Event()

        def slow_place(order):
            time.sleep(1.5)  # pybit is blocking: this is what a slow venue looks like
            try:
                return real(order)
            finally:
                placed.set()

        rig.venue.place_order = slow_place
        rig.decider.delay = 1.5
        await pilot.press("y")
        assert cell(app, app.decisions.pending, did, "left") == "approving"
        await pilot.press("r")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        # Every key was answered while the order was still at the venue: had the loop
        # waited for it, the keys would only have been handled after it was placed.
        assert not placed.is_set()
        await settle(pilot)
        assert [p.symbol for p in rig.venue.positions()] == ["BTCUSDT"]


async def test_events_from_worker_threads_reach_the_panels(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)

        def emit_from_a_thread():
            rig.engine.emit(LogEvent(ts=rig.clock.now(), level="warning", message="from a worker thread"))
            rig.engine.emit(UsageUpdated(ts=rig.clock.now(), model="gpt-4.1-mini", day_cost_usd=0.42, budget_usd=5.0))

        await asyncio.to_thread(emit_from_a_thread)
        await settle(pilot)
        assert "from a worker thread" in app.log_panel.plain_lines[-1]
        assert app.status.usage == "$0.42/5.00 today"


async def test_a_degraded_engine_shows_its_reason_and_rings(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        rig.engine._degrade("venue refused the keys: 10003 API key is invalid")
        await settle(pilot)
        state = app.query_one("#st-state")
        assert state.has_class("-degraded") and "DEGRADED" in str(state.render())
        alert = app.query_one("#st-alert")  # the reason in full, on its own line
        assert alert.display and "venue refused the keys: 10003 API key is invalid" in str(alert.render())
        assert app.bells == 1 and any("New entries stopped (exits keep running)" in t for t in toasts(app))


async def test_the_status_bar_shows_where_the_marks_come_from(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        feed = app.query_one("#st-feed")
        assert not feed.display  # no ticking marks (a driven clock): nothing shown
        for status, text in (("live", "● live"), ("stale", "○ stale"), ("polling", "◐ polling")):
            rig.engine.emit(rig.engine.state_event().model_copy(update={"feed": status}))
            await settle(pilot)
            assert feed.display and str(feed.render()) == text and feed.has_class(f"-{status}")
            assert app.status.feed == status


# --- quitting, help, layout -------------------------------------------------------------


async def test_quitting_the_console_leaves_the_engine_running(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        open_position(rig, "BTCUSDT")
        await settle(pilot)
        await pilot.press("q")
        dialog = app.screen
        assert isinstance(dialog, ChoiceScreen)
        body = " ".join(dialog.lines)
        assert "The engine keeps running without this console" in body and "time exits" in body
        assert "leaves 1 position(s) OPEN" in body  # what stopping the engine too would mean
        await pilot.press("n")
        assert app.is_running
        await pilot.press("q", "y")
        await settle(pilot)
    assert app.return_code == 0
    assert not rig.engine.stopping and "exit:BTCUSDT" in rig.engine.timers.ids()  # it still guards the position
    assert [p.symbol for p in rig.venue.positions()] == ["BTCUSDT"]
    await app.host.stop()


async def test_quit_offers_to_stop_the_engine_as_well(rig):
    app = make_app(rig)
    stops = []
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        app.host.service.on_shutdown = lambda: stops.append("stop")  # what `scalpdesk --headless` does on it
        await pilot.press("q")
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("S")
        await settle(pilot)
    assert stops == ["stop"] and app.return_code == 0
    await app.host.stop()


async def test_the_panels_keep_ticking_under_a_dialog(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        open_position(rig, "BTCUSDT", time_in_trade_limit_sec=1800)
        await settle(pilot)
        await pilot.press("question_mark")
        rig.clock.advance(60)
        rig.engine.emit(LogEvent(ts=rig.clock.now(), level="info", message="while the help is open"))
        await pilot.pause(console.TICK_SEC * 3)
        assert isinstance(app.screen, HelpScreen)
        assert app.positions.table.get_cell("BTCUSDT", "exit").plain == "29:00"
        assert app.status.clock == "00:01:00 UTC"
        assert app.log_panel.plain_lines[-1].endswith("while the help is open")
        await pilot.press("escape")


async def test_help_lists_every_key(rig):
    from widgets.decisions import DecisionsPanel, HistoryTable, PendingTable
    from widgets.positions import PositionsTable

    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {k for _, rows in app.screen.sections for keys, _ in rows for k in keys.split(", ")}
        for cls in (ScalpDeskApp, DecisionsPanel, PendingTable, HistoryTable, PositionsTable):
            for b in cls.BINDINGS:
                name = {"question_mark": "?", "enter": "Enter", "ctrl+q": "Ctrl+Q"}.get(b.key, b.key)
                assert name in listed, f"{cls.__name__}: {b.key} missing from the help"
        await pilot.press("a")  # the app's keys wait while a dialog is open
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_small_terminal_shows_one_panel_at_a_time(rig):
    app = make_app(rig)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        assert app.screen.has_class("-narrow")
        shown = lambda: [p for p in console.PANELS if app.query_one(f"#{p}").display]  # noqa: E731
        assert shown() == ["decisions"]
        await pilot.press("2")
        assert shown() == ["positions"] and app.focused is app.query_one("#positions-table")
        await pilot.press("4")
        assert shown() == ["log"]
        await pilot.press("tab")  # Tab moves on; the panel it reaches is shown
        await pilot.press("1")
        assert shown() == ["decisions"]
        await pilot.resize_terminal(160, 48)
        await settle(pilot)
        assert shown() == list(console.PANELS)  # all at once when there is room


async def test_history_from_the_state_files_shows_at_start(tmp_path):
    first = scene_rig(tmp_path / "state")
    await first.engine.start(schedule=False)
    first.decider.push(decision("BTCUSDT"))
    await first.engine.run_decision_cycle()
    await first.engine.reject(next(iter(first.engine.pending)))
    first.store.close()
    rig = scene_rig(tmp_path / "state")
    try:
        app = make_app(rig)
        async with app.run_test(size=WIDE) as pilot:
            await started(pilot)
            outcomes = [cell(app, app.decisions.history, k, "outcome") for k in app.decisions.history.keys()]
            assert outcomes == ["REJECTED by operator"]
    finally:
        rig.store.close()


def test_styles_are_found_at_the_top_of_the_checkout():
    from pathlib import Path

    assert find_styles() == Path(console.__file__).resolve().parent.parent / "styles.tcss"


async def test_the_log_is_bounded_and_keeps_the_newest_in_view():
    from textual.app import App

    from widgets.logs import LogPanel

    class One(App):
        CSS_PATH = str(find_styles())

        def compose(self):
            yield LogPanel(max_lines=50)

    app = One()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(LogPanel)
        for i in range(500):
            panel.add(LogEvent(ts=0, level="info", message=f"line {i}"))
        await pilot.pause()
        assert len(panel.history) == 50 and len(panel.lines) <= 50
        assert panel.plain_lines[-1].endswith("line 499")
        assert panel.is_vertical_scroll_end


async def test_a_growing_log_scrolls_to_its_newest_line_without_laying_out_the_screen(monkeypatch):
    """Ten lines a second used to re-arrange and repaint every panel until the log was full:
    a new height now moves the scrollbar only."""
    from textual.app import App
    from textual.screen import Screen

    from widgets.logs import LogPanel

    class One(App):
        CSS_PATH = str(find_styles())

        def compose(self):
            yield LogPanel(max_lines=500)

    layouts = []
    real = Screen._refresh_layout
    monkeypatch.setattr(Screen, "_refresh_layout", lambda self, *a, **k: (layouts.append(1), real(self, *a, **k))[1])
    app = One()
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(LogPanel)
        await pilot.pause()

        async def write(first: int, n: int) -> None:
            for i in range(first, first + n):
                panel.add(LogEvent(ts=0, level="info", message=f"line {i}"))
            panel.flush()
            await pilot.pause()

        await write(0, 5)
        await write(5, 40)  # more than the panel's height
        assert panel.is_vertical_scroll_end
        for i in range(3):
            panel.add(LogEvent(ts=0, level="info", message=f"now {i}"))
        panel.flush()
        assert panel.is_vertical_scroll_end  # scrolled at once: one repaint, not a second after it
        layouts.clear()
        for step in range(5):
            await write(45 + 10 * step, 10)
            assert panel.is_vertical_scroll_end
            assert panel.vertical_scrollbar.window_virtual_size == len(panel.lines)
        bottom = panel.content_region.height - 1
        assert "line 94" in panel.render_line(bottom).text
        assert layouts == []


async def test_a_flush_of_the_log_repaints_its_lines_not_its_border(rig, monkeypatch):
    """Each write sets the log's height, and RichLog repaints the whole widget for it: the
    border and its title were written to the terminal again at every flush."""
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        panel = app.log_panel
        for i in range(60):  # more than it shows
            panel.add(LogEvent(ts=rig.clock.now(), level="info", message=f"line {i}"))
        panel.flush()
        await pilot.pause()

        def more() -> None:
            for i in range(3):
                panel.add(LogEvent(ts=rig.clock.now(), level="info", message=f"more {i}"))
            panel.flush()

        painted = lines_of(await sent_spans(pilot, monkeypatch, more))
        top, content = panel.region, panel.content_region
        # (the app's tick may repaint the status bar meanwhile: only the log's rows are looked at)
        in_log = {y for y in painted if top.y <= y < top.bottom}
        assert in_log == set(range(content.y, content.bottom))  # every line of it, and only those
        assert top.y < content.y and top.bottom > content.bottom  # (it has a border, above and below)
        assert panel.plain_lines[-1].endswith("more 2") and panel.is_vertical_scroll_end


async def test_marks_paint_the_positions_once_a_tick_and_a_close_is_never_undone(rig, monkeypatch):
    from app.messages import EngineEvent
    from engine.events import PositionClosed, PositionsUpdated
    from engine.models import PositionMeta, Trade, VenuePosition

    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        monkeypatch.setattr(console, "TICK_SEC", 3600.0)  # no tick paints during the test: each is called by hand
        shown = []
        real = app.positions.show
        monkeypatch.setattr(app.positions, "show", lambda pos, *a, **k: (shown.append([p.mark_price for p in pos]), real(pos, *a, **k))[1])
        meta = PositionMeta(symbol="BTCUSDT", side="long", opened_at=rig.clock.now(), time_in_trade_limit_sec=2400, qty=0.01)

        def picture(mark: float) -> PositionsUpdated:
            pos = VenuePosition(symbol="BTCUSDT", side="long", size=0.01, entry_price=100_000, mark_price=mark,
                                leverage=3, unrealised_pnl=(mark - 100_000) * 0.01)
            return PositionsUpdated(ts=rig.clock.now(), level="debug", positions=[pos], metas=[meta])

        for mark in (100_100.0, 100_200.0, 100_300.0, 100_400.0):  # four marks inside one tick
            app.on_engine_event(EngineEvent(picture(mark)))
        assert shown == []  # they wait for the tick
        app._tick()
        assert shown == [[100_400.0]]  # one paint, the newest picture
        assert cell(app, app.positions.table, "BTCUSDT", "mark") == "100,400.0"

        app.on_engine_event(EngineEvent(picture(100_500.0)))  # waits for the tick …
        trade = Trade(symbol="BTCUSDT", side="long", qty=0.01, entry_price=100_000, exit_price=100_500,
                      opened_at=meta.opened_at, closed_at=rig.clock.now(), pnl=5, roi_pct=1.5, duration_sec=60,
                      reason=CloseReason.TAKE_PROFIT)
        app.on_engine_event(EngineEvent(PositionClosed(ts=rig.clock.now(), level="info", message="closed", trade=trade)))
        assert shown[-1] == [100_500.0]  # … but is painted before the close that came after it
        app._tick()
        assert "BTCUSDT" not in app.positions.positions and len(shown) == 2  # the close stays done


async def test_only_the_positions_in_view_are_written_and_the_rest_when_they_come_into_view(rig, monkeypatch):
    """Sixty positions, marks moving on all of them: the rows on screen are written at the
    tick; a row below them is written when the cursor brings it into view."""
    from app.messages import EngineEvent
    from engine.events import PositionsUpdated
    from engine.models import PositionMeta, VenuePosition

    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        monkeypatch.setattr(console, "TICK_SEC", 3600.0)
        syms = [f"C{i:02d}USDT" for i in range(60)]
        metas = [PositionMeta(symbol=s, side="long", opened_at=rig.clock.now(), time_in_trade_limit_sec=2400, qty=1)
                 for s in syms]

        def picture(mark: float) -> PositionsUpdated:
            pos = [VenuePosition(symbol=s, side="long", size=1, entry_price=100, mark_price=mark, leverage=3,
                                 unrealised_pnl=mark - 100) for s in syms]
            return PositionsUpdated(ts=rig.clock.now(), level="debug", positions=pos, metas=metas)

        app.on_engine_event(EngineEvent(picture(101.0)))
        app._tick()
        await settle(pilot)
        table = app.positions.table
        assert all(cell(app, table, s, "mark") == "101.00" for s in syms)  # new rows: written whole
        app.on_engine_event(EngineEvent(picture(102.0)))
        app._tick()
        shown = [s for s in syms if table.in_view(s)]
        assert 5 < len(shown) < 40
        assert all(cell(app, table, s, "mark") == "102.00" for s in shown)
        assert cell(app, table, syms[-1], "mark") == "101.00"  # out of view: not written yet …
        table.focus()
        table.move_cursor(row=59, animate=False)
        await settle(pilot)
        assert table.in_view(syms[-1])
        assert cell(app, table, syms[-1], "mark") == "102.00"  # … written when it came into view


async def test_positions_painted_while_their_tab_was_hidden_show_the_newest_marks_when_it_opens(rig, monkeypatch):
    """80x24: one panel at a time. Marks that came while the positions tab was never on
    screen are written when it opens (its first size), not left at the first picture."""
    from app.messages import EngineEvent
    from engine.events import PositionsUpdated
    from engine.models import PositionMeta, VenuePosition

    app = make_app(rig)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        assert app.current_panel != "positions"
        monkeypatch.setattr(console, "TICK_SEC", 3600.0)
        meta = PositionMeta(symbol="BTCUSDT", side="long", opened_at=rig.clock.now(), time_in_trade_limit_sec=2400, qty=0.01)

        def picture(mark: float) -> PositionsUpdated:
            pos = VenuePosition(symbol="BTCUSDT", side="long", size=0.01, entry_price=100_000, mark_price=mark,
                                leverage=3, unrealised_pnl=(mark - 100_000) * 0.01)
            return PositionsUpdated(ts=rig.clock.now(), level="debug", positions=[pos], metas=[meta])

        for mark in (100_100.0, 100_200.0):
            app.on_engine_event(EngineEvent(picture(mark)))
            app._tick()
            await settle(pilot)
        assert app.positions.behind == {"BTCUSDT"}  # off screen: the newest marks wait in the panel
        await pilot.press("2")
        await settle(pilot)
        assert app.current_panel == "positions"
        assert cell(app, app.positions.table, "BTCUSDT", "mark") == "100,200.0"
        assert not app.positions.behind


async def test_cell_styles_are_kept_until_the_theme_changes():
    """Tables keep their cells' component styles (Textual's own cache of them is emptied by
    every refresh); a new theme makes them anew."""
    from textual.app import App

    from widgets.positions import PositionsTable

    class One(App):
        CSS_PATH = str(find_styles())

        def compose(self):
            yield PositionsTable()

    app = One()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(PositionsTable)
        dark = table.cell_style("positions--profit")
        table.refresh()  # what writing a cell does
        assert table.cell_style("positions--profit") is dark
        app.theme = "textual-light"
        await pilot.pause()
        light = table.cell_style("positions--profit")
        assert light == table.get_component_rich_style("positions--profit", partial=True)
        assert light.color != dark.color


async def test_the_input_keeps_focus_in_the_typed_confirmation(live_rig):
    app = make_app(live_rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await pilot.press("a")
        assert isinstance(app.focused, Input)


# --- formatting (pure) ------------------------------------------------------------------


def test_countdowns_and_durations_read_as_a_trader_expects():
    from widgets import format as fmt

    assert fmt.countdown(61) == "01:01" and fmt.countdown(59.2) == "01:00" and fmt.countdown(0.2) == "00:01"
    assert fmt.countdown(0) == "00:00" and fmt.countdown(-5) == "00:00" and fmt.countdown(None) == "—"
    assert fmt.countdown(3725) == "1:02:05"
    assert fmt.duration(1800) == "30m" and fmt.duration(3600) == "1h" and fmt.duration(90) == "90s"
    assert fmt.money(1234.5) == "1,234.50" and fmt.money(-3.2, signed=True) == "-3.20"
    assert fmt.price(97654.12) == "97,654.1" and fmt.price(234.881) == "234.88" and fmt.price(0.123456) == "0.12346"


def test_outcomes_name_the_verdict_and_the_reason():
    from engine.models import DecisionRecord, Review, Verdict
    from widgets import format as fmt

    d = decision("BTCUSDT", Action.REVERSE)
    converted = Review(verdict=Verdict.CONVERTED, reasons=["REVERSE_DISABLED"],
                       decision=d.model_copy(update={"action": Action.CLOSE}))
    rec = DecisionRecord(decision=d, review=converted, status="EXECUTED", recorded_at=0)
    assert fmt.verdict(rec) == "CONVERTED: REVERSE→CLOSE"
    assert fmt.outcome(rec) == "EXECUTED (CONVERTED: REVERSE→CLOSE)"
    blocked = Review(verdict=Verdict.BLOCKED, reasons=["COOLDOWN"], decision=d)
    assert fmt.outcome(rec.model_copy(update={"status": "BLOCKED", "review": blocked})) == "BLOCKED: COOLDOWN"
    failed = rec.model_copy(update={"status": "FAILED", "message": "BTCUSDT OPEN_LONG FAILED: 110007 insufficient balance"})
    assert fmt.outcome(failed) == "FAILED: 110007 insufficient balance" and fmt.outcome_kind(failed) == "bad"
    assert fmt.outcome(rec.model_copy(update={"status": "REJECTED"})) == "REJECTED by operator"
    assert fmt.outcome(rec.model_copy(update={"status": "EXPIRED"})).startswith("EXPIRED")


def test_the_gc_policy_freezes_every_few_seconds_and_thaws_hourly(monkeypatch):
    from app.console import GcPolicy

    calls = []
    monkeypatch.setattr(console.gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(console.gc, "unfreeze", lambda: calls.append("unfreeze"))
    monkeypatch.setattr(console.gc, "collect", lambda: calls.append("collect"))
    policy = GcPolicy()
    policy.tick(1000.0)
    policy.tick(1000.0 + GcPolicy.FREEZE_SEC / 2)
    assert calls == ["freeze"]
    policy.tick(1000.0 + GcPolicy.FREEZE_SEC)
    assert calls == ["freeze", "freeze"]
    policy.tick(1000.0 + GcPolicy.THAW_SEC)
    assert calls[-4:] == ["freeze", "unfreeze", "collect", "freeze"]


async def test_enter_never_confirms_a_force_close(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        open_position(rig, "BTCUSDT")
        await settle(pilot)
        await pilot.press("2", "c", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen) and [p.symbol for p in rig.venue.positions()] == ["BTCUSDT"]
        await pilot.press("escape")
        assert not isinstance(app.screen, ConfirmScreen)


def test_only_the_flags_that_set_the_engine_are_reported_as_not_applied():
    assert console.engine_flags(["--state-dir", "/s", "--config=/c.toml"]) == []
    assert console.engine_flags(["--mode", "auto", "--state-dir=/s", "--headless"]) == ["--mode auto", "--headless"]
    assert console.engine_flags(["--speed=10", "--config", "/c.toml", "--seed", "3"]) == ["--speed=10", "--seed 3"]


async def test_a_console_attaching_to_a_running_engine_says_its_flags_were_not_applied(rig):
    app = make_app(rig, notice="The engine already runs (pid 1) and keeps the settings it was started with: "
                               "--mode auto not applied.")
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        assert any("--mode auto not applied" in t for t in toasts(app))
