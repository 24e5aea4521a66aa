"""The history files' format: TinyDB over an append-only log of JSON lines.

One UTC hour of decisions and trades is one file, `history/YYYY-MM-DDTHH.jsonl`, one
line per written document:

    {"table": "decisions", "id": 12, "doc": {...}}

A document written again (a decision whose status changed) is a new line with the same
id; the last line of an id wins. TinyDB reads and writes a storage whole (read() and
write(data) of every table), so a JSON-file storage rewrites the hour on every insert: at a
5-second cycle over 10 symbols that is 2–3 MB per write by the end of the hour, and it was
the decision cycle's whole cost (p99 1.7 s). AppendLogStorage keeps the tables in memory
and appends to the file only the documents added or replaced: a cycle's records are one
append (and one fsync), whatever the hour already holds.

Crash safety: each write is one os.write of whole lines, then fsync. A crash can cut the
last line short (a write that never returned, so nothing acknowledged): a last line
without its newline is a torn tail, ignored by readers and cut off by the next writer
before it appends. Anything else that does not parse is damage: StoreCorrupt, and the
file is left as it was found.

TinyDB's tables change their storage through Table._update_table, which rebuilds the
whole table twice and hands the storage all of it (O(records) per insert: 11 ms at 6,000
records, as much again to find what changed). HistoryTable inserts and replaces by giving
the storage just the new documents, and refuses TinyDB's in-place update and remove:
history is only ever added to, and pruned a whole file at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from engine.fileio import append, cut_torn_tail, fsync_dir
from engine.storeerrors import StoreCorrupt, StoreError

LOG_SUFFIX = ".jsonl"

Tables = dict[str, dict[str, dict[str, Any]]]


def _line(table: str, doc_id: str, doc: Mapping[str, Any]) -> bytes:
    return json.dumps({"table": table, "id": int(doc_id), "doc": doc}, ensure_ascii=False,
                      allow_nan=False).encode() + b"\n"


def encode_log(data: Tables) -> bytes:
    """A whole log holding `data` (for converting a file of TinyDB's JSON layout)."""
    return b"".join(_line(name, i, doc) for name, table in data.items() for i, doc in table.items())


def parse_log(path: Path, raw: bytes) -> tuple[Tables, int]:
    """The tables a log holds (the last line of each id wins), and the length of its
    whole lines (a torn tail after it is ignored). StoreCorrupt for damage."""
    end = raw.rfind(b"\n") + 1
    lines = raw[:end].split(b"\n")[:-1]
    try:  # one parse of the whole file (a store validates a month of them at start)
        entries = json.loads(b"[" + b",".join(lines) + b"]") if lines else []
    except (ValueError, RecursionError):
        entries = None
    if entries is None or len(entries) != len(lines):  # find the line, to name it
        entries = []
        for n, line in enumerate(lines, start=1):
            try:
                entries.append(json.loads(line))
            except (ValueError, RecursionError) as e:
                raise StoreCorrupt(path, f"line {n} is not valid JSON ({e})") from e
    tables: Tables = {}
    for n, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or entry.keys() != {"table", "id", "doc"}:
            raise StoreCorrupt(path, f'line {n} should be {{"table", "id", "doc"}}, found {lines[n - 1][:60]!r}')
        table, doc_id, doc = entry["table"], entry["id"], entry["doc"]
        if not isinstance(table, str) or type(doc_id) is not int or doc_id < 1 or not isinstance(doc, dict):
            raise StoreCorrupt(path, f"line {n} needs a table name, a positive integer id and an object")
        tables.setdefault(table, {})[str(doc_id)] = doc
    return tables, end


class AppendLogStorage(Storage):
    """TinyDB storage over one log file. Reads come from memory (the file is read once);
    append() adds documents: written at once and fsynced (durable), at the end of held(),
    or at flush() (not durable). TinyDB's whole-data write() is refused (HistoryTable
    never calls it). Nothing is created before the first document is written."""

    def __init__(self, path: str | Path, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self._tables: Tables | None = None
        self._fd: int | None = None
        self._size = 0  # the file's length as we left it (whole lines)
        self._pending: list[bytes] = []  # lines for flush(): not durable, or held()
        self._holding = 0

    def read(self) -> Tables:
        if self._tables is None:
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                raw = b""
            self._tables, self._size = parse_log(self.path, raw)
        return self._tables

    def write(self, data: Tables) -> None:
        raise StoreError(f"{self.path}: history is append-only; documents are inserted or put, "
                         "never updated or removed in place")

    def append(self, table: str, docs: list[tuple[int, dict[str, Any]]]) -> None:
        """Add or replace these documents of `table`: appended at once (durable) or at flush()."""
        tables = self.read()
        target = tables.setdefault(table, {})
        for doc_id, doc in docs:
            target[str(doc_id)] = doc
            self._pending.append(_line(table, str(doc_id), doc))
        if self.durable and not self._holding:
            self.flush()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Appends inside the block go to the file together at its end (one fsync)."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if self._holding == 0 and self.durable:
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        payload = b"".join(self._pending)
        self._open()
        append(self._fd, payload, self.durable)  # type: ignore[arg-type]
        self._size += len(payload)
        self._pending.clear()

    def _open(self) -> None:
        """The file for appending: created (0600) if absent, its torn tail cut off; never
        a file changed by another program since we read it."""
        if self._fd is not None:
            st = os.fstat(self._fd)
            try:
                same = os.stat(self.path).st_ino == st.st_ino
            except FileNotFoundError:
                same = False
            if not (same and st.st_size == self._size):
                self._close_fd()
                raise self._changed()
            return
        created = not self.path.exists()
        size = 0 if created else self.path.stat().st_size
        if size != self._size:
            # Only a torn tail (no newline in it) may follow what we read.
            if size < self._size or b"\n" in self._read_from(self._size):
                raise self._changed()
            cut_torn_tail(self.path)  # the torn tail of a write that never returned
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if created and self.durable:
            fsync_dir(self.path.parent)

    def _changed(self) -> StoreCorrupt:
        return StoreCorrupt.changed_behind(self.path)

    def _read_from(self, offset: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Forget what is not written yet (the file is about to be deleted)."""
        self._pending.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._close_fd()


class HistoryTable(Table):
    """A TinyDB table that only inserts and replaces, one append each (see the module)."""

    def insert(self, document: Mapping[str, Any]) -> int:
        return self.insert_multiple([document])[0]

    def insert_multiple(self, documents: Iterable[Mapping[str, Any]]) -> list[int]:
        docs = [(self._get_next_id(), dict(d)) for d in documents]
        self._append(docs)
        return [doc_id for doc_id, _ in docs]

    def put(self, doc: Mapping[str, Any], match: Callable[[Mapping[str, Any]], bool]) -> int:
        """Replace the newest document that `match`es with `doc`, or insert it: one append.
        (Searched newest first: the document replaced is nearly always a recent one.)"""
        table = self._storage.read().get(self.name, {})
        found = next((int(i) for i in reversed(table) if match(table[i])), None)
        doc_id = self._get_next_id() if found is None else found
        self._append([(doc_id, dict(doc))])
        return doc_id

    def _append(self, docs: list[tuple[int, dict[str, Any]]]) -> None:
        self._storage.append(self.name, docs)  # type: ignore[attr-defined]
        self.clear_cache()

    def _update_table(self, updater: Callable[[dict[int, Mapping[str, Any]]], None]) -> None:
        raise StoreError(f"{self._storage.path}: history is append-only; documents are inserted "  # type: ignore[attr-defined]
                         "or put, never updated or removed in place")


class HistoryDB(TinyDB):
    table_class = HistoryTable
