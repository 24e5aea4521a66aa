"""What a screen update sends to the terminal: the (line, x1, x2) spans of App._display."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from textual.pilot import Pilot


async def sent_spans(pilot: Pilot, monkeypatch, change: Callable[[], object]) -> list[tuple[int, int, int]]:
    """Run `change()`, let the app repaint, and return the spans the repaint sent."""
    app = pilot.app
    sent: list[tuple[int, int, int]] = []
    real = type(app)._display

    def display(self, screen, update):
        sent.extend(getattr(update, "spans", []))
        return real(self, screen, update)

    monkeypatch.setattr(type(app), "_display", display)
    try:
        change()
        await pilot.pause()
    finally:
        monkeypatch.setattr(type(app), "_display", real)
    return sent


def lines_of(spans: list[tuple[int, int, int]]) -> set[int]:
    return {y for y, _, _ in spans}


class Frame(NamedTuple):
    """One update written to the terminal."""

    screen: str  # the name of the screen's class it was written for
    kind: str  # LayoutUpdate (the whole screen) or ChopsUpdate (changed spans)
    text: str  # what it writes, escape codes included


def frames(monkeypatch, app_class) -> list[Frame]:
    """Spy, from now until the test ends, on every update `app_class` writes to the terminal."""
    sent: list[Frame] = []
    real = app_class._display

    def display(self, screen, update):
        if update is not None:
            sent.append(Frame(type(screen).__name__, type(update).__name__, update.render_segments(self.console)))
        return real(self, screen, update)

    monkeypatch.setattr(app_class, "_display", display)
    return sent
