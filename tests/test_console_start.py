"""The console's start: what its first frame holds, and what is done before it."""

from __future__ import annotations

from textual.css.stylesheet import Stylesheet
from textual.geometry import Size
from textual.widgets import Footer

import app.console as console
from app.console import ScalpDeskApp, breakpoint_classes
from tests.test_console_scenes import make_app, rig, started  # noqa: F401 (fixtures)

WIDE = (160, 48)


def frames_and_attach(monkeypatch) -> tuple[list[str], list[int]]:
    """Spy, from before the app starts, on every update it sends to the terminal (as text)
    and on when the attach begins (the number of updates sent by then)."""
    frames: list[str] = []
    attached_after: list[int] = []
    real_display, real_attach = ScalpDeskApp._display, ScalpDeskApp._attach

    def display(self, screen, update):
        if update is not None:
            frames.append(update.render_segments(self.console))
        return real_display(self, screen, update)

    async def attach(self):
        attached_after.append(len(frames))
        return await real_attach(self)

    monkeypatch.setattr(ScalpDeskApp, "_display", display)
    monkeypatch.setattr(ScalpDeskApp, "_attach", attach)
    return frames, attached_after


async def test_the_first_frame_has_the_footers_keys(rig, monkeypatch):
    """Textual's Footer composes its keys after a refresh, when the screen is idle: the
    console's first frames had an empty footer, and the keys came last (after the engine's
    picture was painted). A full frame has them."""
    frames, _ = frames_and_attach(monkeypatch)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        first = next(f for f in frames if "APPROVE" in f)  # the first frame with the status bar
        assert "Quit" in first and "Journal" in first


async def test_the_engine_is_attached_after_the_first_frame(rig, monkeypatch):
    """The engine's picture (the replay at attach) fills a frame already on screen; handled
    before the first refresh, it held the first frame back."""
    frames, attached_after = frames_and_attach(monkeypatch)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        assert attached_after and attached_after[0] >= 1
        assert "APPROVE" in frames[0] and "Quit" in frames[0]  # that frame was the console, keys included
        assert app.link.attached


def test_breakpoint_classes_are_those_the_screen_would_set():
    h, v = ScalpDeskApp.HORIZONTAL_BREAKPOINTS, ScalpDeskApp.VERTICAL_BREAKPOINTS
    assert breakpoint_classes(Size(160, 48), h, v) == {"-narrow": False, "-wide": True, "-short": False, "-tall": True}
    assert breakpoint_classes(Size(119, 33), h, v) == {"-narrow": True, "-wide": False, "-short": True, "-tall": False}
    assert breakpoint_classes(Size(120, 34), h, v) == {"-narrow": False, "-wide": True, "-short": False, "-tall": True}


async def test_the_panels_are_styled_for_the_screens_size_from_the_start(rig, monkeypatch):
    """Textual gives a screen its breakpoint classes at its first Resize, after every panel
    was styled and laid out once: every node was styled again and the screen drawn twice.
    The console's screen has them before its panels are mounted."""
    classes_at_first_resize: list[set[str]] = []
    real = ScalpDeskApp._on_resize

    async def on_resize(self, event):  # the App's handler runs before the screen's
        if not classes_at_first_resize:
            classes_at_first_resize.append(set(self.screen.classes))
        return await real(self, event)

    monkeypatch.setattr(ScalpDeskApp, "_on_resize", on_resize)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        assert classes_at_first_resize and {"-wide", "-tall"} <= classes_at_first_resize[0]
        assert app.screen.has_class("-wide", "-tall") and not app.screen.has_class("-narrow")
        assert app.market.region.height > 0 and app.log_panel.region.height > 0  # every panel shows
    async with make_app(rig).run_test(size=(100, 30)) as pilot:  # a small terminal: one panel at a time
        await started(pilot)
        assert pilot.app.screen.has_class("-narrow", "-short")
        assert not pilot.app.screen.has_class("-wide") and not pilot.app.screen.has_class("-tall")


async def test_the_panels_are_styled_once_before_the_first_frame(rig, monkeypatch):
    """Textual restyled every node when the screen was first resumed (right after mounting
    had styled them), and each panel again when its count at mount set its empty class."""
    styled: dict[str, int] = {}
    frames, _ = frames_and_attach(monkeypatch)
    real_apply = Stylesheet.apply

    def apply(self, node, **kw):
        if not frames:
            styled[node.id or ""] = styled.get(node.id or "", 0) + 1
        return real_apply(self, node, **kw)

    monkeypatch.setattr(Stylesheet, "apply", apply)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        once = ("market", "market-table", "cooldowns", "cooldowns-table", "positions", "positions-table", "log", "status")
        assert {name: styled.get(name) for name in once} == {name: 1 for name in once}
        # (the decisions panel is styled again when its table takes the focus: :focus-within)
        assert app.market.has_class("-empty") and app.positions.has_class("-empty")
        assert app.decisions.has_class("-none-pending") and not app.decisions.has_class("-pending")


async def test_the_footer_composes_its_keys_once_for_a_burst_of_changes(rig, monkeypatch):
    """Textual's Footer recomposed (removed and mounted every key) once per change of the
    bindings: five times in a row at start. Those queued behind one have nothing new."""
    composed: list[int] = []
    real = Footer.recompose

    async def recompose(self):
        composed.append(len(self.screen.active_bindings))
        return await real(self)

    monkeypatch.setattr(Footer, "recompose", recompose)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        footer = app.query_one(Footer)
        before = len(composed)
        for _ in range(5):
            app.screen.refresh_bindings()
        await pilot.pause()
        assert len(composed) == before + 1
        # a real change later is composed again, and shows
        keys = {k.key for k in footer.query("FooterKey")}
        assert "y" in keys  # the pending table has the focus: approve and reject show
        app.positions.table.focus()
        await pilot.pause()
        await pilot.pause()
        assert len(composed) > before + 1
        keys = {k.key for k in footer.query("FooterKey")}
        assert "c" in keys and "y" not in keys  # the positions table's force close, not approve


async def test_the_journal_screens_are_imported_once_the_desk_is_on_screen(rig, monkeypatch):
    """The journal and the statistics (app.screens) are not imported before the first frame
    (tests/test_console_imports.py), but once the engine's picture is painted, so the first
    j or s does not wait for the import either."""
    frames, _ = frames_and_attach(monkeypatch)
    imported_after: list[int] = []
    real = console.screens

    def screens():
        imported_after.append(len(frames))
        return real()

    monkeypatch.setattr(console, "screens", screens)
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await started(pilot)
        await pilot.pause()
        assert imported_after and imported_after[0] >= 1
        await pilot.press("j")
        await pilot.pause()
        assert type(app.screen).__name__ == "JournalScreen"


async def test_the_engines_picture_is_painted_as_soon_as_it_is_in(rig, monkeypatch):
    """The log's lines (and the prices) waited for the app's next tick, up to half a second
    after the engine's picture was in: the desk is complete when the replay is."""
    monkeypatch.setattr(console, "TICK_SEC", 3600.0)  # no tick after the one at mount
    app = make_app(rig)
    async with app.run_test(size=WIDE) as pilot:
        await app.started.wait()
        await pilot.pause()
        written = [strip.text for strip in app.log_panel.lines]  # on screen, not only kept
        assert any("scalpdesk engine" in line for line in written)
        assert app.status.clock.endswith("UTC")
