"""Modal screens: a confirmation, the help with every key, a decision in full."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from engine.models import DecisionRecord, SymbolFeatures
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
    became of it, the market it saw and the decider's audit data."""

    BINDINGS = [
        Binding("escape", "close", "Close", show=False),
        Binding("enter", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, record: DecisionRecord, inputs: SymbolFeatures | None = None,
                 expires_in: float | None = None) -> None:
        super().__init__()
        self.record = record
        self.inputs = inputs
        self.expires_in = expires_in

    def compose(self) -> ComposeResult:
        r = self.record
        d = r.decision
        with VerticalScroll(id="detail"):
            yield Label(f"{d.symbol} {d.action.value} · confidence {d.confidence:.2f} · {d.source}",
                        id="detail-title", markup=False)
            for title, body in self.sections():
                yield Label(title, classes="detail-section", markup=False)
                yield Static(body, classes="detail-body", markup=False)
            yield Label("Esc closes · arrows and PgUp/PgDn scroll", classes="dialog-keys")

    def sections(self) -> list[tuple[str, str]]:
        r = self.record
        d = r.decision
        out: list[tuple[str, str]] = []
        status = [f"status   {r.status}", f"outcome  {fmt.outcome(r) if r.status != 'PENDING' else 'waiting for approval'}"]
        if r.status == "PENDING" and self.expires_in is not None:
            status.append(f"expires  in {fmt.countdown(self.expires_in)}" if self.expires_in > 0 else "expires  expired")
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
                    f"{o.side} {fmt.qty(o.qty)} {o.symbol} @ ~{fmt.price(o.price)}, {o.leverage:g}x",
                    f"margin {fmt.money(o.margin)} USDT, notional {fmt.money(o.notional)} USDT",
                    f"TP {fmt.price(o.take_profit)} · SL {fmt.price(o.stop_loss)}",
                ])))
        if self.inputs is not None:
            out.append(("Inputs it saw", _features(self.inputs)))
        else:
            out.append(("Inputs it saw", "not kept for this decision (the console keeps the market each "
                        "decision saw while it runs; older ones are not in the engine's records)"))
        audit = {k: v for k, v in r.audit.items() if k != "raw"}
        if audit:
            out.append(("Audit", "\n".join(f"{k}: {_short(v)}" for k, v in audit.items())))
        if r.audit.get("raw"):
            out.append(("Raw answer", _short(r.audit["raw"], 2000)))
        return out

    def action_close(self) -> None:
        self.dismiss(None)


def _num(v: float | None, unit: str = "") -> str:
    return "auto" if v is None else f"{v:g}{unit}"


def _short(v: object, limit: int = 300) -> str:
    text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _features(f: SymbolFeatures) -> str:
    trend = lambda t: {1: "up", -1: "down"}.get(t, "flat")  # noqa: E731
    return "\n".join([
        f"price {fmt.price(f.price)}  bid {fmt.price(f.bid)}  ask {fmt.price(f.ask)}  spread {f.spread_pct:.4f}%"
        f"  funding {f.funding_rate:+.4%}",
        f"returns   1m {f.ret_1m_pct:+.2f}%  5m {f.ret_5m_pct:+.2f}%  15m {f.ret_15m_pct:+.2f}%  1h {f.ret_1h_pct:+.2f}%",
        f"ATR(14)   1m {f.atr_pct_1m:.3f}%  5m {f.atr_pct_5m:.3f}%   last 1m range {f.last_range_1m_pct:.3f}%",
        f"RSI(14)   1m {f.rsi_1m:.0f}  5m {f.rsi_5m:.0f}",
        f"trend     1m {trend(f.trend_1m)}  5m {trend(f.trend_5m)}  15m {trend(f.trend_15m)}"
        f"   EMA slope 1m {f.ema_slope_1m:+.3f}%  5m {f.ema_slope_5m:+.3f}%  15m {f.ema_slope_15m:+.3f}%",
        f"volume    {f.volume_change_pct:+.0f}% (last 5 min against the 20 before)",
    ])
