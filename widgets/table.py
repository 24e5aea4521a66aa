"""A DataTable whose rows are keyed and whose cells change in place.

A ticking countdown rewrites one cell a second; clearing and refilling the table
would move the cursor and repaint everything. Here a cell is written only when
its text or style changed, only that cell is repainted, and only its render is
dropped from DataTable's caches (DataTable's own way, a new update count, makes the
next repaint render every cell of every row in view again: a hundred countdowns
ticking cost all the table's cells each second). A removed row keeps the cursor on
the row it was on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rich.style import Style
from rich.text import Text
from textual import events
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey


STALE_MAX = 400  # changed cells past which the whole table's renders are dropped at once


class Stamp(Text):
    """A cell's text that also carries a number to sort rows by."""

    def __init__(self, text: str, ts: float, **kwargs) -> None:
        super().__init__(text, **kwargs)
        self.ts = ts


class KeyedTable(DataTable):
    """Rows keyed by a string; cells given as rich Text by column key."""

    # (column key, label, fixed width or None)
    COLUMNS: tuple[tuple[str, str, int | None], ...] = ()
    RIGHT: frozenset[str] | set[str] = frozenset()  # numeric columns, labels and cells right-aligned

    def __init__(self, **kwargs) -> None:
        self._cell_styles: dict[str, Style] = {}  # before DataTable's init: styles may be updated during it
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        # A coloured PnL or countdown keeps its colour on the cursor row.
        kwargs.setdefault("cursor_foreground_priority", "renderable")
        super().__init__(**kwargs)
        self._shown: dict[tuple[str, str], tuple[str, str]] = {}
        self._stale: set[tuple[RowKey, ColumnKey]] = set()  # cells changed since their render was cached
        self._view: tuple[int, int] | None = None  # rows in view [top, bottom); None: work it out again
        self.on_view: Callable[[], None] | None = None  # called when other rows may have come into view

    def on_mount(self) -> None:
        self._ensure_columns()

    def _ensure_columns(self) -> None:
        # A row can arrive before the table is mounted (events replayed at attach): its
        # columns must exist first, or its cells are never made.
        if self.columns:
            return
        for key, label, width in self.COLUMNS:
            self.add_column(Text(label, justify="right" if key in self.RIGHT else "left"), key=key, width=width)

    # --- styles --------------------------------------------------------------

    def cell_style(self, component: str) -> Style:
        """A component class's style for a cell's text (partial: colour and text style).

        Kept until the styles change (a theme, the CSS): Widget's own cache of these is
        emptied by every refresh, and every cell written refreshes the table, so a row's
        cells made after another row was written worked each style out again from the
        CSS (a tenth of the console's CPU with prices changing on every row)."""
        style = self._cell_styles.get(component)
        if style is None:
            style = self._cell_styles[component] = self.get_component_rich_style(component, partial=True)
        return style

    def notify_style_update(self) -> None:
        self._cell_styles.clear()
        super().notify_style_update()

    # --- reading -------------------------------------------------------------

    def has(self, key: str) -> bool:
        return RowKey(key) in self.rows

    def keys(self) -> list[str]:
        """Row keys in display order."""
        return [str(self.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value) for i in range(self.row_count)]

    @property
    def cursor_key(self) -> str | None:
        if not self.row_count or not self.columns:
            return None
        row = min(self.cursor_row, self.row_count - 1)
        return str(self.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value)

    # --- writing -------------------------------------------------------------

    def set_row(self, key: str, cells: Mapping[str, Text]) -> bool:
        """Add the row, or change the cells that differ. True if it was added."""
        if not self.has(key):
            self._ensure_columns()
            row = [cells.get(col, Text("")) for col, _, _ in self.COLUMNS]
            self.add_row(*row, key=key)
            for col, text in cells.items():
                self._shown[(key, col)] = _sig(text)
            return True
        changed = [col for col, text in cells.items() if self._write(key, col, text)]
        self._repaint(key, changed)
        return False

    def set_cell(self, key: str, col: str, text: Text) -> None:
        if self._write(key, col, text):
            self._repaint(key, [col])

    def _write(self, key: str, col: str, text: Text) -> bool:
        """Keep the cell's new text; True if it changed and its cell is to be repainted."""
        sig = _sig(text)
        if self._shown.get((key, col)) == sig:
            return False  # nothing changed: no repaint
        self._shown[(key, col)] = sig
        row_key, column_key = RowKey(key), ColumnKey(col)
        column = self.columns[column_key]
        if column.auto_width and text.cell_len > column.content_width:
            self.update_cell(key, col, text, update_width=True)  # the column grows: repaint it all
            return False
        # What update_cell does, but repainting only this cell, and only if it is in view:
        # a hundred countdowns ticking must not repaint the table every second (over SSH
        # every repaint is bytes). Relies on DataTable internals of the pinned Textual.
        self._data[row_key][column_key] = text
        self._stale.add((row_key, column_key))
        return True

    def _repaint(self, key: str, cols: list[str]) -> None:
        """Repaint a row's changed cells, if the row is in view: one region from the first
        to the last of them. Textual writes each dirty span of a line from the start of the
        segment it begins in, which in a table row is often the row's start: a region per
        cell wrote most of a row twice when its price and its changes moved together."""
        row = self._index_in_view(RowKey(key)) if cols else None
        if row is None:
            return
        regions = [self._get_cell_region(Coordinate(row, self._column_locations.get(ColumnKey(col)))) for col in cols]
        self._refresh_region(Region.from_union(regions))

    def in_view(self, key: str) -> bool:
        """True if the row is on screen (or just above it: the bound is generous)."""
        return self._index_in_view(RowKey(key)) is not None

    def _index_in_view(self, row_key: RowKey) -> int | None:
        row = self._row_locations.get(row_key)
        top, bottom = self._rows_in_view()
        return row if row is not None and top <= row < bottom else None

    def _view_moved(self) -> None:
        self._view = None
        if self.on_view is not None:
            self.on_view()

    def _rows_in_view(self) -> tuple[int, int]:
        # Kept between a scroll or a resize and the next: size and scroll_offset are worked
        # out from the styles at every read, a hundred cells a second.
        if self._view is None:
            top = self.scroll_offset.y - (self.header_height if self.show_header else 0)
            self._view = (top, top + self.size.height)
        return self._view

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._view_moved()

    def _on_resize(self, _: events.Resize) -> None:
        self._view_moved()  # (DataTable's own handler runs too: handlers are called along the MRO)

    def render_line(self, y: int) -> Strip:
        if self._stale:
            self._forget_stale()
        return super().render_line(y)

    def _forget_stale(self) -> None:
        """Drop the cached renders of the changed cells, of their rows' lines and of the
        assembled lines, keeping every other cell's render (keys as DataTable makes them)."""
        stale, self._stale = self._stale, set()
        if len(stale) > STALE_MAX:  # most of the table: DataTable's own way costs the same
            self._update_count += 1
            return
        rows = {row for row, _ in stale}
        indices = {self._row_locations.get(row) for row in rows}
        cells = self._cell_render_cache
        for k in [k for k in cells.keys() if (k[0], k[1]) in stale]:
            cells.discard(k)
        lines = self._row_render_cache
        for k in [k for k in lines.keys() if k[0] in rows]:
            lines.discard(k)
        renderables = self._row_renderable_cache
        for k in [k for k in renderables.keys() if k[1] in indices]:
            renderables.discard(k)
        self._line_cache.clear()

    def drop_row(self, key: str) -> None:
        """Remove a row; the cursor stays on the row it was on (unless that one goes)."""
        if not self.has(key):
            return
        current = self.cursor_key
        self.remove_row(key)
        for col, _, _ in self.COLUMNS:
            self._shown.pop((key, col), None)
        if current is not None and current != key and self.has(current):
            self.move_cursor(row=self.get_row_index(current), animate=False)
        self._view_moved()  # the rows under it moved up

    def sort_by_stamp(self, column: str, newest_first: bool = True, follow: bool = True) -> None:
        """Order rows by the Stamp in `column`; with `follow`, the cursor stays on its row
        (else it stays where it is: on the newest row of an unfocused table)."""
        current = self.cursor_key
        self.sort(column, key=lambda cell: getattr(cell, "ts", 0.0), reverse=newest_first)
        if follow and current is not None and self.has(current):
            self.move_cursor(row=self.get_row_index(current), animate=False)


def _sig(text: Text) -> tuple[str, str]:
    spans = "".join(f"{s.start},{s.end},{s.style};" for s in text.spans)
    return text.plain, f"{text.style}|{text.justify}|{spans}"
