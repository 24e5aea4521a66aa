"""The statistics (key s): engine.report's numbers for today, 7 days, 30 days and all, the
same as `scalpdesk report`; the equity curve with its drawdown shaded; `?` lists the keys."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

from app import report_cmd
from app.console import ScalpDeskApp
from app.dialogs import HelpScreen
from app.screens import StatisticsScreen
from engine.report import DRAWDOWN_MARK
from tests.test_console_scenes import history_desk, history_rig, make_app, rig, settle, started  # noqa: F401 (fixtures)

WIDE = (160, 48)
NARROW = (80, 24)


def report_json(rig, *args: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        code = report_cmd.run(["--json", "--state-dir", str(rig.store.state_dir), *args], now=rig.clock.now)
    assert code == 0
    return json.loads(out.getvalue())


async def open_stats(pilot, rig) -> StatisticsScreen:
    await history_desk(pilot, rig)
    await pilot.press("s")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, StatisticsScreen)
    return screen


async def test_every_period_has_the_numbers_of_scalpdesk_report(history_rig):
    rig = history_rig
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_stats(pilot, rig)
        assert screen.period == "today"
        cli = {"today": report_json(rig, "--since", "2026-01-01"), "7d": report_json(rig, "--days", "7"),
               "30d": report_json(rig, "--days", "30"), "all": report_json(rig)}
        for period, expected in cli.items():
            assert json.loads(screen.reports[period].model_dump_json()) == expected, period
        assert [screen.reports[p].trades for p in ("today", "7d", "30d", "all")] == [5, 13, 40, 40]


async def test_keys_switch_the_period_and_the_view_shows_met_and_not_met(history_rig):
    app = make_app(history_rig)
    async with app.run_test(size=WIDE) as pilot:
        screen = await open_stats(pilot, history_rig)
        await pilot.press("3")
        await settle(pilot)
        assert screen.period == "30d"
        view = screen.view
        assert "the figures of `scalpdesk report --days 30`" in str(view.heading.content)
        r = screen.reports["30d"]
        assert [e.met for e in r.expectations] == [False, True, False, False, True]
        exp = view.expectations.content
        cells = [list(c.cells) for c in exp.columns]
        assert cells[0][0] == "win rate" and cells[2][0] == "45.00 %" and cells[3][0].plain == "NOT met"
        assert cells[3][1].plain == "met"
        reasons = view.reasons.content
        assert str(reasons.title).startswith("By close reason (time exits 6 of 40")
        assert set(reasons.columns[0].cells) == set(r.by_reason)
        await pilot.press("1")
        await settle(pilot)
        assert screen.period == "today" and screen.view.chart.report is screen.reports["today"]
        await pilot.press("escape")
        assert not isinstance(app.screen, StatisticsScreen)


async def test_the_equity_curve_shades_the_drawdown(history_rig):
    app = make_app(history_rig)
    async with app.run_test(size=NARROW) as pilot:
        screen = await open_stats(pilot, history_rig)
        await pilot.press("4", "g")
        await settle(pilot)
        chart = screen.view.chart
        text = chart.render().plain
        assert DRAWDOWN_MARK in text and "drawdown shaded" in text
        assert chart.region.height > 0 and screen.query_one("#stats-body").scroll_y > 0  # g scrolled to it


async def test_an_empty_journal_says_so(rig):
    app = make_app(rig)
    async with app.run_test(size=NARROW) as pilot:
        await started(pilot)
        await pilot.press("s")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, StatisticsScreen)
        assert screen.reports["all"].trades == 0
        assert "no equity curve" in screen.view.chart.render().plain


async def test_help_lists_the_new_keys(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await pilot.press("question_mark")
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        sections = dict(help_screen.sections)
        anywhere = dict(sections["Anywhere"])
        assert anywhere["j"].startswith("Every closed trade") and anywhere["s"].startswith("Statistics")
        assert anywhere["5"] == "Show the market watch"
        journal = dict(sections["Journal (j)"])
        assert {"e", "f", "x", "Enter", "Esc"} <= set(journal)
        stats = dict(sections["Statistics (s)"])
        assert {"1", "2", "3", "4", "g"} <= set(stats)
        assert "Market watch" in sections
