"""Snapshots of the trader's view (pytest-textual-snapshot): the market watch, the journal
with a trade of every close reason, a trade's decisions, the statistics and the equity
curve, at 80x24 and 160x48. Deterministic as tests/test_snapshots.py: a ManualClock, the
seeded simulated market, ids from a counter, a journal written by hand.
"""

from __future__ import annotations

import pytest

from tests.test_console_scenes import (  # noqa: F401 (fixtures)
    busy_desk,
    history_desk,
    history_rig,
    hold_cycle,
    make_app,
    rig,
    settle,
)
from tests.test_snapshots import NARROW, WIDE, fixed_ids  # noqa: F401 (fixture)


def keys_after(scene, rig, *keys: str):
    async def run_before(pilot) -> None:
        await scene(pilot, rig)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        pilot.app.clear_notifications()
        await settle(pilot)

    return run_before


async def desk_with_holds(pilot, rig) -> None:
    """The busy desk, then a cycle in which the decider holds on BTC and SOL (its positions)."""
    await busy_desk(pilot, rig)
    await hold_cycle(pilot, rig)


def test_market_watch_80x24(snap_compare, rig):
    """Key 5: one row per symbol; the cursor row's decision and blocks in full underneath."""
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=keys_after(desk_with_holds, rig, "5"))


def test_market_watch_160x48(snap_compare, rig):
    """Every panel at once, the market watch on top: positions, a cooldown, pending decisions, HOLDs."""
    assert snap_compare(make_app(rig), terminal_size=WIDE, run_before=keys_after(desk_with_holds, rig, "5"))


def test_journal_80x24(snap_compare, history_rig):
    assert snap_compare(make_app(history_rig), terminal_size=NARROW,
                        run_before=keys_after(history_desk, history_rig, "j"))


def test_journal_160x48(snap_compare, history_rig):
    """Every close reason among the newest trades; PnL, ROI, fees, time held, intent ids."""
    assert snap_compare(make_app(history_rig), terminal_size=WIDE,
                        run_before=keys_after(history_desk, history_rig, "j"))


def test_journal_trade_decisions_160x48(snap_compare, history_rig):
    """Enter on an AI_CLOSE trade: the trade, the decision that opened it, the one that closed it."""
    assert snap_compare(make_app(history_rig), terminal_size=WIDE,
                        run_before=keys_after(history_desk, history_rig, "j", *["down"] * 6, "enter"))


def test_statistics_80x24(snap_compare, history_rig):
    """30 days: the expectations table with met / not met, then the figures (it scrolls)."""
    assert snap_compare(make_app(history_rig), terminal_size=NARROW,
                        run_before=keys_after(history_desk, history_rig, "s", "3"))


def test_statistics_160x48(snap_compare, history_rig):
    """30 days: expectations, figures, by close reason, by symbol, the equity curve."""
    assert snap_compare(make_app(history_rig), terminal_size=WIDE,
                        run_before=keys_after(history_desk, history_rig, "s", "3"))


def test_equity_curve_80x24(snap_compare, history_rig):
    """All trades, g: the equity curve with its drawdown shaded."""
    assert snap_compare(make_app(history_rig), terminal_size=NARROW,
                        run_before=keys_after(history_desk, history_rig, "s", "4", "g"))


def test_equity_curve_160x48(snap_compare, history_rig):
    assert snap_compare(make_app(history_rig), terminal_size=WIDE,
                        run_before=keys_after(history_desk, history_rig, "s", "4", "g"))


def test_journal_trade_closing_decision_160x48(snap_compare, history_rig):
    """The same trade's detail scrolled to its end: the decision that closed it."""
    assert snap_compare(make_app(history_rig), terminal_size=WIDE,
                        run_before=keys_after(history_desk, history_rig, "j", *["down"] * 6, "enter", "end"))
