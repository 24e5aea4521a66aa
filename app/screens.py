"""The journal and the statistics: screens read from the state files, imported when
one is first opened (after the console's first frame, see ScalpDeskApp.warm_screens).
The dialogs are in app.dialogs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Select, Static, Tab, Tabs

from engine.models import DecisionRecord, Trade
from engine.report import DAY, Report, build_report, money, pct, write_csv
from app.dialogs import DecisionScreen
from widgets.footer import KeysFooter
from widgets.journal import ALL, JournalTable, day_of, matches
from widgets.statistics import StatisticsView


# --- the journal --------------------------------------------------------------------------


def read_journal(*args, **kwargs) -> list[Trade]:
    # engine.journal reads through engine.store (TinyDB and the rest): imported at the
    # first j or s, not at the console's start.
    from engine.journal import read_journal as read

    return read(*args, **kwargs)


def read_decisions(*args, **kwargs) -> dict[str, DecisionRecord]:
    from engine.journal import read_decisions as read

    return read(*args, **kwargs)


HISTORY_DIR = "history"  # engine.store.HISTORY_DIR (tests/test_console_imports.py checks they agree)


class JournalCache:
    """The journal as the console last read it, file by file: a later read re-reads only the
    history files that changed (a new hour, a trade journaled late into an older one) and
    forgets those cleanup removed. A month of history is a few hundred files holding every
    decision too; reading them all again on every j or s would take seconds.

    Reads go through engine.journal.read_journal, one UTC hour at a time; thread-safe (the
    screens read in worker threads)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._lock = threading.Lock()
        self._files: dict[str, tuple[tuple[int, int, int], list[Trade]]] = {}  # hour -> (stat, its trades)
        self.files_read = 0  # (tests, the bench) how many hour files were read in all

    def read(self) -> list[Trade]:
        """Every trade in the state files, in close order."""
        with self._lock:
            history = self.state_dir / HISTORY_DIR
            if not self.state_dir.is_dir():
                return read_journal(self.state_dir)  # says what is wrong
            seen: dict[str, tuple[int, int, int]] = {}
            if history.is_dir():
                # An hour's log (.jsonl), or its file of the earlier layout (.json) until a
                # store converts it: sorted, the log's stat is the one kept (engine.store.history_files).
                for path in sorted(history.glob("*.json*")):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue
                    seen[path.stem] = (st.st_ino, st.st_size, st.st_mtime_ns)
            for hour in list(self._files):
                if hour not in seen:
                    del self._files[hour]  # removed by cleanup
            if not self._files and seen:
                # The first read: every file at once (the stats were taken before it, so a
                # file written meanwhile is read again next time).
                by_hour: dict[str, list[Trade]] = {hour: [] for hour in seen}
                for t in read_journal(self.state_dir):
                    by_hour.setdefault(datetime.fromtimestamp(t.closed_at, UTC).strftime("%Y-%m-%dT%H"), []).append(t)
                self._files = {hour: (seen.get(hour, (0, 0, 0)), ts) for hour, ts in by_hour.items()}
                self.files_read += len(seen)
            for hour, stat in seen.items():
                cached = self._files.get(hour)
                if cached is not None and cached[0] == stat:
                    continue
                try:
                    start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC).timestamp()
                except ValueError:
                    continue  # not a history file
                self._files[hour] = (stat, read_journal(self.state_dir, since=start, until=start + 3600))
                self.files_read += 1
            trades = [t for hour in sorted(self._files) for t in self._files[hour][1]]
        return sorted(trades, key=lambda t: t.closed_at)



