"""The statistics of a period, as engine.report computes them for `scalpdesk report`: the
expectations table with met / not met, the figures, counts by close reason and by symbol,
and the realised equity curve with its drawdown shaded.

Every number is the Report's, written with the report's own formatters, so the screen
and `scalpdesk report` say the same thing. The widgets only render.
"""

from __future__ import annotations

from rich.console import Group as RichGroup
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

from engine.report import (
    DRAWDOWN_MARK,
    Group,
    Report,
    equity_plot,
    expectation_value,
    minutes,
    money,
    num,
    pct,
)

# plotext draws a line with quadrant blocks (and braille, with other markers)
_LINE_CHARS = set("▖▗▘▙▚▛▜▝▞▟▀▄▌▐█") | {chr(c) for c in range(0x2801, 0x2900)}


class EquityChart(Widget):
    """The realised equity curve of a Report, drawn by plotext to the widget's size, with
    what lies under the running peak (the drawdown) shaded."""

    COMPONENT_CLASSES = {"equity--line", "equity--drawdown", "equity--axis", "equity--empty"}
    TITLE = "Realised equity (USDT) by close time, UTC · drawdown shaded"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.report: Report | None = None
        self._cache: tuple[int, int, int, Text] | None = None

    def show(self, report: Report | None) -> None:
        self.report = report
        self._cache = None
        self.refresh()

    def render(self) -> Text:
        r = self.report
        if r is None:
            return Text("")
        width, height = self.size
        if len(r.equity_curve) < 2 or r.trades == 0:
            return Text("No closed trade in this period: no equity curve to draw.",
                        style=self.get_component_rich_style("equity--empty", partial=True))
        if self._cache is not None and self._cache[:3] == (id(r), width, height):
            return self._cache[3]
        plot = equity_plot(r, width=max(width, 30), height=max(height, 6), drawdown=True, title=self.TITLE)
        text = self._styled(plot)
        self._cache = (id(r), width, height, text)
        return text

    def _styled(self, plot: str) -> Text:
        """plotext's plain text, coloured from the stylesheet: line, shaded drawdown, axes."""
        styles: dict[str, Style] = {
            kind: self.get_component_rich_style(f"equity--{kind}", partial=True) for kind in ("line", "drawdown", "axis")
        }

        def kind(ch: str) -> str:
            return "drawdown" if ch == DRAWDOWN_MARK else "line" if ch in _LINE_CHARS else "axis"

        out = Text(no_wrap=True, overflow="crop", end="")
        for n, line in enumerate(plot.split("\n")):
            if n:
                out.append("\n")
            start = 0
            for i in range(1, len(line) + 1):
                if i == len(line) or kind(line[i]) != kind(line[start]):
                    out.append(line[start:i], styles[kind(line[start])])
                    start = i
        return out


class StatisticsView(Vertical):
    """One period's report: heading, expectations, figures, breakdowns, equity curve."""

    COMPONENT_CLASSES = {"stats--met", "stats--unmet", "stats--muted", "stats--head", "stats--profit", "stats--loss"}

    def compose(self):
        self.heading = Static("", id="stats-heading", markup=False)
        self.expectations = Static("", id="stats-expectations")
        self.figures = Static("", id="stats-figures")
        self.reasons = Static("", id="stats-reasons")
        self.symbols = Static("", id="stats-symbols")
        self.chart = EquityChart(id="stats-equity")
        yield self.heading
        with Horizontal(id="stats-columns"):
            with Vertical(id="stats-left"):
                yield self.expectations
                yield self.figures
            with Vertical(id="stats-right"):
                yield self.reasons
                yield self.symbols
        yield self.chart

    def _s(self, name: str) -> Style:
        return self.get_component_rich_style(f"stats--{name}", partial=True)

    def _table(self, title: str, headers: list[str], right: list[bool]) -> Table:
        t = Table(title=title, title_justify="left", title_style=self._s("head"), box=None, pad_edge=False,
                  show_edge=False, padding=(0, 1, 0, 0), header_style=self._s("muted"), expand=False)
        for h, r in zip(headers, right):
            t.add_column(h, justify="right" if r else "left", no_wrap=True)
        return t

    def _signed(self, value: float | None, text: str) -> Text:
        style = self._s("profit") if value and value > 0 else self._s("loss") if value and value < 0 else Style()
        return Text(text, style=style)

    def show(self, report: Report | None, heading: str, error: str = "") -> None:
        self.heading.update(heading if not error else f"{heading}\n{error}")
        if report is None:
            for part in (self.expectations, self.figures, self.reasons, self.symbols):
                part.update("")
            self.chart.show(None)
            return
        r = report
        exp = self._table("Expectations (the original system's targets)", ["metric", "expected", "reached", ""],
                          [False, True, True, False])
        for e in r.expectations:
            met = {True: Text("met", self._s("met")), False: Text("NOT met", self._s("unmet")),
                   None: Text("—", self._s("muted"))}[e.met]
            exp.add_row(e.label, e.expected, expectation_value(e), met)
        self.expectations.update(exp)

        fig = self._table("Figures", ["", ""], [False, False])
        if r.trades:
            fig.add_row("trades", f"{r.trades:,} ({num(r.trades_per_day, 1)} a day)")
            fig.add_row("win rate", f"{pct(r.win_rate_pct)} ({r.wins:,} won, {r.losses:,} lost)")
            fig.add_row("pnl (net of fees)", self._signed(r.pnl, f"{money(r.pnl, signed=True)} USDT ({pct(r.pnl_pct, signed=True)})"))
            fig.add_row("fees", f"{money(r.fees)} USDT")
            fig.add_row("expectancy", self._signed(r.expectancy, f"{money(r.expectancy, signed=True)} USDT a trade"))
            fig.add_row("profit factor", num(r.profit_factor) if r.profit_factor is not None else "— (no losing trade)")
            fig.add_row("average win / loss", f"{money(r.avg_win, signed=True)} / {money(r.avg_loss, signed=True)} USDT")
            fig.add_row("longest losing streak", f"{r.longest_losing_streak:,}")
            fig.add_row("max drawdown", pct(r.max_drawdown_pct))
        else:
            fig.add_row("trades", Text("none closed in this period", self._s("muted")))
        self.figures.update(fig)

        time_exits = r.by_reason.get("TIME_EXIT")
        n_time = time_exits.trades if time_exits else 0
        title = (f"By close reason (time exits {n_time:,} of {r.trades:,}, {pct(n_time / r.trades * 100)})"
                 if r.trades else "By close reason")
        self.reasons.update(self._groups(title, "reason", r.by_reason))
        self.symbols.update(self._groups("By symbol", "symbol", r.by_symbol))
        self.chart.show(r)

    def _groups(self, title: str, what: str, groups: dict[str, Group]) -> RichGroup | Table:
        t = self._table(title, [what, "trades", "win rate", "pnl", "avg ROI", "avg held"],
                        [False, True, True, True, True, True])
        for k, g in groups.items():
            t.add_row(k, f"{g.trades:,}", pct(g.win_rate_pct), self._signed(g.pnl, money(g.pnl, signed=True)),
                      pct(g.avg_roi_pct, signed=True), minutes(g.avg_duration_min))
        if not groups:
            return RichGroup(Text(title, style=self._s("head")), Text("no trades", style=self._s("muted")))
        return t
