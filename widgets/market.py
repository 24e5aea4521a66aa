"""Market watch: one row per symbol with what the deciders saw this cycle (price, changes,
ATR, the three trends, funding, the last hour of 1 m closes), what would block an entry
now, and the latest decision for the symbol with its one-line reason (HOLDs included).

The panel only renders what the engine says: MarketUpdated each cycle, BlocksUpdated when
the entry blocks change between cycles, DecisionEvents. Rows keep their keys and change
cells in place; the app's one timer moves the cooldown countdowns.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.containers import Vertical
from textual.content import Content
from textual.renderables.sparkline import Sparkline
from textual.widgets import DataTable, Label, Static

from engine.models import DecisionRecord, EntryBlock, SymbolFeatures
from widgets import format as fmt
from widgets.titles import set_border_title
from widgets.table import KeyedTable

SPARK_WIDTH = 14
ENTRY_WIDTH = 16
DECISION_WIDTH = 45  # what is left of 160 columns; the line under the table has it in full
ARROW = {1: "↑", -1: "↓", 0: "→"}


class MarketTable(KeyedTable):
    """One row per symbol, in the order of the settings."""

    COMPONENT_CLASSES = {
        "market--up",
        "market--down",
        "market--flat",
        "market--muted",
        "market--ready",
        "market--blocked",
        "market--cooldown",
        "market--long",
        "market--short",
        "market--close",
        "market--hold",
        "market--spark-low",
        "market--spark-high",
    }
    # The ticking column (a cooldown's countdown) next to the symbol: see PositionsTable.
    COLUMNS = (
        ("symbol", "Symbol", 9),
        ("entry", "Entry now", ENTRY_WIDTH),
        ("last", "Last", 10),
        ("ch1m", "1m", 7),
        ("ch5m", "5m", 7),
        ("ch1h", "1h", 7),
        ("atr", "ATR 1m", 6),
        ("trend", "Trend", 5),
        ("funding", "Funding", 8),
        ("spark", "Last hour (1m)", SPARK_WIDTH),
        ("decision", "Latest decision", DECISION_WIDTH),
    )
    RIGHT = {"last", "ch1m", "ch5m", "ch1h", "atr", "funding"}


class MarketPanel(Vertical):
    """The market watch: the table, and under it the cursor row's decision and blocks in full."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("-empty", update=False)  # it starts empty: the count at mount finds the class set (no second styling)
        self.features: dict[str, SymbolFeatures] = {}
        self.closes: dict[str, list[float]] = {}
        self.blocks: dict[str, list[EntryBlock]] = {}
        self.latest: dict[str, DecisionRecord] = {}
        self.as_of: float | None = None
        self.now = 0.0
        self._sparks: dict[tuple[float, ...], Text] = {}  # closes -> the sparkline drawn of them
        self._detail_shape: tuple[int, int] | None = None  # (width, lines) of the detail as laid out

    def compose(self):
        self._table = MarketTable(id="market-table")
        yield self._table
        yield Label("No market data yet: it comes with the next decision cycle (r runs one now).", classes="empty")
        self._detail = Static("", id="market-detail", markup=False)
        yield self._detail

    def on_mount(self) -> None:
        self._counted()

    @property
    def table(self) -> MarketTable:
        return self._table

    # --- feeding ---------------------------------------------------------------

    def market(self, features: dict[str, SymbolFeatures], closes: dict[str, list[float]],
               blocks: dict[str, list[EntryBlock]], ts: float, now: float) -> None:
        """A decision cycle's market (MarketUpdated)."""
        self.now = now
        self.as_of = ts
        for sym, f in features.items():
            self.features[sym] = f
            if sym in closes:
                self.closes[sym] = closes[sym]
            if sym in blocks:
                self.blocks[sym] = blocks[sym]
            self._render_row(sym)
        self._counted()
        self._show_detail()

    def entry_blocks(self, blocks: dict[str, list[EntryBlock]], now: float) -> None:
        """What would block an entry now changed between cycles (BlocksUpdated)."""
        self.now = now
        for sym, bs in blocks.items():
            self.blocks[sym] = bs
            if self.table.has(sym):
                self.table.set_cell(sym, "entry", self._entry_cell(sym))
        self._show_detail()

    def decision(self, record: DecisionRecord, from_store: bool = False) -> None:
        """A decision for a symbol (HOLDs included); the newest one stays."""
        sym = record.decision.symbol
        old = self.latest.get(sym)
        if old is not None and record.recorded_at < old.recorded_at:
            return
        if from_store and old is not None:
            return  # what the engine said since start is newer than the file
        self.latest[sym] = record
        if self.table.has(sym):
            self.table.set_cell(sym, "decision", self._decision_cell(sym))
            self._show_detail()

    def tick(self, now: float) -> None:
        """Move the cooldown countdowns; a block whose time is up goes."""
        self.now = now
        ticking = False
        for sym, bs in self.blocks.items():
            if any(b.until is not None for b in bs):
                ticking = True
                if self.table.has(sym):
                    self.table.set_cell(sym, "entry", self._entry_cell(sym))
        if ticking:
            self._show_detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail()

    # --- rendering -------------------------------------------------------------

    def _style(self, name: str) -> Style:
        return self.table.cell_style(f"market--{name}")

    def _text(self, value: str, style: str | None = None, right: bool = False) -> Text:
        return Text(value, style=self._style(style) if style else "", end="", justify="right" if right else None)

    def _counted(self) -> None:
        title = "Market"
        if self.as_of is not None:
            title = f"Market · {fmt.clock(self.as_of)} UTC"
        set_border_title(self, title)
        self.set_class(not self.features, "-empty")

    def active_blocks(self, sym: str) -> list[EntryBlock]:
        """The symbol's entry blocks still in force (a cooldown ends by itself)."""
        return [b for b in self.blocks.get(sym, []) if b.until is None or b.until > self.now]

    def _change(self, value: float) -> Text:
        style = "up" if value > 0 else "down" if value < 0 else "flat"
        return self._text(fmt.signed_pct(value, 2), style, right=True)

    def _render_row(self, sym: str) -> None:
        f = self.features[sym]
        trend = Text(end="")
        for t in (f.trend_1m, f.trend_5m, f.trend_15m):
            trend.append(ARROW.get(t, "→"), self._style("up" if t > 0 else "down" if t < 0 else "flat"))
        cells = {
            "symbol": self._text(sym),
            "entry": self._entry_cell(sym),
            "last": self._text(fmt.price(f.price, sym), right=True),
            "ch1m": self._change(f.ret_1m_pct),
            "ch5m": self._change(f.ret_5m_pct),
            "ch1h": self._change(f.ret_1h_pct),
            "atr": self._text(f"{f.atr_pct_1m:.3f}%", right=True),
            "trend": trend,
            "funding": self._text(fmt.signed_pct(f.funding_rate * 100, 4), "muted", right=True),
            "spark": self._spark(self.closes.get(sym, [])),
            "decision": self._decision_cell(sym),
        }
        self.table.set_row(sym, cells)

    def _spark(self, closes: list[float]) -> Text:
        """The last hour of 1 m closes, drawn by Textual's Sparkline (each bar the last close
        of its minutes), as a cell's text; drawn again only when the closes changed (a
        minute closed), not at every marks update."""
        if len(closes) < 2:
            return self._text("—", "muted")
        key = tuple(closes)
        cached = self._sparks.get(key)
        if cached is None:
            if len(self._sparks) > 4 * SPARK_WIDTH:
                self._sparks.clear()
            cached = self._sparks[key] = self._draw_spark(closes)
        return cached

    def _draw_spark(self, closes: list[float]) -> Text:
        low, high = self._style("spark-low").color, self._style("spark-high").color
        spark = Sparkline(closes, width=SPARK_WIDTH, min_color=low, max_color=high,  # type: ignore[arg-type]
                          summary_function=lambda bucket: bucket[-1])
        # The bars go from the hour's low to its high: a flat hour would be all low bars.
        console = self.app.console
        text = Text(end="")
        for seg in console.render(spark, console.options.update_width(SPARK_WIDTH)):
            if seg.text != "\n":
                text.append(seg.text, seg.style)
        return text

    def _entry_cell(self, sym: str) -> Text:
        blocks = self.active_blocks(sym)
        if sym not in self.blocks:
            return self._text("—", "muted")
        if not blocks:
            return self._text("ready", "ready")
        first = blocks[0]
        label = first.code
        style = "blocked"
        if first.until is not None:
            label = f"{first.code} {fmt.countdown(first.until - self.now)}"
            style = "cooldown"
        if len(blocks) > 1:
            label = f"{label} +{len(blocks) - 1}"
        return self._text(fmt.truncate(label, ENTRY_WIDTH), style)

    def _decision_cell(self, sym: str) -> Text:
        """The action, then its one-line reason (after what became of it, unless it held)."""
        rec = self.latest.get(sym)
        if rec is None:
            return self._text("no decision yet", "muted")
        action = rec.decision.action.value
        style = {"OPEN_LONG": "long", "OPEN_SHORT": "short", "HOLD": "hold"}.get(action, "close")
        text = self._text(action, style)
        reason = fmt.truncate(why(rec), DECISION_WIDTH - len(action) - 1)
        text.append(" " + reason, self._style("muted") if rec.status == "HOLD" else "")
        return text

    def _show_detail(self) -> None:
        sym = self.table.cursor_key
        text = self.detail_text(sym) if sym is not None else ""
        if self._detail.content == text:
            return
        # Its height follows its wrapped lines (height: auto): lay the screen out only when
        # that height changes, not for a countdown ticking inside it every second. (Counting
        # newlines was not enough: a reason longer than the width wraps, and any such line
        # asked for a layout at every tick.)
        width = self._detail.content_region.width
        shape = (width, Content(text).get_height(self._detail.styles, width)) if width else None
        self._detail.update(text, layout=shape is None or shape != self._detail_shape)
        self._detail_shape = shape

    def detail_text(self, sym: str) -> str:
        """The cursor row's decision and entry blocks in full, two lines or three."""
        rec = self.latest.get(sym)
        if rec is None:
            first = f"{sym}: no decision yet"
        else:
            d = rec.decision
            first = f"{sym} {d.action.value} at {fmt.clock(rec.recorded_at)} UTC ({d.source}): {why(rec, full=True)}"
        blocks = self.active_blocks(sym)
        if sym not in self.blocks:
            second = "Entry now: not known yet"
        elif not blocks:
            second = "Entry now: nothing blocks an open (a decision can still fall short of confidence or size)"
        else:
            second = "Entry now blocked: " + " · ".join(self._block_line(b) for b in blocks)
        return f"{first}\n{second}"

    def _block_line(self, b: EntryBlock) -> str:
        if b.until is None:
            return b.text
        # The engine's line counts the seconds left when it was made ("…, 212s left"): say it now.
        head = b.text.rsplit(", ", 1)[0] if b.text.endswith("s left") else b.text
        return f"{head}, {fmt.countdown(b.until - self.now)} left"


def why(record: DecisionRecord, full: bool = False) -> str:
    """A decision's one-line reason: its rationale, after what became of it unless it held."""
    reason = " ".join((record.decision.rationale or "").split()) or "(no reason given)"
    status = record.status
    if status == "HOLD":
        return reason
    if status == "PENDING":
        return f"waiting for approval · {reason}"
    if status in ("EXECUTED", "BLOCKED", "REJECTED", "EXPIRED", "FAILED", "EXECUTING"):
        head = fmt.outcome(record)
        if not full:
            head = head.split(" (", 1)[0]
    else:
        head = status
    return f"{head} · {reason}"
