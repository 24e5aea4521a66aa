"""The desk under a screen without transparency (help, the journal, the statistics, every
confirmation) sends nothing to the terminal: none of it is visible. Textual counted it as
visible and had the screen on top render and write its changes, then the whole screen,
at every update (27–35 KiB/s over SSH while the journal was open). Shown again, the desk
is whole and current."""

from __future__ import annotations

from app.console import ScalpDeskApp
from app.messages import EngineEvent
from engine.events import LogEvent, PositionsUpdated
from engine.models import PositionMeta, VenuePosition
from tests.test_console import WIDE, cell
from tests.test_console_scenes import make_app, rig, started  # noqa: F401 (fixtures)
from tests.painted import frames


def changes(app: ScalpDeskApp, rig, mark: float, line: str) -> None:
    """A position with a new mark and a log line, painted by the desk's tick."""
    meta = PositionMeta(symbol="BTCUSDT", side="long", opened_at=rig.clock.now(), time_in_trade_limit_sec=2400,
                        qty=0.01)
    pos = VenuePosition(symbol="BTCUSDT", side="long", size=0.01, entry_price=100_000, mark_price=mark, leverage=3,
                        unrealised_pnl=(mark - 100_000) * 0.01)
    app.on_engine_event(EngineEvent(PositionsUpdated(ts=rig.clock.now(), level="debug", positions=[pos], metas=[meta])))
    app.on_engine_event(EngineEvent(LogEvent(ts=rig.clock.now(), level="info", message=line, code="TEST")))
    app._tick()


async def test_a_covered_desk_sends_nothing_and_is_whole_and_current_when_shown_again(rig, monkeypatch):
    sent = frames(monkeypatch, ScalpDeskApp)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        desk = app.screen
        await pilot.press("question_mark")  # help covers the desk (styles.tcss: no transparency)
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen" and app.screen.styles.background.a == 1
        sent.clear()
        for i, mark in enumerate((100_400.0, 100_500.0)):
            changes(app, rig, mark, f"a line while covered {i}")
            await pilot.pause(0.6)  # the desk's update ran, and the app's own tick (its clock) too
        assert cell(app, app.positions.table, "BTCUSDT", "mark") == "100,500.0"  # the desk took them
        assert sent == []  # and wrote none of it: it is not visible
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is desk
        painted = "".join(f.text for f in sent if f.screen == "DeskScreen")
        assert "100,500.0" in painted and "a line while covered 1" in painted  # current, at once
        assert "Positions (1)" in painted and "Quit" in painted  # and whole: its title, its footer


async def test_a_desk_under_a_transparent_screen_still_shows_its_changes(rig, monkeypatch):
    """The quit question lets the desk show through, dimmed: its changes are written."""
    sent = frames(monkeypatch, ScalpDeskApp)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert type(app.screen).__name__ == "ChoiceScreen" and app.screen.styles.background.a < 1
        sent.clear()
        changes(app, rig, 100_700.0, "a line under the question")
        await pilot.pause(0.6)
        painted = "".join(f.text for f in sent if f.screen == "ChoiceScreen")
        assert "100,700.0" in painted and "a line under the question" in painted
