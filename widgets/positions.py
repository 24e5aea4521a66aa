"""Open positions, with a countdown to each one's time exit.

The countdown is computed from the position's metadata (opened_at + limit − now)
on every tick of the app's one timer; only cells whose text changed are repainted.
Only the rows on screen are written: a row out of view keeps its newest data here
and is written when it comes into view (a scroll, a resize, a row removed above it).
A hundred positions with marks changing twice a second cost the fifteen in view.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label

from engine.models import PositionMeta, VenuePosition
from widgets import format as fmt
from widgets.titles import set_border_title
from widgets.table import KeyedTable

URGENT_SEC = 60  # the countdown changes colour in the last minute


class PositionsTable(KeyedTable):
    """One row per symbol; c asks to force close the position under the cursor."""

    BINDINGS = [Binding("c", "force_close", "Force close", tooltip="Force close the position under the cursor (asks first)")]
    COMPONENT_CLASSES = {
        "positions--long",
        "positions--short",
        "positions--profit",
        "positions--loss",
        "positions--flat",
        "positions--countdown",
        "positions--urgent",
        "positions--due",
        "positions--closing",
        "positions--armed",
        "positions--muted",
    }
    # Fixed widths: the numbers change every pass, the columns must not jump. The
    # countdown comes right after the symbol: Textual repaints a changed cell together
    # with everything left of it in the widget, so a ticking column far right would
    # resend the whole row every second.
    COLUMNS = (
        ("symbol", "Symbol", 10),
        ("exit", "Exit in", 7),
        ("side", "Side", 5),
        ("pnl", "uPnL", 9),
        ("roi", "ROI", 8),
        ("size", "Size", 9),
        ("lev", "Lev", 4),
        ("entry", "Entry", 10),
        ("mark", "Mark", 10),
        ("liq", "Liq", 10),
        ("tp", "TP", 10),
        ("sl", "SL", 10),
        ("trail", "Trail", 5),
    )
    RIGHT = {"size", "lev", "pnl", "roi", "exit", "entry", "mark", "liq", "tp", "sl"}

    class ForceClose(Message):
        """The operator asked to force close a position (confirmation comes next)."""

        def __init__(self, symbol: str) -> None:
            super().__init__()
            self.symbol = symbol

    def action_force_close(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.ForceClose(key))


class PositionsPanel(Vertical):
    """Renders what PositionsUpdated says, and ticks the countdowns."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("-empty", update=False)  # it starts empty: the count at mount finds the class set (no second styling)
        self.positions: dict[str, VenuePosition] = {}
        self.metas: dict[str, PositionMeta] = {}
        self.closing: set[str] = set()  # closes the operator asked for, in progress
        self._specs: dict[str, dict[str, tuple[str, str | None]]] = {}  # per row: each cell as last written
        self.exiting: set[str] = set()  # time exits due that the engine is still sending
        self.behind: set[str] = set()  # rows out of view whose cells are not written yet
        self.now = 0.0

    def compose(self):
        self._table = PositionsTable(id="positions-table")
        self._table.on_view = self._catch_up
        yield self._table
        yield Label("No open positions.", classes="empty")

    def on_mount(self) -> None:
        self._counted()

    @property
    def table(self) -> PositionsTable:
        return self._table

    def _style(self, name: str):
        return self.table.cell_style(f"positions--{name}")

    def _text(self, value: str, style: str | None = None, right: bool = False) -> Text:
        return Text(value, style=self._style(style) if style else "", end="", justify="right" if right else None)

    # --- feeding ---------------------------------------------------------------

    def show(self, positions: list[VenuePosition], metas: list[PositionMeta], now: float,
             closing: list[str] | None = None) -> None:
        """The venue's positions with the engine's metadata (a monitor pass); `closing`:
        time exits due that the venue has not let through yet (tried every pass)."""
        self.now = now
        self.metas = {m.symbol: m for m in metas}
        self.exiting = set(closing or ())
        fresh = {p.symbol: p for p in positions}
        for sym in list(self.positions):
            if sym not in fresh:
                self.remove(sym)
        for sym in sorted(fresh):
            self.positions[sym] = fresh[sym]
            self._paint_row(sym)
        self._counted()

    def opened(self, meta: PositionMeta, now: float) -> None:
        """A fill: show the row at once (marks and PnL follow with the next update)."""
        self.now = now
        self.metas[meta.symbol] = meta
        if meta.symbol not in self.positions:
            self.positions[meta.symbol] = VenuePosition(
                symbol=meta.symbol,
                side=meta.side,
                size=meta.qty,
                entry_price=meta.entry_price,
                mark_price=meta.entry_price,
                leverage=meta.leverage,
                unrealised_pnl=0.0,
                take_profit=meta.take_profit,
                stop_loss=meta.stop_loss,
            )
        self._render_row(meta.symbol)
        self._counted()

    def remove(self, symbol: str) -> None:
        self.positions.pop(symbol, None)
        self._specs.pop(symbol, None)
        self.behind.discard(symbol)
        self.metas.pop(symbol, None)
        self.closing.discard(symbol)
        self.table.drop_row(symbol)
        self._counted()

    def mark_closing(self, symbol: str) -> None:
        if symbol in self.positions:
            self.closing.add(symbol)
            self.table.set_cell(symbol, "exit", self._exit_cell(symbol))

    def close_failed(self, symbol: str) -> None:
        self.closing.discard(symbol)
        if symbol in self.positions:
            self.table.set_cell(symbol, "exit", self._exit_cell(symbol))

    def tick(self, now: float) -> list[str]:
        """Move every countdown; return the symbols whose time exit just came due."""
        self.now = now
        due = []
        for sym in self.positions:
            meta = self.metas.get(sym)
            if meta is not None and meta.seconds_left(now) <= 0 and sym not in self.closing | self.exiting:
                due.append(sym)
            if sym in self.behind:
                continue
            if self.table.in_view(sym):
                self.table.set_cell(sym, "exit", self._exit_cell(sym))
            else:
                self.behind.add(sym)
        return due

    def seconds_left(self, symbol: str) -> float | None:
        meta = self.metas.get(symbol)
        return None if meta is None else meta.seconds_left(self.now)

    # --- rendering -------------------------------------------------------------

    def _counted(self) -> None:
        n = len(self.positions)
        title = f"Positions ({n})" if n else "Positions"
        set_border_title(self, title)
        self.set_class(n == 0, "-empty")

    def _exit_cell(self, sym: str) -> Text:
        if sym in self.closing or sym in self.exiting:
            return self._text("closing", "closing", right=True)
        left = self.seconds_left(sym)
        if left is None:
            return self._text("—", "muted", right=True)
        if left <= 0:
            return self._text("EXIT", "due", right=True)
        return self._text(fmt.countdown(left), "urgent" if left <= URGENT_SEC else "countdown", right=True)

    def _paint_row(self, sym: str) -> None:
        """Write the row now if it is on screen (or new), else when it comes into view."""
        if self.table.has(sym) and not self.table.in_view(sym):
            self.behind.add(sym)
        else:
            self._render_row(sym)

    def _catch_up(self) -> None:
        """Other rows may be in view now: write those that are behind."""
        for sym in [s for s in self.behind if self.table.in_view(s)]:
            self._render_row(sym)

    def _render_row(self, sym: str) -> None:
        self.behind.discard(sym)
        p = self.positions[sym]
        meta = self.metas.get(sym)
        pnl_style = "profit" if p.unrealised_pnl > 0 else "loss" if p.unrealised_pnl < 0 else "flat"
        tp = p.take_profit if p.take_profit else (meta.take_profit if meta else None)
        sl = p.stop_loss if p.stop_loss else (meta.stop_loss if meta else None)
        armed = bool(p.trailing_stop) or bool(meta and meta.trailing_armed)
        # Each cell as (text, style) first: a marks update changes the mark, PnL and ROI of
        # a row, and only those cells are made and written (a hundred rows a second).
        specs: dict[str, tuple[str, str | None]] = {
            "symbol": (sym, None),
            "side": (p.side, p.side),
            "size": (fmt.qty(p.size), None),
            "lev": (f"{p.leverage:g}x", None),
            "pnl": (fmt.money(p.unrealised_pnl, signed=True), pnl_style),
            "roi": (fmt.pct(p.roi_pct), pnl_style),
            "entry": (fmt.price(p.entry_price, sym), None),
            "mark": (fmt.price(p.mark_price, sym), None),
            "liq": (fmt.price(p.liq_price, sym), "muted"),
            "tp": (fmt.price(tp, sym), None),
            "sl": (fmt.price(sl, sym), None),
            "trail": ("armed", "armed") if armed else ("—", "muted"),
        }
        right = PositionsTable.RIGHT
        shown = self._specs.get(sym)
        if shown is None or not self.table.has(sym):
            cells = {col: self._text(v, style, right=col in right) for col, (v, style) in specs.items()}
            cells["exit"] = self._exit_cell(sym)
            self.table.set_row(sym, cells)
        else:  # the cells that changed, repainted together (KeyedTable._repaint)
            cells = {col: self._text(v, style, right=col in right)
                     for col, (v, style) in specs.items() if shown.get(col) != (v, style)}
            cells["exit"] = self._exit_cell(sym)
            self.table.set_row(sym, cells)
        self._specs[sym] = specs
