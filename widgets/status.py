"""The status bar: mode, venue, engine health, money, positions, next cycle, clock.

Every field is a reactive attribute; a watcher rewrites only that field's label,
so a ticking clock repaints eight cells, not the bar.
"""

from __future__ import annotations

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.widgets import Label

from widgets import format as fmt

VENUES = ("sim", "paper", "testnet", "demo", "live")
# Where the marks come from (EngineState.feed): a live stream (or the local sim market),
# REST polling while no stream is live, a stream silent too long. Empty: no ticking marks.
FEEDS = {"live": "● live", "polling": "◐ polling", "stale": "○ stale"}


class StatusBar(Vertical):
    """Two lines that say, at a glance, what the engine is doing with whose money."""

    mode: var[str] = var("approve", init=False)
    venue: var[str] = var("sim", init=False)
    feed: var[str] = var("", init=False)
    paused: var[bool] = var(False, init=False)
    degraded: var[str] = var("", init=False)
    pause_reason: var[str] = var("", init=False)  # a risk limit paused entries (MAX_DRAWDOWN), and why
    pending: var[int] = var(0, init=False)
    clock: var[str] = var("", init=False)
    equity: var[float | None] = var(None, init=False)
    available: var[float | None] = var(None, init=False)
    realised: var[float | None] = var(None, init=False)
    trades: var[int | None] = var(None, init=False)
    positions: var[int] = var(0, init=False)
    next_cycle: var[str] = var("—", init=False)
    usage: var[str] = var("", init=False)
    usage_stopped: var[bool] = var(False, init=False)
    detached: var[str] = var("", init=False)  # why the console has no engine now ("" attached)

    def compose(self) -> ComposeResult:
        # Labels kept by id: the timer may paint while the app is being taken down,
        # when a query would no longer find them.
        self.labels: dict[str, Label] = {}

        def label(ident: str, text: str = "", classes: str = "") -> Label:
            self.labels[ident] = Label(text, id=ident, classes=classes, markup=False)
            return self.labels[ident]

        with Horizontal(id="status-top"):
            for name in ("mode", "venue", "feed", "state", "pending", "clock"):
                yield label(f"st-{name}")
        with Horizontal(id="status-bottom"):
            for name, caption in (
                ("equity", "Equity"),
                ("avail", "Avail"),
                ("pnl", "Today"),
                ("positions", "Pos"),
                ("next", "Next cycle"),
                ("usage", "AI"),
            ):
                yield label(f"cap-{name}", caption, classes="caption")
                yield label(f"st-{name}", classes="value")
        # The reason the engine is degraded, in full, on a line of its own.
        yield label("st-alert")

    def on_mount(self) -> None:
        # Reactives set before mount fired no watcher: paint every field once.
        for name in ("mode", "venue", "feed", "paused", "pending", "equity", "available", "realised", "positions",
                     "next_cycle", "usage", "usage_stopped", "clock"):
            getattr(self, f"watch_{name}")()

    def _label(self, name: str) -> Label:
        return self.labels[f"st-{name}"]

    def watch_mode(self) -> None:
        self.set_class(self.mode == "auto", "-auto")
        label = self._label("mode")
        label.update(f" {self.mode.upper()} ")
        label.set_class(self.mode == "auto", "-auto")
        label.set_class(self.mode != "auto", "-approve")

    def watch_venue(self) -> None:
        self.set_class(self.venue == "live", "-live")
        label = self._label("venue")
        label.update(f" {self.venue.upper()} ")
        for v in VENUES:
            label.set_class(self.venue == v, f"-{v}")

    def watch_feed(self) -> None:
        label = self._label("feed")
        label.display = bool(self.feed)
        label.update(FEEDS.get(self.feed, self.feed))
        for f in FEEDS:
            label.set_class(self.feed == f, f"-{f}")

    def watch_paused(self) -> None:
        self._state()

    def watch_degraded(self) -> None:
        self._state()

    def watch_pause_reason(self) -> None:
        self._state()

    def watch_detached(self) -> None:
        self.set_class(bool(self.detached), "-detached")
        self._state()

    def _state(self) -> None:
        label = self._label("state")
        alert = self.labels["st-alert"]
        if self.detached:
            # What the console shows is the engine's last picture, not now.
            label.update(" NO ENGINE: reconnecting… ")
            for s in ("running", "paused", "degraded"):
                label.set_class(s == "degraded", f"-{s}")
            alert.update(f" The last picture, greyed: {self.detached}")
            alert.display = True
            return
        if self.degraded:
            # Degraded stops entries only: closes, time exits and trailing keep running.
            text, state = " DEGRADED: no new entries, exits run ", "degraded"
        elif self.paused:
            text, state = " PAUSED: no new entries, exits run ", "paused"
        else:
            text, state = " RUNNING ", "running"
        label.update(text)
        for s in ("running", "paused", "degraded"):
            label.set_class(s == state, f"-{s}")
        if self.degraded:
            alert.update(f" Entries stopped: {self.degraded}")
        elif self.pause_reason:
            alert.update(f" Entries paused: {self.pause_reason}; p resumes")
        else:
            alert.update("")
        alert.display = bool(self.degraded or self.pause_reason)

    def watch_pending(self) -> None:
        label = self._label("pending")
        label.update(f" {self.pending} PENDING " if self.pending else "")
        label.set_class(self.pending > 0, "-some")

    def watch_clock(self) -> None:
        self._label("clock").update(self.clock, layout=False)  # fixed width in the CSS

    def _value(self, name: str, text: str) -> Label:
        """Write a value whose label is as wide as its text: the screen is laid out again only
        when that width changes (the marks move equity and available every second)."""
        label = self._label(name)
        old = label.content
        label.update(text, layout=not isinstance(old, str) or cell_len(old) != cell_len(text))
        return label

    def watch_equity(self) -> None:
        self._value("equity", fmt.money(self.equity))

    def watch_available(self) -> None:
        self._value("avail", fmt.money(self.available))

    def watch_trades(self) -> None:
        self.watch_realised()

    def watch_realised(self) -> None:
        trades = f", {self.trades:,} trade{'' if self.trades == 1 else 's'}" if self.trades else ""
        label = self._value("pnl", fmt.money(self.realised, signed=True) + trades)
        value = self.realised or 0.0
        label.set_class(value > 0, "-profit")
        label.set_class(value < 0, "-loss")

    def watch_positions(self) -> None:
        self._value("positions", str(self.positions))

    def watch_next_cycle(self) -> None:
        self._label("next").update(self.next_cycle, layout=False)  # fixed width in the CSS

    def watch_usage(self) -> None:
        shown = bool(self.usage)
        self.labels["cap-usage"].display = shown
        label = self._label("usage")
        label.display = shown
        label.update(self.usage)

    def watch_usage_stopped(self) -> None:
        self._label("usage").set_class(self.usage_stopped, "-stopped")
