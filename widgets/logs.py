"""The log panel: every engine event an operator should read, one line each,
levels coloured, bounded in memory, newest at the bottom and kept in view."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import RichLog

from engine.events import BaseEvent, EngineState
from widgets import format as fmt

LEVEL_LABEL = {"debug": "DEBUG", "info": "INFO ", "warning": "WARN ", "error": "ERROR"}
MAX_LINES = 2000


def loggable(event: BaseEvent) -> bool:
    """Debug events (positions, account, HOLDs) and state snapshots are shown elsewhere."""
    return bool(event.message) and event.level != "debug" and not isinstance(event, EngineState)


class LogPanel(RichLog):
    """A bounded RichLog fed with engine events."""

    COMPONENT_CLASSES = {"log--time", "log--debug", "log--info", "log--warning", "log--error"}

    # Every write grows the log's scrollable height, and Widget.virtual_size asks for a
    # layout of the whole screen when it changes: until the log held MAX_LINES (200 s at
    # ten lines a second) each flush re-arranged and repainted every panel (a quarter of
    # the console's CPU in bench_console). The log's own box does not change with its
    # content, so here a new height only updates the scrollbar (what the layout's
    # _size_updated would do for a ScrollView; the scrollbar is always shown, styles.tcss).
    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False)

    def watch_virtual_size(self, size: Size) -> None:
        if self.is_mounted and self.size:
            self._scroll_update(size)

    def __init__(self, max_lines: int = MAX_LINES, **kwargs) -> None:
        super().__init__(max_lines=max_lines, wrap=True, auto_scroll=True, min_width=20, **kwargs)
        # The lines as Text, bounded like the log: they are wrapped again at a new width,
        # and lines written while the panel was never shown (a hidden tab) wait here
        # rather than in RichLog's unbounded queue of deferred writes.
        self.history: deque[tuple[Text, Text]] = deque(maxlen=max_lines)
        self._width = 0
        self._unwritten = 0  # lines in history not yet on screen (see flush)
        self._flushing = False

    def on_mount(self) -> None:
        self.border_title = "Log"

    def on_resize(self, event: events.Resize) -> None:
        width = self.scrollable_content_region.width
        if width and width != self._width:
            self._width = width
            self.clear()
            for head, body in self.history:
                self.write(self._wrapped(head, body), width=width)
            self._unwritten = 0

    def parts(self, event: BaseEvent) -> tuple[Text, Text]:
        """The line's head (time, level) and body (the message), styled by level."""
        level = event.level
        head = Text(end="")
        head.append(fmt.clock(event.ts) + " ", style=self.get_component_rich_style("log--time", partial=True))
        style = self.get_component_rich_style(f"log--{level}", partial=True)
        head.append(LEVEL_LABEL.get(level, level.upper()) + " ", style=style)
        body = Text(event.message, style=style if level in ("warning", "error") else "", end="")
        return head, body

    def _wrapped(self, head: Text, body: Text) -> Text:
        """Head, then the message wrapped under itself (a hanging indent)."""
        indent = head.cell_len
        lines = body.wrap(self.app.console, max(self._width - indent, 10))
        out = head.copy()
        for i, line in enumerate(lines):
            if i:
                out.append("\n" + " " * indent)
            out.append_text(line)
        return out

    def add(self, event: BaseEvent) -> None:
        """Keep the line; it is written by the next flush."""
        if not loggable(event):
            return
        self.history.append(self.parts(event))
        self._unwritten = min(self._unwritten + 1, len(self.history))

    def flush(self) -> None:
        """Write the lines added since the last flush, in one repaint. The app calls this on
        its timer tick: ten lines a second then scroll the log twice, not ten times.

        Scrolled to the end here and now: RichLog's own auto-scroll waits for the repaint
        after the write, which made each flush two repaints of the screen (the new lines
        out of view, then scrolled into it)."""
        if not self._unwritten or not self._width:
            return
        # One write of all of them (each already wrapped to the width): one render, one
        # new height, one trim of the bounded lines, where a write per line did each five times.
        lines = [self._wrapped(head, body) for head, body in list(self.history)[-self._unwritten:]]
        self._flushing = True
        try:
            self.write(Text("\n", end="").join(lines), width=self._width, scroll_end=False)
        finally:
            self._flushing = False
        self._unwritten = 0
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def refresh(self, *regions, repaint: bool = True, layout: bool = False, recompose: bool = False):
        # A full log drops its oldest lines at every write, and RichLog then repaints the
        # whole widget: its border and title too, two lines of the ten written at each
        # flush. The lines moved; the border did not.
        if self._flushing and not regions and not layout and not recompose:
            regions = (self.size.region,)
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    @property
    def plain_lines(self) -> list[str]:
        """The lines as plain text (tests; what an operator would copy)."""
        return [head.plain + body.plain for head, body in self.history]
