"""The approval queue (APPROVE mode): decisions waiting for an operator, each with the
time it expires, one per symbol, each with its own expiry timer on the engine's clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

from engine.models import DecisionRecord
from engine.timers import Timers

HOUSEKEEPING = 10  # the timers' priority of an expiry (exits and cycles first)


@dataclass
class Pending:
    """A decision waiting for the operator in APPROVE mode."""

    record: DecisionRecord
    expires_at: float


class ApprovalQueue(Mapping[str, Pending]):
    """Pending decisions by decision id, oldest first."""

    def __init__(self, timers: Timers, on_due: Callable[[], Awaitable[object]]) -> None:
        self._timers = timers
        self._on_due = on_due
        self._items: dict[str, Pending] = {}

    def __getitem__(self, decision_id: str) -> Pending:
        return self._items[decision_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, record: DecisionRecord, expires_at: float) -> None:
        did = record.decision.decision_id
        self._items[did] = Pending(record, expires_at)
        self._timers.at(f"expiry:{did}", expires_at, self._on_due, priority=HOUSEKEEPING)

    def remove(self, decision_id: str) -> Pending | None:
        """Take a decision off the queue, with its expiry timer."""
        self._timers.cancel(f"expiry:{decision_id}")
        return self._items.pop(decision_id, None)

    def for_symbol(self, symbol: str) -> list[Pending]:
        return [p for p in self._items.values() if p.record.decision.symbol == symbol]

    def due(self, now: float) -> list[Pending]:
        return [p for p in self._items.values() if now >= p.expires_at]
