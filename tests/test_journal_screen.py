"""The journal (key j): every closed trade from the state files, filters, Enter to the
decisions behind a trade, CSV export; and the read-only reader of decision records."""

from __future__ import annotations

import csv

from app.console import ScalpDeskApp
from app.dialogs import DecisionScreen
from app.screens import JournalScreen
from engine.journal import read_decisions
from engine.models import CloseReason
from engine.report import CSV_FIELDS
from tests.test_console_scenes import (  # noqa: F401 (fixtures)
    SYMBOLS,
    decision,
    history_desk,
    history_rig,
    history_trades,
    make_app,
    rig,
    settle,
    started,
    write_history,
)

WIDE = (160, 48)


def test_read_decisions_finds_records_by_id_without_the_lock(history_rig):
    trades = [t for t in history_trades(history_rig.clock.now()) if t[0].reason is CloseReason.AI_CLOSE]
    trade, (opening, closing) = trades[0]
    # the store holds the directory's lock; the reader does not need it
    found = read_decisions(history_rig.store.state_dir, [trade.decision_id, trade.close_decision_id, "d-nope"],
                           trade.opened_at - 7200, trade.closed_at + 60)
    assert found == {opening.decision.decision_id: opening, closing.decision.decision_id: closing}
    # outside the hours read, nothing
    assert read_decisions(history_rig.store.state_dir, [trade.decision_id], trade.closed_at + 7200) == {}


async def open_journal(pilot) -> JournalScreen:
    await history_desk(pilot, pilot.app.engine_rig)  # type: ignore[attr-defined]
    await pilot.press("j")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, JournalScreen)
    return screen


def app_for(rig) -> ScalpDeskApp:
    app = make_app(rig)
    app.engine_rig = rig  # type: ignore[attr-defined]
    return app


def rows(screen: JournalScreen) -> list[tuple[str, ...]]:
    t = screen.table
    return [tuple(t.get_cell(k, c).plain for c in ("symbol", "side", "reason", "pnl")) for k in t.keys()]


async def test_j_lists_every_trade_newest_first_and_survives_a_restart(history_rig):
    rig = history_rig.reopen()  # a restart: a new engine on the same state directory
    try:
        app = app_for(rig)
        async with app.run_test(size=WIDE) as pilot:
            screen = await open_journal(pilot)
            trades = sorted((t for t, _ in history_trades(rig.clock.now())), key=lambda t: t.closed_at, reverse=True)
            assert len(screen.table.keys()) == 40
            assert rows(screen)[0] == (trades[0].symbol, trades[0].side, trades[0].reason.value, "+8.00")
            shown = {r[2] for r in rows(screen)}
            # every close reason live trading has (END_OF_DATA only ends a replay)
            # (LATE_FILL, a late opposite fill netting a position after a restart, is left out of
            # the scene: its row is like any other reason's, and the scene keeps its figures)
            assert shown == {r.value for r in CloseReason} - {"UNKNOWN", "END_OF_DATA", "LATE_FILL"}
            t = screen.table
            first = t.keys()[0]
            assert t.get_cell(first, "closed").plain == "01-01 01:50:00"
            assert t.get_cell(first, "intent").plain == trades[0].intent_id
            assert t.get_cell(first, "held").plain == "44:55"
            assert "all 40 trades" in str(screen.query_one("#journal-title").content)
            await pilot.press("escape")
            assert not isinstance(app.screen, JournalScreen)
    finally:
        rig.store.close()


async def test_filters_by_symbol_reason_and_day(history_rig):
    app = app_for(history_rig)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_journal(pilot)
        # with the keyboard: f to the symbol filter, Enter opens it, down to BTCUSDT, Enter
        await pilot.press("f", "enter", "down", "enter")
        await settle(pilot)
        assert screen.filter_value("symbol") == "BTCUSDT"
        assert {r[0] for r in rows(screen)} == {"BTCUSDT"} and len(rows(screen)) == 8
        await pilot.press("tab", "enter", "down", "down", "down", "down", "down", "enter")  # reason: TAKE_PROFIT
        await settle(pilot)
        assert screen.filter_value("reason") == "TAKE_PROFIT"
        assert rows(screen) == [("BTCUSDT", "short", "TAKE_PROFIT", "+8.00"), ("BTCUSDT", "long", "TAKE_PROFIT", "+8.00")]
        assert "2 of 40 trades (BTCUSDT, TAKE_PROFIT)" in str(screen.query_one("#journal-title").content)
        screen.set_filter("symbol", "all")
        screen.set_filter("reason", "all")
        screen.set_filter("day", "2026-01-01")
        await settle(pilot)
        assert len(rows(screen)) == 5  # the trades closed today
        await pilot.press("x")
        await settle(pilot)
        assert len(rows(screen)) == 40


