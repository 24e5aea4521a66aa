"""What a screen update sends to the terminal: the (line, x1, x2) spans of App._display."""

from __future__ import annotations

from collections.abc import Callable

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