class JournalScreen(ModalScreen[None]):
    """Every closed trade in the state files, newest first, filtered by symbol, close reason
    and UTC day. Read from the journal files (engine.journal, read-only, in a thread), so it
    survives restarts and covers the retention period; trades that close while it is open
    are added (JournalScreen.add_trade)."""

    BINDINGS = [
        Binding("escape", "close", "Close", tooltip="Close the journal"),
        Binding("q,j", "close", "Close", show=False, tooltip="Close the journal"),
        Binding("e", "export", "Export CSV", tooltip="Write the trades shown to a CSV file in the state directory"),
        Binding("f", "filters", "Filters", tooltip="To the filters: symbol, close reason, UTC day (Tab moves on)"),
        Binding("x", "clear_filters", "All trades", tooltip="Clear the filters"),
    ]
    FILTERS = ("symbol", "reason", "day")

    def __init__(self, state_dir: Path, *, start_equity: float, default_cooldown_sec: float | None,
                 now: Callable[[], float], cache: JournalCache | None = None) -> None:
        super().__init__()
        self.state_dir = Path(state_dir)
        self.cache = cache if cache is not None else JournalCache(self.state_dir)
        self.start_equity = start_equity
        self.default_cooldown_sec = default_cooldown_sec
        self.now = now
        self.trades: list[Trade] = []
        self.shown: list[Trade] = []
        self.loaded = False
        self.exported: Path | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="journal"):
            yield Label("Journal · reading the state files…", id="journal-title", markup=False)
            with Horizontal(id="journal-filters"):
                for name, label in (("symbol", "Symbol"), ("reason", "Reason"), ("day", "Day (UTC)")):
                    yield Label(label, classes="filter-label")
                    yield Select([("all", ALL)], value=ALL, allow_blank=False, compact=True, id=f"filter-{name}")
            self.table = JournalTable(id="journal-table")
            yield self.table
            yield Label("No closed trade matches.", id="journal-empty", classes="empty")
            yield Static("", id="journal-summary", markup=False)
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.table.focus()
        self.run_worker(self._load(), name="journal", exit_on_error=False)

    async def _load(self) -> None:
        try:
            trades = await asyncio.to_thread(self.cache.read)
        except Exception as e:  # noqa: BLE001 - say it on the screen; the console stays up
            self.query_one("#journal-title", Label).update(f"Journal · not read: {e}")
            return
        self.trades = trades
        self.loaded = True
        self._options()
        self._refilter()

    # --- filters ---------------------------------------------------------------

    def filter_value(self, name: str) -> str:
        value = self.query_one(f"#filter-{name}", Select).value
        return value if isinstance(value, str) else ALL

    def set_filter(self, name: str, value: str) -> None:
        self.query_one(f"#filter-{name}", Select).value = value

    def _options(self) -> None:
        """Each filter's choices: what the journal holds (days newest first)."""
        choices = {
            "symbol": sorted({t.symbol for t in self.trades}),
            "reason": sorted({t.reason.value for t in self.trades}),
            "day": sorted({day_of(t.closed_at) for t in self.trades}, reverse=True),
        }
        for name, values in choices.items():
            select = self.query_one(f"#filter-{name}", Select)
            current = self.filter_value(name)
            with select.prevent(Select.Changed):
                select.set_options([("all", ALL)] + [(v, v) for v in values])
                select.value = current if current in values else ALL

    @on(Select.Changed)
    def _filter_changed(self, event: Select.Changed) -> None:
        event.stop()
        if self.loaded:
            self._refilter()

    def _refilter(self) -> None:
        symbol, reason, day = (self.filter_value(n) for n in self.FILTERS)
        self.shown = [t for t in self.trades if matches(t, symbol, reason, day)]
        self.table.show(self.shown)
        self._summarise()

    def _summarise(self) -> None:
        n, total = len(self.shown), len(self.trades)
        filters = [v for v in (self.filter_value(n) for n in self.FILTERS) if v != ALL]
        what = f"{n:,} of {total:,} trades ({', '.join(filters)})" if filters else f"all {total:,} trades"
        self.query_one("#journal-title", Label).update(f"Journal · {what} · newest first · e exports them")
        self.set_class(n == 0, "-empty")
        summary = self.query_one("#journal-summary", Static)
        if not n:
            summary.update("")
            return
        r = self.report()
        summary.update(f"shown: {r.trades:,} trades · {r.wins:,} won · win rate {pct(r.win_rate_pct)} · "
                       f"PnL {money(r.pnl, signed=True)} USDT · fees {money(r.fees)} USDT · "
                       f"expectancy {money(r.expectancy, signed=True)} USDT")

    def report(self) -> Report:
        """The trades shown, through the report's one computation (the summary line, the CSV)."""
        return build_report(self.shown, start_equity=self.start_equity, default_cooldown_sec=self.default_cooldown_sec)

    def add_trade(self, trade: Trade) -> None:
        """A trade closed while the journal is open."""
        if not self.loaded:
            return  # the read under way will find it
        self.trades.append(trade)
        self._options()
        symbol, reason, day = (self.filter_value(n) for n in self.FILTERS)
        if matches(trade, symbol, reason, day):
            self.shown.append(trade)
            self.table.add(trade)
        self._summarise()

    # --- keys ------------------------------------------------------------------

    def action_close(self) -> None:
        self.dismiss(None)

    def action_filters(self) -> None:
        self.query_one("#filter-symbol", Select).focus()

    def action_clear_filters(self) -> None:
        for name in self.FILTERS:
            select = self.query_one(f"#filter-{name}", Select)
            with select.prevent(Select.Changed):
                select.value = ALL
        self._refilter()
        self.table.focus()

    def action_export(self) -> None:
        if not self.shown:
            self.notify("No trade shown: nothing to export.", severity="warning")
            return
        stamp = datetime.fromtimestamp(self.now(), UTC).strftime("%Y%m%d-%H%M%S")
        filters = [v for v in (self.filter_value(n) for n in self.FILTERS) if v != ALL]
        path = self.state_dir / f"journal-{stamp}{''.join('-' + f for f in filters)}.csv"
        report = self.report()

        async def write() -> None:
            try:
                await asyncio.to_thread(write_csv, report, path)
            except OSError as e:
                self.notify(f"CSV not written: {path}: {e.strerror or e}", severity="error", timeout=15)
                return
            self.exported = path
            self.notify(f"{report.trades:,} trades written to {path}", title="Journal exported", timeout=15)

        self.run_worker(write(), group="export", exit_on_error=False)

    @on(JournalTable.Selected)
    def _details(self, event: JournalTable.Selected) -> None:
        event.stop()
        t = event.trade
        ids = [i for i in (t.decision_id, t.close_decision_id) if i]

        async def open_details() -> None:
            found: dict[str, DecisionRecord] = {}
            if ids:
                try:
                    # A decision is recorded before its order fills (an approval can wait up to
                    # an hour); the closing one before the close.
                    found = await asyncio.to_thread(read_decisions, self.state_dir, ids,
                                                    t.opened_at - 2 * 3600, t.closed_at + 60)
                except Exception as e:  # noqa: BLE001
                    self.notify(f"Decisions not read: {e}", severity="warning")
            opening = found.get(t.decision_id) if t.decision_id else None
            closing = found.get(t.close_decision_id) if t.close_decision_id else None
            self.app.push_screen(DecisionScreen(
                opening, opening.inputs if opening else None, trade=t, closing=closing,
                closing_inputs=closing.inputs if closing else None))

        self.run_worker(open_details(), group="details", exclusive=True, exit_on_error=False)


