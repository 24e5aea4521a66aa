"""Modal screens: a confirmation, the help with every key, a decision (or a trade and
its decisions) in full, the journal and the statistics."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static, Tab, Tabs

from engine.models import DecisionRecord, SymbolFeatures, Trade
from engine.report import DAY, Report, build_report, money, pct, write_csv
from widgets import format as fmt
from widgets.footer import KeysFooter
from widgets.journal import ALL, JournalTable, day_of, matches
from widgets.statistics import StatisticsView


class ConfirmScreen(ModalScreen[bool]):
    """Ask before doing something that moves money. y confirms, n / Esc cancel.

    Enter does not confirm: pressed out of habit (it opens a decision's details) it must
    not close a position. With `require`, the operator types that word (AUTO on a live
    venue) and presses Enter.
    """

    BINDINGS = [
        Binding("y", "confirm", "Confirm", show=False),
        Binding("n", "cancel", "Cancel", show=False),
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, title: str, lines: Iterable[str], *, require: str = "", danger: bool = False,
                 confirm: str = "confirm") -> None:
        super().__init__(classes="-danger" if danger else "")
        self.title_text = title
        self.lines = list(lines)
        self.require = require
        self.confirm_word = confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title", markup=False)
            yield Static("\n".join(self.lines), id="dialog-body", markup=False)
            if self.require:
                yield Label(f"Type {self.require} and press Enter to {self.confirm_word}.", id="dialog-require",
                            markup=False)
                yield Input(placeholder=self.require, id="dialog-input")
                yield Label("", id="dialog-error", markup=False)
                yield Label(f"Enter {self.confirm_word} · Esc cancel", classes="dialog-keys", markup=False)
            else:
                yield Label(f"y {self.confirm_word} · n / Esc cancel", classes="dialog-keys", markup=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # With a typed confirmation, y does not confirm by itself.
        return not (self.require and action == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip() == self.require:
            self.dismiss(True)
        else:
            error = self.query_one("#dialog-error", Label)
            error.update(f"That is not {self.require}: nothing was changed. Esc cancels.")
            error.add_class("-shown")
            event.input.value = ""


class ChoiceScreen(ModalScreen[str | None]):
    """Ask which of a few things to do: each choice has its key (y for the usual one);
    n / Esc do none of them. Enter chooses nothing, as in ConfirmScreen."""

    BINDINGS = [
        Binding("n", "cancel", "Cancel", show=False),
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, title: str, lines: Iterable[str], choices: list[tuple[str, str, str]], *,
                 danger: bool = False) -> None:
        """choices: (key, what it does, the value dismissed with)."""
        super().__init__(classes="-danger" if danger else "")
        self.title_text = title
        self.lines = list(lines)
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title", markup=False)
            yield Static("\n".join(self.lines), id="dialog-body", markup=False)
            keys = [f"{key:<8} {what}" for key, what, _ in self.choices] + [f"{'n / Esc':<8} cancel"]
            yield Label("\n".join(keys), classes="dialog-keys", markup=False)

    def on_key(self, event: events.Key) -> None:
        for key, _, value in self.choices:
            if event.character == key:
                event.stop()
                self.dismiss(value)
                return

    def action_cancel(self) -> None:
        self.dismiss(None)


# (keys, what they do) for the parts of the screen, in the order the help lists them.
Section = tuple[str, list[tuple[str, str]]]


def binding_rows(bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for b in bindings:
        if not isinstance(b, Binding):
            continue
        keys = ", ".join(_key_name(k) for k in b.key.split(","))
        rows.append((keys, b.tooltip or b.description))
    return rows


def _key_name(key: str) -> str:
    key = key.strip()
    return {"question_mark": "?", "enter": "Enter", "escape": "Esc", "ctrl+q": "Ctrl+Q"}.get(key, key)


class HelpScreen(ModalScreen[None]):
    """Every key, by where it works. Built from the bindings themselves, so it never drifts."""

    BINDINGS = [
        Binding("escape", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, sections: list[Section]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Label("scalpdesk keys", id="help-title")
            width = max((len(k) for _, rows in self.sections for k, _ in rows), default=0)
            for title, rows in self.sections:
                yield Label(title, classes="help-section", markup=False)
                # Two columns; a long description wraps under itself, not under the keys.
                grid = Table.grid(padding=(0, 2))
                grid.add_column(no_wrap=True, min_width=min(width, 24))
                grid.add_column(ratio=1)
                for keys, what in rows:
                    grid.add_row(keys, what)
                yield Static(grid, classes="help-keys")
            yield Label("Esc, ? or q closes this help.", classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)


class DecisionScreen(ModalScreen[None]):
    """A decision in full: what was proposed, what the guardrails made of it, what
    became of it, the market it saw and the decider's audit data.

    With `trade` (Enter in the journal): the closed trade first, then the decision that
    opened it and the one that closed it, where there was one."""

    BINDINGS = [
        Binding("escape", "close", "Close", show=False),
        Binding("enter", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, record: DecisionRecord | None, inputs: SymbolFeatures | None = None,
                 expires_in: float | None = None, *, trade: Trade | None = None,
                 closing: DecisionRecord | None = None, closing_inputs: SymbolFeatures | None = None) -> None:
        super().__init__()
        self.record = record
        self.inputs = inputs
        self.expires_in = expires_in
        self.trade = trade
        self.closing = closing
        self.closing_inputs = closing_inputs

    def title_line(self) -> str:
        t = self.trade
        if t is not None:
            return (f"{t.symbol} {t.side} · {t.reason.value} · {fmt.money(t.pnl, signed=True)} USDT "
                    f"({fmt.signed_pct(t.roi_pct, 2)} on margin)")
        assert self.record is not None
        d = self.record.decision
        return f"{d.symbol} {d.action.value} · confidence {d.confidence:.2f} · {d.source}"

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Label(self.title_line(), id="detail-title", markup=False)
            for title, body in self.sections():
                if body is None:  # a part of a trade's detail: the opening or the closing decision
                    yield Label(title, classes="detail-part", markup=False)
                    continue
                yield Label(title, classes="detail-section", markup=False)
                yield Static(body, classes="detail-body", markup=False)
            yield Label("Esc closes · arrows and PgUp/PgDn scroll", classes="dialog-keys")

    def sections(self) -> list[tuple[str, str | None]]:
        """(title, body) in order; a body of None heads a part (a trade's decisions)."""
        t = self.trade
        if t is None:
            assert self.record is not None
            return list(decision_sections(self.record, self.inputs, self.expires_in))
        out: list[tuple[str, str | None]] = [("Trade", _trade_lines(t))]
        rec = self.record
        if rec is not None:
            out.append((f"Opened by {rec.decision.action.value} at {fmt.clock(rec.recorded_at)} UTC "
                        f"({rec.decision.decision_id})", None))
            out += decision_sections(rec, self.inputs, None)
        else:
            why = ("an adopted position: found on the venue, opened by no decision of this engine" if t.adopted
                   or not t.decision_id else f"decision {t.decision_id} is not in the history files "
                   "(past the retention period, or they were removed)")
            out.append(("Opened by: no decision record", None))
            out.append(("Why", why))
        if self.closing is not None:
            c = self.closing
            out.append((f"Closed by {c.decision.action.value} at {fmt.clock(c.recorded_at)} UTC "
                        f"({c.decision.decision_id})", None))
            out += decision_sections(c, self.closing_inputs, None)
        elif t.close_decision_id:
            out.append((f"Closed by decision {t.close_decision_id}: not in the history files", None))
        return out

    def action_close(self) -> None:
        self.dismiss(None)


def _trade_lines(t: Trade) -> str:
    opened = datetime.fromtimestamp(t.opened_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    closed = datetime.fromtimestamp(t.closed_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"{t.side.upper()} {fmt.qty(t.qty)} {t.symbol} at {t.leverage:g}x · closed by {t.reason.value}",
        f"opened   {opened} UTC at {fmt.price(t.entry_price, t.symbol)}",
        f"closed   {closed} UTC at {fmt.price(t.exit_price, t.symbol)} · held {fmt.elapsed(t.duration_sec)}",
        f"PnL      {fmt.money(t.pnl, signed=True)} USDT net of {fmt.money(t.fees)} USDT fees · "
        f"ROI {fmt.signed_pct(t.roi_pct, 2)} on margin",
    ]
    if t.cooldown_sec is not None:
        lines.append(f"cooldown {fmt.duration(t.cooldown_sec)} after the close")
        if t.cooldown_why:  # the adaptive cooldown changed it
            lines.append(f"         {t.cooldown_why}")
    lines.append(f"intent   {t.intent_id or '— (adopted position)'}")
    return "\n".join(lines)


def decision_sections(r: DecisionRecord, inputs: SymbolFeatures | None,
                      expires_in: float | None) -> list[tuple[str, str | None]]:
    """A decision record in full, as sections of the detail screen."""
    d = r.decision
    out: list[tuple[str, str | None]] = []
    status = [f"status   {r.status}", f"outcome  {fmt.outcome(r) if r.status != 'PENDING' else 'waiting for approval'}"]
    if r.status == "PENDING" and expires_in is not None:
        status.append(f"expires  in {fmt.countdown(expires_in)}" if expires_in > 0 else "expires  expired")
    status.append(f"at       {fmt.clock(r.recorded_at)} UTC (decided {fmt.clock(d.created_at)})")
    if r.message:
        status.append(f"message  {r.message}")
    if r.intent_id:
        status.append(f"intent   {r.intent_id}")
    status.append(f"id       {d.decision_id}")
    out.append(("Outcome", "\n".join(status)))
    out.append(("Rationale", d.rationale or "(none given)"))
    if d.flags:
        out.append(("Flags", "\n".join(d.flags)))

    def params(x) -> list[tuple[str, str]]:
        return [
            ("leverage", _num(x.leverage, "x")),
            ("size", _num(x.size_pct, "% of equity")),
            ("take profit", _num(x.tp_pct, "%")),
            ("stop loss", _num(x.sl_pct, "%")),
            ("time limit", fmt.duration(x.time_in_trade_limit_sec) if x.time_in_trade_limit_sec else "default"),
            ("cooldown", fmt.duration(x.cooldown_sec) if x.cooldown_sec is not None else "default"),
            ("trail at ROI", _num(x.trail_activation_roi, "%")),
        ]

    review = r.review
    if review is None:
        out.append(("As proposed", "\n".join(f"{k:<13} {v}" for k, v in params(d))))
    else:
        lines = [f"verdict  {fmt.verdict(r)}"]
        lines += [f"  {line}" for line in review.detail]
        out.append(("Guardrails", "\n".join(lines)))
        table = [f"{'':<13} {'as proposed':<18} as it runs"] + [
            f"{k:<13} {v:<18} {w if w != v else '='}" for (k, v), (_, w) in zip(params(d), params(review.decision))
        ]
        out.append(("Parameters", "\n".join(table)))
        if review.clamps:
            out.append(("Clamps", "\n".join(
                f"{c.field}: {_num(c.original)} → {_num(c.value)}  {c.why}" for c in review.clamps)))
        if review.order is not None:
            o = review.order
            out.append(("Order", "\n".join([
                f"{o.side} {fmt.qty(o.qty)} {o.symbol} @ ~{fmt.price(o.price, o.symbol)}, {o.leverage:g}x",
                f"margin {fmt.money(o.margin)} USDT, notional {fmt.money(o.notional)} USDT",
                f"TP {fmt.price(o.take_profit, o.symbol)} · SL {fmt.price(o.stop_loss, o.symbol)}",
            ])))
    if inputs is not None:
        out.append(("Inputs it saw", _features(inputs)))
    else:
        out.append(("Inputs it saw", "not kept for this decision (the console keeps the market each "
                    "decision saw while it runs; older ones are not in the engine's records)"))
    audit = {k: v for k, v in r.audit.items() if k != "raw"}
    if audit:
        out.append(("Audit", "\n".join(f"{k}: {_short(v)}" for k, v in audit.items())))
    if r.audit.get("raw"):
        out.append(("Raw answer", _short(r.audit["raw"], 2000)))
    return out


def _num(v: float | None, unit: str = "") -> str:
    return "auto" if v is None else f"{v:g}{unit}"


def _short(v: object, limit: int = 300) -> str:
    text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _features(f: SymbolFeatures) -> str:
    trend = lambda t: {1: "up", -1: "down"}.get(t, "flat")  # noqa: E731
    return "\n".join([
        f"price {fmt.price(f.price, f.symbol)}  bid {fmt.price(f.bid, f.symbol)}  ask {fmt.price(f.ask, f.symbol)}"
        f"  spread {f.spread_pct:.4f}%"
        f"  funding {f.funding_rate:+.4%}",
        f"returns   1m {f.ret_1m_pct:+.2f}%  5m {f.ret_5m_pct:+.2f}%  15m {f.ret_15m_pct:+.2f}%  1h {f.ret_1h_pct:+.2f}%",
        f"ATR(14)   1m {f.atr_pct_1m:.3f}%  5m {f.atr_pct_5m:.3f}%   last 1m range {f.last_range_1m_pct:.3f}%",
        f"RSI(14)   1m {f.rsi_1m:.0f}  5m {f.rsi_5m:.0f}",
        f"trend     1m {trend(f.trend_1m)}  5m {trend(f.trend_5m)}  15m {trend(f.trend_15m)}"
        f"   EMA slope 1m {f.ema_slope_1m:+.3f}%  5m {f.ema_slope_5m:+.3f}%  15m {f.ema_slope_15m:+.3f}%",
        f"volume    {f.volume_change_pct:+.0f}% (last 5 min against the 20 before)",
    ])


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
