"""AI decisions: the ones waiting for the operator first, then the recent history.

y / n answer the pending decision under the pending table's cursor; Enter on any
row asks for the decision in full. The panel only renders and forwards keys: the
app asks the engine and the answer comes back as a DecisionEvent.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Label

from engine.models import Action, DecisionRecord
from widgets import format as fmt
from widgets.titles import set_border_title
from widgets.table import KeyedTable, Stamp

HISTORY_ROWS = 200
URGENT_SEC = 30  # the time left to approve turns urgent
HIDDEN = {"HOLD"}  # a HOLD changes nothing: it is in the engine's records, not here


class DecisionTable(KeyedTable):
    # DataTable's own Enter binding is hidden from the Footer; this one says what it does.
    BINDINGS = [Binding("enter", "select_cursor", "Details", tooltip="The decision in full: rationale, clamps, inputs")]
    COMPONENT_CLASSES = {
        "decisions--long",
        "decisions--short",
        "decisions--close",
        "decisions--left",
        "decisions--urgent",
        "decisions--expired",
        "decisions--sending",
        "decisions--good",
        "decisions--bad",
        "decisions--warn",
        "decisions--quiet",
        "decisions--muted",
    }

    def text(self, value: str, style: str = "") -> Text:
        s = self.cell_style(f"decisions--{style}") if style else ""
        return Text(value, style=s, end="")

    def action_text(self, action: Action) -> Text:
        style = {"OPEN_LONG": "long", "OPEN_SHORT": "short"}.get(action.value, "close")
        return self.text(action.value, style)


class PendingTable(DecisionTable):
    # Fixed widths: columns that never jump as rows come and go (and a frame that does
    # not depend on when a width was recomputed); only the last column sizes itself.
    COLUMNS = (
        ("left", "Left", 9),
        ("symbol", "Symbol", 12),
        ("action", "Action", 10),
        ("conf", "Conf", 4),
        ("size", "Size × Lev", 11),
        ("tpsl", "TP / SL", 13),
        ("limit", "Limit", 5),
        ("verdict", "Verdict", 9),
        ("reasons", "Reasons", None),
    )


class HistoryTable(DecisionTable):
    COLUMNS = (
        ("time", "Time", 8),
        ("symbol", "Symbol", 12),
        ("action", "Action", 10),
        ("outcome", "Outcome", 30),
        ("conf", "Conf", 4),
        ("size", "Size × Lev", 11),
        ("tpsl", "TP / SL", None),
    )


class DecisionsPanel(Vertical):
    """Pending decisions with the time left to approve, then what became of the others."""

    BINDINGS = [
        Binding("y", "approve", "Approve", tooltip="Approve the pending decision under the cursor"),
        Binding("n", "reject", "Reject", tooltip="Reject the pending decision under the cursor"),
    ]

    class Approve(Message):
        def __init__(self, record: DecisionRecord, expires_at: float) -> None:
            super().__init__()
            self.record = record
            self.expires_at = expires_at

    class Reject(Message):
        def __init__(self, record: DecisionRecord) -> None:
            super().__init__()
            self.record = record

    class Details(Message):
        def __init__(self, record: DecisionRecord, expires_at: float | None) -> None:
            super().__init__()
            self.record = record
            self.expires_at = expires_at

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("-none-pending", update=False)  # the count at mount finds the class set (no second styling)
        self.records: dict[str, DecisionRecord] = {}
        self.expires: dict[str, float] = {}  # pending decision id -> when it expires
        self.sending: dict[str, str] = {}  # pending decision id -> "approving…" / "rejecting…"
        self.now = 0.0

    def compose(self) -> ComposeResult:
        self._pending = PendingTable(id="pending-table")
        self._history = HistoryTable(id="history-table")
        yield self._pending
        yield Label("No decision waiting for approval · r runs a decision cycle now.", id="no-pending", classes="empty")
        yield Label("History", classes="subtitle")
        yield self._history

    def on_mount(self) -> None:
        self._counted()

    @property
    def pending(self) -> PendingTable:
        return self._pending

    @property
    def history(self) -> HistoryTable:
        return self._history

    @property
    def pending_ids(self) -> list[str]:
        return self.pending.keys()

    # --- feeding ---------------------------------------------------------------

    def decision(self, record: DecisionRecord, expires_at: float | None, now: float, from_store: bool = False) -> None:
        """A decision was queued, executed, blocked, rejected, expired or failed."""
        self.now = now
        did = record.decision.decision_id
        if record.status in HIDDEN:
            return
        if from_store and did in self.records:
            return  # what the engine said since start is newer than the file
        self.records[did] = record
        if record.status == "PENDING" and expires_at is not None:
            self.expires[did] = expires_at
            self._pending_row(record)
        else:
            self.expires.pop(did, None)
            self.sending.pop(did, None)
            self.pending.drop_row(did)
            self._history_row(record)
        self._counted()

    def keep_pending(self, decision_ids: set[str]) -> None:
        """Only these are still pending (the engine's picture after an attach): drop the rest."""
        for did in [d for d in self.expires if d not in decision_ids]:
            self.expires.pop(did, None)
            self.sending.pop(did, None)
            self.pending.drop_row(did)
        self._counted()

    def tick(self, now: float) -> None:
        self.now = now
        for did in self.expires:
            self.pending.set_cell(did, "left", self._left_cell(did))

    def mark_sending(self, decision_id: str, what: str) -> None:
        if decision_id in self.expires:
            self.sending[decision_id] = what
            self.pending.set_cell(decision_id, "left", self._left_cell(decision_id))

    def answer_failed(self, decision_id: str) -> None:
        if self.sending.pop(decision_id, None) is not None and decision_id in self.expires:
            self.pending.set_cell(decision_id, "left", self._left_cell(decision_id))

    def seconds_left(self, decision_id: str) -> float:
        return self.expires.get(decision_id, self.now) - self.now

    # --- keys ------------------------------------------------------------------

    def _selected(self) -> DecisionRecord | None:
        key = self.pending.cursor_key
        return self.records.get(key) if key is not None else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "reject"):
            return True if self.expires else None  # shown dimmed while nothing waits
        return True

    def action_approve(self) -> None:
        record = self._selected()
        if record is not None:
            did = record.decision.decision_id
            self.post_message(self.Approve(record, self.expires.get(did, self.now)))

    def action_reject(self) -> None:
        record = self._selected()
        if record is not None:
            self.post_message(self.Reject(record))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        record = self.records.get(str(event.row_key.value))
        if record is not None:
            did = record.decision.decision_id
            self.post_message(self.Details(record, self.expires.get(did)))

    # --- rendering -------------------------------------------------------------

    def _counted(self) -> None:
        n = len(self.expires)
        title = f"Decisions · {n} pending" if n else "Decisions"
        set_border_title(self, title)
        if self.has_class("-pending") != (n > 0) or self.has_class("-none-pending") != (n == 0):
            self.set_class(n == 0, "-none-pending")
            self.set_class(n > 0, "-pending")
            self.refresh_bindings()  # y / n light up in the Footer

    def _left_cell(self, did: str) -> Text:
        t = self.pending
        if did in self.sending:
            return t.text(self.sending[did], "sending")
        left = self.seconds_left(did)
        if left <= 0:
            return t.text("expired", "expired")
        return t.text(fmt.countdown(left), "urgent" if left <= URGENT_SEC else "left")

    def _common(self, t: DecisionTable, record: DecisionRecord) -> dict[str, Text]:
        d = record.decision
        return {
            "symbol": t.text(d.symbol),
            "action": t.action_text(d.action),
            "conf": t.text(f"{d.confidence:.2f}"),
            "size": t.text(fmt.size_lev(record)),
            "tpsl": t.text(fmt.tp_sl(record)),
        }

    def _pending_row(self, record: DecisionRecord) -> None:
        t = self.pending
        did = record.decision.decision_id
        cells = self._common(t, record)
        cells["left"] = self._left_cell(did)
        cells["limit"] = t.text(fmt.time_limit(record))
        cells["verdict"] = t.text(fmt.verdict(record), "good")
        cells["reasons"] = t.text(fmt.reasons(record), "muted")
        t.set_row(did, cells)

    def _history_row(self, record: DecisionRecord) -> None:
        t = self.history
        did = record.decision.decision_id
        cells = self._common(t, record)
        cells["time"] = Stamp(fmt.clock(record.recorded_at), record.recorded_at, end="")
        cells["outcome"] = t.text(fmt.truncate(fmt.outcome(record), 60), fmt.outcome_kind(record))
        added = t.set_row(did, cells)
        if added:
            t.sort_by_stamp("time", follow=t.has_focus)
            while t.row_count > HISTORY_ROWS:
                oldest = t.keys()[-1]
                t.drop_row(oldest)
                self.records.pop(oldest, None)