async def test_enter_opens_the_decisions_that_opened_and_closed_the_trade(history_rig):
    app = app_for(history_rig)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_journal(pilot)
        screen.set_filter("reason", "AI_CLOSE")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        detail = app.screen
        assert isinstance(detail, DecisionScreen) and detail.trade is not None
        t = detail.trade
        assert t.reason is CloseReason.AI_CLOSE
        assert detail.record is not None and detail.record.decision.decision_id == t.decision_id
        assert detail.closing is not None and detail.closing.decision.decision_id == t.close_decision_id
        text = "\n".join(f"{a}\n{b}" for a, b in detail.sections())
        assert "1m/5m/15m trends aligned" in text  # the opening decision's rationale
        assert "the 1m and 5m trends turned against the position" in text  # the closing one's
        assert f"intent   {t.intent_id}" in text
        await pilot.press("escape")
        assert app.screen is screen


async def test_e_exports_what_is_shown_to_csv_in_the_state_directory(history_rig):
    app = app_for(history_rig)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_journal(pilot)
        screen.set_filter("symbol", "ETHUSDT")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        path = screen.exported
        assert path is not None and path.parent == history_rig.store.state_dir
        assert path.name == "journal-20260101-020000-ETHUSDT.csv"
        assert any(str(path) in n.message for n in app._notifications)  # it says where
        with path.open() as f:
            table = list(csv.reader(f))
        assert table[0] == CSV_FIELDS
        eth = sorted((t for t, _ in history_trades(history_rig.clock.now()) if t.symbol == "ETHUSDT"),
                     key=lambda t: t.closed_at)
        assert len(table) == 1 + len(eth) == 9
        row = dict(zip(table[0], table[1]))
        assert row["symbol"] == "ETHUSDT" and row["reason"] == eth[0].reason.value
        assert float(row["pnl"]) == eth[0].pnl and row["intent_id"] == eth[0].intent_id
        assert path.stat().st_mode & 0o777 == 0o600


async def test_a_trade_closed_while_the_journal_is_open_comes_on_top(rig):
    app = app_for(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await pilot.press("j")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, JournalScreen) and rows(screen) == []
        rig.decider.push(decision("SOLUSDT"))
        await rig.engine.run_decision_cycle()
        await rig.engine.approve(next(iter(rig.engine.pending)))
        await rig.engine.force_close("SOLUSDT")
        await settle(pilot)
        assert [r[:3] for r in rows(screen)] == [("SOLUSDT", "long", "FORCE_CLOSE")]


async def test_a_second_look_rereads_only_the_files_that_changed(history_rig):
    rig = history_rig
    app = app_for(rig)
    async with app.run_test(size=WIDE) as pilot:
        await open_journal(pilot)
        first = app.journal.files_read
        assert first > 30  # every hour file with a trade or a decision
        await pilot.press("escape", "s")
        await settle(pilot)
        assert app.journal.files_read == first  # nothing changed: nothing read again
        await pilot.press("escape")
        rig.decider.push(decision("SOLUSDT"))
        await rig.engine.run_decision_cycle()
        await rig.engine.approve(next(iter(rig.engine.pending)))
        await rig.engine.force_close("SOLUSDT")
        await pilot.press("j")
        await settle(pilot)
        assert app.journal.files_read == first + 1  # this hour's file, with the new trade
        assert len(app.screen.table.keys()) == 41


async def test_intent_ids_show_whole_from_the_first_frame():
    """The Intent column has the ids' width before DataTable's idle pass measures the rows: a
    frame taken right after the rows were added showed "o-0000"."""
    from textual.app import App
    from textual.widgets.data_table import ColumnKey

    from app.console import find_styles
    from engine.executor import intent_id_for
    from engine.models import Trade
    from widgets.journal import JournalTable

    class One(App):
        CSS_PATH = str(find_styles())

        def compose(self):
            yield JournalTable()

    async with One().run_test(size=(160, 24)) as pilot:
        table = pilot.app.query_one(JournalTable)
        intent = intent_id_for("d-" + "f" * 32)
        table.add(Trade(symbol="BTCUSDT", side="long", qty=0.01, entry_price=100_000, exit_price=101_000, opened_at=0,
                        closed_at=600, pnl=10, roi_pct=3, duration_sec=600, reason=CloseReason.TAKE_PROFIT,
                        intent_id=intent))
        column = table.columns[ColumnKey("intent")]
        assert column.get_render_width(table) - 2 * table.cell_padding >= len(intent) == 34
