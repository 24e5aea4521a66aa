"""Dialogs: a confirmation, a choice, the help with every key, and a decision (or a trade
and its decisions) in full. Imported with the console; the journal and the statistics
(app.screens) only when they are first opened."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from rich.table import Table
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from engine.models import DecisionRecord, SymbolFeatures, Trade
from widgets import format as fmt


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
        self._texts: tuple[Label, Static, Label] | None = None  # once composed, for ask()

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            title = Label(self.title_text, id="dialog-title", markup=False)
            body = Static("\n".join(self.lines), id="dialog-body", markup=False)
            yield title
            yield body
            if self.require:
                yield Label(f"Type {self.require} and press Enter to {self.confirm_word}.", id="dialog-require",
                            markup=False)
                yield Input(placeholder=self.require, id="dialog-input")
                yield Label("", id="dialog-error", markup=False)
                yield Label(f"Enter {self.confirm_word} · Esc cancel", classes="dialog-keys", markup=False)
            else:
                keys = Label(self._keys_line(), classes="dialog-keys", markup=False)
                self._texts = (title, body, keys)
                yield keys

    def _keys_line(self) -> str:
        return f"y {self.confirm_word} · n / Esc cancel"

    def ask(self, title: str, lines: Iterable[str], *, danger: bool = False, confirm: str = "confirm") -> ConfirmScreen:
        """Put another question in this dialog (one without a typed word). The console keeps one
        composed and styled, off screen, for the confirmations a trader needs at once (force
        close): opening it then lays out and paints three texts, where a new dialog is composed,
        mounted and styled first."""
        if self.require:
            raise ValueError("a confirmation with a typed word is made new each time")
        self.title_text, self.lines, self.confirm_word = title, list(lines), confirm
        self.set_class(danger, "-danger")
        if self._texts is not None:
            title_label, body, keys = self._texts
            title_label.update(title)
            body.update("\n".join(self.lines))
            keys.update(self._keys_line())
        return self

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Called before Screen's own handler, which restyles every node of the screen when
        # resumed. A confirmation without a typed word (the kept one, or a new one) was styled
        # when it was mounted, and ask() restyles what its class changes; the styles cannot
        # change otherwise (the console has no theme or CSS to switch). With a typed word, the
        # Input's focus changes its styles: Textual's restyle stays.
        if self._texts is not None:
            event.refresh_styles = False
            # Shown again, the dialog is laid out (its texts changed) before Screen's repaint
            # of the whole of it, and that layout drew the changed texts alone first, over
            # what the terminal showed (the desk). Dirty from the start, the layout's frame
            # is the whole dialog, and the repaint after it has nothing left to send.
            # (Screen._dirty_widgets: relies on the pinned Textual, as the footer does.)
            self._dirty_widgets.add(self)

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
