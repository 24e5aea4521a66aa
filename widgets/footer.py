"""The footer: Textual's, with its keys in the first frame and composed once per burst of
binding changes.

Textual's Footer composes no keys until the bindings first change, and then recomposes
(removes and mounts every key, about 20 ms here) once per change, each queued to run
after the next refresh, when the screen is idle. At start the focus, the tabs and the
panels change the bindings several times, and the footer was composed five times in a
row; and the screen is not idle until the engine's picture has been painted, so the keys
were the last thing on screen, 200 ms after the first frame.

Here the keys are composed with the footer (the bindings active then: the app's), and a
recomposition is skipped when no change came since the last one ran (it reads the
bindings as they are when it runs, so those queued behind it have nothing new to show).
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # Footer's compose yields no keys until this is set (by the first bindings change).
        # Relies on the pinned Textual's Footer; tests/test_console_start.py would catch a change.
        self.set_reactive(Footer._bindings_ready, True)
        self._asked = 0  # binding changes seen
        self._shown = 0  # binding changes the keys on screen reflect

    def bindings_changed(self, screen: Screen) -> None:
        self._asked += 1
        super().bindings_changed(screen)  # queues a recomposition after the next refresh

    async def recompose(self) -> None:
        if self._shown == self._asked:
            return  # queued before the last one ran: nothing new to show
        self._shown = self._asked
        await super().recompose()
