"""The confirmation a trader needs at once (force close, close all) is composed and styled
before the key, off screen, and each question only changes its text."""

from __future__ import annotations

import pytest
from textual.color import Color
from textual.css.stylesheet import Stylesheet

from app.console import ScalpDeskApp
from app.dialogs import ConfirmScreen
from engine.models import Action, CloseReason
from tests.painted import frames
from tests.test_console import WIDE, open_position
from tests.test_console_scenes import make_app, rig, settle, started  # noqa: F401 (fixtures)
from tests.test_console_start import frames_and_attach


def count_compose(monkeypatch) -> list[ConfirmScreen]:
    composed: list[ConfirmScreen] = []
    real = ConfirmScreen.compose

    def compose(self):
        composed.append(self)
        return real(self)

    monkeypatch.setattr(ConfirmScreen, "compose", compose)
    return composed


async def desk_with_two_positions(pilot, rig) -> None:
    await started(pilot)
    open_position(rig, "BTCUSDT")
    open_position(rig, "ETHUSDT", action=Action.OPEN_SHORT)
    await rig.engine.run_monitor()
    await settle(pilot)
    pilot.app.positions.table.focus()


async def test_force_close_opens_a_dialog_composed_before_the_key(rig, monkeypatch):
    """Without it, c composed, mounted and styled a new screen (about 9 ms of the 25 here)."""
    composed = count_compose(monkeypatch)
    frames, _ = frames_and_attach(monkeypatch)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await desk_with_two_positions(pilot, rig)
        kept = app._confirm
        assert composed == [kept] and kept.is_running  # composed once the desk was on screen
        sent = len(frames)
        await pilot.press("c")  # BTCUSDT, the first row
        assert app.screen is kept and composed == [kept]
        assert "Force close BTCUSDT?" in "".join(frames[sent:])  # its text is what was painted
        await pilot.press("n")
        await pilot.press("down", "c")  # ETHUSDT: the same dialog, the new question on screen
        await pilot.pause()
        assert app.screen is kept and composed == [kept]
        painted = "".join(frames[sent:])
        assert "Force close ETHUSDT?" in painted and "SHORT" in painted
        assert "ETHUSDT" in kept.lines[0] and "BTCUSDT" not in "".join(kept.lines)
        await pilot.press("y")  # the answer goes to this question: ETHUSDT closes, BTCUSDT stays
        await settle(pilot)
        assert {p.symbol for p in rig.venue.positions()} == {"BTCUSDT"}
        assert [(t.symbol, t.reason) for t in rig.store.trades()] == [("ETHUSDT", CloseReason.FORCE_CLOSE)]
        assert app._confirm is kept and not kept.is_active  # kept for the next question


async def test_the_kept_dialog_is_sent_whole_in_its_first_frame(rig, monkeypatch):
    """Shown again, its layout drew the changed texts alone first, over the desk still on
    the terminal, and the whole dialog came in a second frame."""
    sent = frames(monkeypatch, ScalpDeskApp)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await desk_with_two_positions(pilot, rig)
        for key in ("c", "n", "down", "c"):
            sent.clear()
            await pilot.press(key)
            await pilot.pause()
        dialog_frames = [(f.kind, f.text) for f in sent if f.screen == "ConfirmScreen"]
        kind, text = dialog_frames[0]
        assert kind == "LayoutUpdate" and "Force close ETHUSDT?" in text  # the whole screen, at once


async def test_the_kept_dialog_is_not_restyled_when_it_opens(rig, monkeypatch):
    """Textual restyles every node of a screen when it is resumed; the kept dialog was
    styled at mount, and its question does not change its styles."""
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await desk_with_two_positions(pilot, rig)
        styled: list[object] = []
        real = Stylesheet.apply

        def apply(self, node, *args, **kwargs):
            styled.append(node)
            return real(self, node, *args, **kwargs)

        monkeypatch.setattr(Stylesheet, "apply", apply)
        dialog_nodes = set(app._confirm.walk_children(with_self=True))
        for _ in range(2):
            await pilot.press("c")
            assert app.screen is app._confirm
            await pilot.press("n")
            assert not [n for n in styled if n in dialog_nodes]  # the first time too
        await pilot.resize_terminal(100, 30)  # while it is away
        await pilot.pause()
        await pilot.press("c")
        assert app._confirm.has_class("-narrow") and not app._confirm.has_class("-wide")
        assert app._confirm in styled  # restyled for its new size


async def test_a_question_without_danger_is_styled_as_such(rig):
    """Its class is what changes the styles: set by ask(), it restyles the dialog."""
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await desk_with_two_positions(pilot, rig)
        answers: list[bool | None] = []
        kept = app._confirm
        border = lambda: kept.query_one("#dialog").styles.border_top[1]  # noqa: E731
        app.confirm("Plain?", ["a question"], answers.append)
        await pilot.pause()
        plain = border()
        await pilot.press("n")
        await pilot.press("c")
        danger = border()
        assert app.screen is kept and kept.has_class("-danger") and danger != plain
        assert danger == Color.parse(app.theme_variables["error"])  # styles.tcss: thick $error
        await pilot.press("n")
        app.confirm("Plain again?", ["a question"], answers.append)
        await pilot.pause()
        assert border() == plain and not kept.has_class("-danger")
        await pilot.press("y")
        assert answers == [False, True]


async def test_a_question_asked_while_the_kept_dialog_is_open_gets_a_dialog_of_its_own(rig):
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await desk_with_two_positions(pilot, rig)
        first: list[bool | None] = []
        second: list[bool | None] = []
        app.confirm("First?", ["one"], first.append)
        await pilot.pause()
        app.confirm("Second?", ["two"], second.append)
        await pilot.pause()
        assert app.screen is not app._confirm and app.screen.title_text == "Second?"
        assert app._confirm.title_text == "First?"  # the open question was not overwritten
        await pilot.press("y")
        await pilot.press("n")
        assert second == [True] and first == [False]


async def test_the_dialog_is_kept_once_however_often_the_engine_is_attached(rig):
    """Each attach (the engine back after a restart) ends with a replay that warms the
    screens again; installing a second "confirm" was an error that stopped the console."""
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await desk_with_two_positions(pilot, rig)
        kept = app._confirm
        app.warm_screens()
        await pilot.press("c")
        assert app.screen is kept and app._confirm is kept


async def test_a_confirmation_with_a_typed_word_is_never_kept():
    dialog = ConfirmScreen("Switch to AUTO?", ["live"], require="AUTO", danger=True)
    with pytest.raises(ValueError, match="typed word"):
        dialog.ask("Force close BTCUSDT?", ["x"])
    assert dialog.title_text == "Switch to AUTO?"  # nothing changed
