"""The journal: every closed trade, newest first, filtered by symbol, close reason and
UTC day. Renders the trades it is given; the screen reads them (engine.journal)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from engine.models import Trade
from widgets import format as fmt
from widgets.table import KeyedTable, Stamp

ALL = "all"


def trade_key(t: Trade) -> str:
    """A row key that survives refilling: the trade's own identity."""
    return f"{t.symbol}:{t.opened_at!r}:{t.closed_at!r}:{t.intent_id or ''}"


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def matches(t: Trade, symbol: str, reason: str, day: str) -> bool:
    return ((symbol == ALL or t.symbol == symbol) and (reason == ALL or t.reason.value == reason)
            and (day == ALL or day_of(t.closed_at) == day))


class JournalTable(KeyedTable):
    """Closed trades, newest first; Enter asks for the decisions behind the one under the cursor."""

    BINDINGS = [Binding("enter", "select_cursor", "Decisions",
                        tooltip="The decision that opened the trade under the cursor, and the one that closed it")]
    COMPONENT_CLASSES = {"journal--long", "journal--short", "journal--profit", "journal--loss", "journal--muted",
                         "journal--reason"}
    COLUMNS = (
        ("closed", "Closed UTC", 14),
        ("symbol", "Symbol", 9),
        ("side", "Side", 5),
        ("reason", "Reason", 13),
        ("entry", "Entry", 10),
        ("exit", "Exit", 10),
        ("pnl", "PnL", 9),
        ("roi", "ROI", 8),
        ("fees", "Fees", 7),
        ("held", "Held", 7),
        # Fixed too: every intent id is a letter, a dash and 32 hex digits (executor). Measured
        # (auto width), the column was as wide as its header until DataTable's idle pass
        # measured the rows, and a frame taken before it cut the ids to "o-0000".
        ("intent", "Intent", 34),
    )
    RIGHT = {"entry", "exit", "pnl", "roi", "fees", "held"}

    class Selected(Message):
        def __init__(self, trade: Trade) -> None:
            super().__init__()
            self.trade = trade

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.trades: dict[str, Trade] = {}

    def _text(self, value: str, style: str | None = None, right: bool = False) -> Text:
        s = self.cell_style(f"journal--{style}") if style else ""
        return Text(value, style=s, end="", justify="right" if right else None)

    def cells(self, t: Trade) -> dict[str, Text]:
        pnl_style = "profit" if t.pnl > 0 else "loss" if t.pnl < 0 else None
        closed = datetime.fromtimestamp(t.closed_at, UTC).strftime("%m-%d %H:%M:%S")
        return {
            "closed": Stamp(closed, t.closed_at, end=""),
            "symbol": self._text(t.symbol),
            "side": self._text(t.side, t.side),
            "reason": self._text(t.reason.value, "reason"),
            "entry": self._text(fmt.price(t.entry_price, t.symbol), right=True),
            "exit": self._text(fmt.price(t.exit_price, t.symbol), right=True),
            "pnl": self._text(fmt.money(t.pnl, signed=True), pnl_style, right=True),
            "roi": self._text(fmt.signed_pct(t.roi_pct, 2), pnl_style, right=True),
            "fees": self._text(fmt.money(t.fees), "muted", right=True),
            "held": self._text(fmt.elapsed(t.duration_sec), right=True),
            "intent": self._text(t.intent_id or "— (adopted)", "muted"),
        }

    def show(self, trades: Iterable[Trade]) -> None:
        """Exactly these trades, newest first (a filter changed: refilled, the cursor kept
        on its trade where it is still shown)."""
        current = self.cursor_key
        self.clear()
        self._shown.clear()
        self.trades = {}
        for t in sorted(trades, key=lambda t: (t.closed_at, t.opened_at), reverse=True):
            key = trade_key(t)
            if key in self.trades:
                continue
            self.trades[key] = t
            self.set_row(key, self.cells(t))
        if current is not None and self.has(current):
            self.move_cursor(row=self.get_row_index(current), animate=False)

    def add(self, t: Trade) -> None:
        """A trade closed while the journal is open: in its place, newest first."""
        key = trade_key(t)
        if key in self.trades:
            return
        self.trades[key] = t
        self.set_row(key, self.cells(t))
        self.sort_by_stamp("closed", follow=self.has_focus)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        trade = self.trades.get(str(event.row_key.value))
        if trade is not None:
            self.post_message(self.Selected(trade))