# --- statistics ------------------------------------------------------------------------

PERIODS = (("today", "Today"), ("7d", "7 days"), ("30d", "30 days"), ("all", "All"))


def day_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts, UTC)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def period_since(period: str, now: float) -> float | None:
    """Where a period starts: today 00:00 UTC, 7 or 30 days back, or nowhere (all)."""
    return {"today": day_start(now), "7d": now - 7 * DAY, "30d": now - 30 * DAY}.get(period)


def period_reports(trades: list[Trade], now: float, start_equity: float,
                   default_cooldown_sec: float | None) -> dict[str, Report]:
    """Each period's report, built as `scalpdesk report` builds it (--since / --days / all)."""
    out = {}
    for period, _ in PERIODS:
        since = period_since(period, now)
        chosen = trades if since is None else [t for t in trades if t.closed_at >= since]
        out[period] = build_report(chosen, start_equity=start_equity, period_start=since,
                                   period_end=now if since is not None else None,
                                   default_cooldown_sec=default_cooldown_sec)
    return out


class StatisticsScreen(ModalScreen[None]):
    """Today, 7 days, 30 days, all: the expectations table, the figures, counts by close
    reason and by symbol, the equity curve with its drawdown shaded. engine.report computes
    every number, as for `scalpdesk report`."""

    BINDINGS = [
        Binding("escape", "close", "Close", tooltip="Close the statistics"),
        Binding("q,s", "close", "Close", show=False, tooltip="Close the statistics"),
        Binding("1", "period('today')", "Today", tooltip="Trades closed today (UTC)"),
        Binding("2", "period('7d')", "7 days", tooltip="Trades closed in the last 7 days"),
        Binding("3", "period('30d')", "30 days", tooltip="Trades closed in the last 30 days"),
        Binding("4", "period('all')", "All", tooltip="Every trade in the state files"),
        Binding("g", "curve", "Equity curve", tooltip="Scroll to the equity curve (Home: back to the top)"),
        Binding("home", "top", "Top", show=False, tooltip="Back to the top"),
    ]

    def __init__(self, state_dir: Path, *, start_equity: float, default_cooldown_sec: float | None,
                 now: Callable[[], float], period: str = "today", cache: JournalCache | None = None) -> None:
        super().__init__()
        self.state_dir = Path(state_dir)
        self.cache = cache if cache is not None else JournalCache(self.state_dir)
        self.start_equity = start_equity
        self.default_cooldown_sec = default_cooldown_sec
        self.now = now
        self.period = period
        self.reports: dict[str, Report] = {}
        self.at: float = now()
        self.error = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="stats"):
            yield Tabs(*(Tab(f"{i} {label}", id=f"period-{p}") for i, (p, label) in enumerate(PERIODS, 1)),
                       active=f"period-{self.period}", id="stats-periods")
            with VerticalScroll(id="stats-body"):
                self.view = StatisticsView(id="stats-view")
                yield self.view
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.view.show(None, "Statistics · reading the journal…")
        self.query_one("#stats-body").focus()
        self.run_worker(self._load(), name="statistics", exit_on_error=False)

    async def _load(self) -> None:
        self.at = now = self.now()

        def compute() -> dict[str, Report]:
            import plotext  # noqa: F401 - its import (~150 ms) here, not in the first frame of the curve

            return period_reports(self.cache.read(), now, self.start_equity, self.default_cooldown_sec)

        try:
            self.reports = await asyncio.to_thread(compute)
            self.error = ""
        except Exception as e:  # noqa: BLE001 - say it on the screen
            self.error = f"The journal was not read: {e}"
        self._show()

    def heading(self, period: str, report: Report | None) -> str:
        label = dict(PERIODS)[period]
        since = period_since(period, self.at)
        if since is None:
            cmd = "scalpdesk report"
            if report is not None and report.period_start is not None and report.period_end is not None:
                span = (f"{datetime.fromtimestamp(report.period_start, UTC):%Y-%m-%d %H:%M} – "
                        f"{datetime.fromtimestamp(report.period_end, UTC):%Y-%m-%d %H:%M} UTC")
            else:
                span = "an empty journal"
        else:
            cmd = ("scalpdesk report --since " + f"{datetime.fromtimestamp(since, UTC):%Y-%m-%d}" if period == "today"
                   else f"scalpdesk report --days {7 if period == '7d' else 30}")
            span = (f"{datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} – "
                    f"{datetime.fromtimestamp(self.at, UTC):%Y-%m-%d %H:%M} UTC")
        return (f"{label}: {span} · start equity {money(self.start_equity)} USDT (the paper_equity setting) · "
                f"the figures of `{cmd}`")

    def _show(self) -> None:
        report = self.reports.get(self.period)
        self.view.show(report, self.heading(self.period, report), self.error)

    def action_period(self, period: str) -> None:
        self.query_one("#stats-periods", Tabs).active = f"period-{period}"

    @on(Tabs.TabActivated, "#stats-periods")
    def _tab(self, event: Tabs.TabActivated) -> None:
        event.stop()
        period = str(event.tab.id).removeprefix("period-")
        if period != self.period:
            self.period = period
            self._show()

    def action_curve(self) -> None:
        self.query_one("#stats-body", VerticalScroll).scroll_to_widget(self.view.chart, animate=False, top=True)

    def action_top(self) -> None:
        self.query_one("#stats-body", VerticalScroll).scroll_home(animate=False)

    def action_close(self) -> None:
        self.dismiss(None)
