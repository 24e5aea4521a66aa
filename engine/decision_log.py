"""The decision journal: every decision record written to the store and told as a
DecisionEvent, a cycle's records written together, the newest kept for consoles."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from engine.clock import Clock
from engine.events import BaseEvent, DecisionEvent
from engine.models import DecisionRecord, DecisionStatus
from engine.store import StateStore

NEWEST = 100  # decisions a console gets when it attaches

Io = Callable[..., Awaitable[Any]]


class DecisionLog:
    def __init__(self, store: StateStore, clock: Clock, emit: Callable[[BaseEvent], None], io: Io) -> None:
        self.store = store
        self.clock = clock
        self.emit = emit
        self.io = io
        self._batch: dict[str, DecisionRecord] | None = None  # a cycle's new records, by decision id
        self._updates: dict[str, DecisionRecord] = {}  # and its updates of earlier ones
        self._newest: OrderedDict[str, DecisionEvent] = OrderedDict()  # by decision id, oldest first

    def newest(self) -> list[DecisionEvent]:
        return list(self._newest.values())

    def load(self, pending: set[str]) -> None:
        """The newest decisions from the journal (read once at start). A decision still
        PENDING there was left by a previous run: nobody can approve it now (blocking)."""
        records = self.store.decisions(limit=NEWEST)  # newest first
        for i, rec in enumerate(records):
            if rec.status == DecisionStatus.PENDING and rec.decision.decision_id not in pending:
                d = rec.decision
                rec = rec.model_copy(update={"status": DecisionStatus.EXPIRED,
                                             "message": f"{d.symbol} {d.action.value} EXPIRED: scalpdesk restarted"})
                self.store.update_decision(rec)
                records[i] = rec
        for rec in records:  # each older one goes in front: oldest first in the end
            did = rec.decision.decision_id
            if did in self._newest:
                continue
            self._newest[did] = DecisionEvent(ts=rec.recorded_at, level="debug", message=rec.message,
                                              code=rec.status, record=rec)
            self._newest.move_to_end(did, last=False)

    @asynccontextmanager
    async def cycle(self) -> AsyncIterator[None]:
        """A decision cycle's records, new ones and updates of earlier ones (a proposal a
        newer one replaced), are written together at its end: one append per history file."""
        self._batch, self._updates = {}, {}
        try:
            yield
        finally:
            batch, updates, self._batch, self._updates = self._batch, self._updates, None, {}
            if batch or updates:
                await self.io(self.store.add_decisions, list(batch.values()), list(updates.values()))

    async def record(self, record: DecisionRecord, level: str, expires_at: float | None = None,
                     update: bool = False) -> None:
        """Write a record (update: replace the earlier record of the same decision) and tell it."""
        did = record.decision.decision_id
        if self._batch is not None:
            if update and did not in self._batch:
                self._updates[did] = record
            else:
                self._batch[did] = record  # new, or a new one changed before it was written
        elif update:
            await self.io(self.store.update_decision, record)
        else:
            await self.io(self.store.add_decision, record)
        event = DecisionEvent(ts=self.clock.now(), level=level, message=record.message,  # type: ignore[arg-type]
                              code=record.status, record=record, expires_at=expires_at)
        self._newest.pop(did, None)
        self._newest[did] = event
        while len(self._newest) > NEWEST:
            self._newest.popitem(last=False)
        self.emit(event)
