"""Snapshots of every screen of the console at 80x24 and 160x48 (pytest-textual-snapshot).

Deterministic: a ManualClock, the seeded simulated market, no scheduler, ids from a
counter. After a change to the look, regenerate with --snapshot-update and look at
each SVG in tests/__snapshots__/test_snapshots/ before committing it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from textual.widgets import Input

from tests.test_console_scenes import busy_desk, live_rig, make_app, rig, scene_rig, settle, started  # noqa: F401 (fixtures)

NARROW = (80, 24)
WIDE = (160, 48)


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch):
    """Decision and intent ids from a counter, so the log's [intent:…] lines never change."""
    count = iter(range(1, 1_000_000))

    class Ids:
        @staticmethod
        def uuid4() -> uuid.UUID:
            return uuid.UUID(int=next(count))

    monkeypatch.setattr("engine.models.uuid", Ids)



def desk(rig, *keys: str, then=None):
    """run_before: the busy desk, then keys, then anything else."""

    async def run_before(pilot) -> None:
        await busy_desk(pilot, rig)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        if then is not None:
            await then(pilot)
        pilot.app.clear_notifications()
        await settle(pilot)

    return run_before


def test_main_screen_80x24(snap_compare, rig):
    """Small terminal: the decisions tab (two pending, history), status bar, footer."""
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig))


def test_main_screen_160x48(snap_compare, rig):
    """Wide terminal: every panel at once; SOL in its last minute, a cooldown, the log."""
    assert snap_compare(make_app(rig), terminal_size=WIDE, run_before=desk(rig))


def test_positions_tab_80x24(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, "2"))


def test_cooldowns_tab_80x24(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, "3"))


def test_log_tab_80x24(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, "4"))


def test_empty_desk_80x24(snap_compare, rig):
    """First start: nothing pending, open or cooling down; the panels say so."""

    async def run_before(pilot) -> None:
        await started(pilot)
        pilot.app.clear_notifications()
        await settle(pilot)

    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=run_before)


def test_force_close_confirmation_80x24(snap_compare, rig):
    """c on a position: symbol, side, size and PnL before anything is sent."""
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, "2", "c"))


def test_close_all_confirmation_160x48(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=WIDE, run_before=desk(rig, "X"))


def test_quit_confirmation_80x24(snap_compare, rig):
    """q: the console quits, the engine keeps running; S would stop it too (a position stays open)."""
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, "q"))


def test_help_80x24(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, "question_mark"))


def test_help_160x48(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=WIDE, run_before=desk(rig, "question_mark"))


def test_decision_detail_160x48(snap_compare, rig):
    """Enter on a pending decision: outcome, rationale, guardrails, clamps, order, inputs."""
    assert snap_compare(make_app(rig), terminal_size=WIDE, run_before=desk(rig, "enter"))


def test_decision_detail_80x24(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, "enter"))


async def _no_blink(pilot) -> None:
    pilot.app.screen.query_one(Input).cursor_blink = False


def test_auto_on_live_confirmation_80x24(snap_compare, live_rig):
    """a on a LIVE venue: the word AUTO must be typed."""
    rig = live_rig
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, "a", then=_no_blink))


def test_auto_on_live_160x48(snap_compare, live_rig):
    """AUTO on LIVE: the mode in the warning colour, the venue in red."""
    rig = live_rig
    assert snap_compare(make_app(rig), terminal_size=WIDE, run_before=desk(rig, "a", "A", "U", "T", "O", "enter"))


def test_degraded_engine_80x24(snap_compare, rig):
    async def degrade(pilot) -> None:
        rig.engine._degrade("venue refused the keys: 10003 API key is invalid")
        await settle(pilot)

    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, then=degrade))


def test_degraded_engine_160x48(snap_compare, rig):
    async def degrade(pilot) -> None:
        rig.engine._degrade("venue refused the keys: 10003 API key is invalid")
        await settle(pilot)

    assert snap_compare(make_app(rig), terminal_size=WIDE, run_before=desk(rig, then=degrade))


async def _engine_gone(pilot) -> None:
    """The engine stops under the console: its last picture stays, greyed, and it says why."""
    await pilot.app.host.stop()
    for _ in range(200):
        if pilot.app.status.detached:
            break
        await asyncio.sleep(0.01)
    await settle(pilot)


def test_engine_gone_80x24(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=NARROW, run_before=desk(rig, then=_engine_gone))


def test_engine_gone_160x48(snap_compare, rig):
    assert snap_compare(make_app(rig), terminal_size=WIDE, run_before=desk(rig, then=_engine_gone))
