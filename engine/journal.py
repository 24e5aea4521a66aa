"""Read the journal (closed trades) and decision records of a state directory read-only,
without its lock.

A running engine holds the directory's lock and keeps writing; the report must not wait
for it nor disturb it. History files are append-only logs of whole lines (engine.historylog):
a reader sees every line written before it read, and ignores a line still being written. The records are validated with the store's own
loader and models: a damaged file stops the read with StoreCorrupt naming it.
"""

from __future__ import annotations

from pathlib import Path

from collections.abc import Iterable

from engine.models import DecisionRecord, Trade
from engine.store import HISTORY_DIR, HISTORY_TABLES, StoreCorrupt, StoreError, _load, _parse, _part, history_files


def _hour_files(history: Path, since: float | None, until: float | None) -> list[Path]:
    """History files whose UTC hour can hold a trade closed in [since, until), oldest first."""
    first = None if since is None else _part(since)
    last = None if until is None else _part(until)
    return [p for p in history_files(history)
            if (first is None or p.stem >= first) and (last is None or p.stem <= last)]


def read_journal(state_dir: Path, since: float | None = None, until: float | None = None) -> list[Trade]:
    """Every trade closed in [since, until) (None: unbounded), in close order.

    Raises StoreError when the directory is missing, StoreCorrupt (naming the file)
    when a history file does not load or a journal record does not validate.
    """
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        what = "not a directory" if state_dir.exists() else "no such state directory"
        raise StoreError(f"{state_dir}: {what}")
    history = state_dir / HISTORY_DIR
    if not history.is_dir():
        return []
    spec = HISTORY_TABLES["journal"]
    trades: list[tuple[Trade, str, int]] = []
    for path in _hour_files(history, since, until):
        data = _load(path) or {}  # a file deleted by cleanup meanwhile is None: nothing in it
        table = data.get("journal") or {}
        for doc_id, doc in table.items():
            t: Trade = _parse(path, "journal", spec, doc_id, doc)
            # The hour pruning above relies on this, as the store's reads do.
            try:
                hour = _part(t.closed_at)
            except (ValueError, OverflowError, OSError):
                hour = "out of range"
            if hour != path.stem:
                raise StoreCorrupt(path, f"table 'journal' document {doc_id} is dated {hour}, not {path.stem}")
            if (since is None or t.closed_at >= since) and (until is None or t.closed_at < until):
                trades.append((t, path.stem, int(doc_id)))
    trades.sort(key=lambda x: (x[0].closed_at, x[1], x[2]))
    return [t for t, _, _ in trades]


def read_decisions(state_dir: Path, ids: Iterable[str], since: float | None = None,
                   until: float | None = None) -> dict[str, DecisionRecord]:
    """The decision records with these decision ids, recorded in [since, until] (None:
    unbounded; the bounds pick the hourly files read), by id. An id not found is left out.

    Raises StoreError and StoreCorrupt as read_journal does."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        what = "not a directory" if state_dir.exists() else "no such state directory"
        raise StoreError(f"{state_dir}: {what}")
    wanted = set(ids)
    history = state_dir / HISTORY_DIR
    found: dict[str, DecisionRecord] = {}
    if not wanted or not history.is_dir():
        return found
    spec = HISTORY_TABLES["decisions"]
    for path in reversed(_hour_files(history, since, until)):  # newest first: stop when all are found
        data = _load(path) or {}
        for doc_id, doc in (data.get("decisions") or {}).items():
            did = (doc.get("decision") or {}).get("decision_id") if isinstance(doc.get("decision"), dict) else None
            if did in wanted and did not in found:
                found[did] = _parse(path, "decisions", spec, doc_id, doc)
        if len(found) == len(wanted):
            break
    return found
