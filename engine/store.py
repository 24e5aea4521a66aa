"""The engine's durable state over TinyDB: intents, positions, cooldowns, decisions, journal.

A state directory holds:

    scalpdesk.lock            flock held by the one process using the directory; its pid
    state.json                hot state: intents, positions, cooldowns, the paper account, the risk limits (small)
    state.log                 intents written since state.json was last replaced (engine.statelog)
    history/YYYY-MM-DDTHH.jsonl decisions and journal of one UTC hour (append-only, pruned)

state.json is replaced whole on every write, atomically (temp file, fsync, rename, fsync
of the directory): a crash leaves the old file or the new one, never a torn one. An
intent put on its own (the one written before an order is sent) is instead one line
appended to state.log, which the next replace of state.json folds in. History
is TinyDB over an append-only log of JSON lines, one file per UTC hour (engine.historylog):
a write appends only its own records, so its cost does not grow with the hour (TinyDB's
JSON file rewrote the whole hour, 2–3 MB by its end at a 5 s cycle over 10 symbols, on
every insert), and retention deletes whole hours. History files of the earlier layout
(YYYY-MM-DDTHH.json, TinyDB's JSON) are read, and converted when a store opens the
directory. A file that does not load or validate stops the store with StoreCorrupt and
is left exactly as it was found, so an operator can look at it (or restore it) before
anything overwrites it.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError
from tinydb import TinyDB

from engine import statelog
from engine.fileio import atomic_write, fsync_dir  # noqa: F401 (atomic_write: the store's API)
from engine.historylog import LOG_SUFFIX, AppendLogStorage, HistoryDB, encode_log, parse_log
from engine.models import (
    Cooldown,
    DecisionRecord,
    Intent,
    IntentStatus,
    PaperAccount,
    PositionMeta,
    RiskState,
    Trade,
)
from engine.storeerrors import StoreCorrupt, StoreError, StoreLocked  # noqa: F401 (the store's API)

STATE_FILE = "state.json"
LOCK_FILE = "scalpdesk.lock"
HISTORY_DIR = "history"
_PART_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}\.jsonl?$")  # .json: the earlier layout
_OPEN_PARTS = 4  # TinyDB instances kept open (each remembers its tables' next ids)
_TEMP_GLOB = ".*.tmp"  # what atomic_write leaves behind if it is killed mid-write
RECENT_TRADES = 200  # newest trades kept in memory (a cycle reads the last 10)


# --- what each file may hold ------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    model: type[BaseModel]
    key: str | None = None  # a field unique within the table
    stamp: str | None = None  # the timestamp whose UTC hour names the history file


HOT_TABLES = {
    "intents": _Table(Intent, key="intent_id"),
    "positions": _Table(PositionMeta, key="symbol"),
    "cooldowns": _Table(Cooldown, key="symbol"),
    "paper": _Table(PaperAccount, key="venue"),
    "risk": _Table(RiskState, key="account"),
    "log": _Table(statelog.LogMark, key="log"),  # how far state.log is folded in (engine.statelog)
}
LOGGED_TABLES = set(HOT_TABLES) - {"log"}
HISTORY_TABLES = {
    "decisions": _Table(DecisionRecord, stamp="recorded_at"),
    "journal": _Table(Trade, stamp="closed_at"),
}


def _day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def _part(ts: float) -> str:
    """The history partition (UTC hour) of a timestamp: 2026-01-01T13."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H")


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _describe(err: ValidationError) -> str:
    problems = [f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in err.errors()[:3]]
    more = len(err.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _load(path: Path) -> dict[str, dict[str, dict[str, Any]]] | None:
    """The tables of a state or history file ({table: {doc id: record}}), their shape
    checked; None if the file is absent."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreCorrupt(path, f"cannot read it ({e.strerror})") from e
    if path.suffix == LOG_SUFFIX:
        data = parse_log(path, raw)[0]
        _check_tables(path, data)
        return data
    if not raw.strip():
        # We never write an empty file (writes are atomic), so this is damage, not "no data".
        raise StoreCorrupt(path, "the file is empty")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, absurd numbers or nesting
        raise StoreCorrupt(path, f"not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise StoreCorrupt(path, f"expected a JSON object of tables, found {_json_kind(data)}")
    _check_tables(path, data)
    return data


def _check_tables(path: Path, data: dict[str, Any]) -> None:
    for name, table in data.items():
        if not isinstance(table, dict):
            raise StoreCorrupt(path, f"table {name!r} should be an object, found {_json_kind(table)}")
        for doc_id, doc in table.items():
            if not (doc_id.isascii() and doc_id.isdigit()):  # TinyDB's ids are integers
                raise StoreCorrupt(path, f"table {name!r} has a document id {doc_id!r} that is not a number")
            if not isinstance(doc, dict):
                problem = f"table {name!r} document {doc_id} should be an object, found {_json_kind(doc)}"
                raise StoreCorrupt(path, problem)


def _parse(path: Path, name: str, spec: _Table, doc_id: str, doc: dict[str, Any]) -> Any:
    try:
        return spec.model.model_validate(doc)
    except ValidationError as e:
        problem = f"table {name!r} document {doc_id} is not a valid {spec.model.__name__}: {_describe(e)}"
        raise StoreCorrupt(path, problem) from e


def _validate(path: Path, tables: dict[str, _Table]) -> dict[str, int]:
    """Load and validate every record of one file; returns the record count per table."""
    data = _load(path) or {}
    for name, table in data.items():
        spec = tables.get(name)
        if spec is None:
            raise StoreCorrupt(path, f"unexpected table {name!r} (this file holds {', '.join(tables)})")
        seen: dict[Any, str] = {}
        for doc_id, doc in table.items():
            rec = _parse(path, name, spec, doc_id, doc)
            if spec.key:
                key = getattr(rec, spec.key)
                if key in seen:
                    raise StoreCorrupt(path, f"table {name!r} has two records for {key!r} "
                                             f"(documents {seen[key]} and {doc_id})")
                seen[key] = doc_id
            # Reading history newest-first relies on each record sitting in its own hour's file.
            if spec.stamp:
                try:
                    day = _part(getattr(rec, spec.stamp))
                except (ValueError, OverflowError, OSError):
                    day = "out of range"
                if day != path.stem:
                    problem = f"table {name!r} document {doc_id} is dated {day}, not {path.stem}"
                    raise StoreCorrupt(path, problem)
    return {name: len(data.get(name, {})) for name in tables}


def history_files(history: Path) -> list[Path]:
    """One file per UTC hour in a history directory, oldest first: the log
    (YYYY-MM-DDTHH.jsonl), or an hour's file of the earlier layout (.json) where it has no
    log yet (a store converts it when it opens the directory: the log is written whole
    before the old file is removed, so where both are, the log holds it all)."""
    by_hour: dict[str, Path] = {}
    for p in sorted(history.glob("*.json*")) if history.is_dir() else []:  # .json sorts before .jsonl
        if _PART_FILE.match(p.name):
            by_hour[p.stem] = p
    return [by_hour[hour] for hour in sorted(by_hour)]


def _data_files(state_dir: Path) -> list[tuple[Path, dict[str, _Table]]]:
    """state.json (present or not) and every history file."""
    days = history_files(state_dir / HISTORY_DIR)
    return [(state_dir / STATE_FILE, HOT_TABLES)] + [(p, HISTORY_TABLES) for p in days]


def _convert_history(history: Path) -> None:
    """Rewrite each hour of the earlier layout as a log (holding the directory's lock)."""
    old = sorted(history.glob("*.json")) if history.is_dir() else []
    for path in old:
        if not _PART_FILE.match(path.name):
            continue
        log = path.with_suffix(LOG_SUFFIX)
        if not log.exists():
            atomic_write(log, encode_log(_load(path) or {}))
        path.unlink()
    if old:
        fsync_dir(history)


def _log_entries(path: Path) -> list[tuple[int, str, str, dict[str, Any]]]:
    """state.log's whole lines, each document validated against its table's model."""
    entries = statelog.read(path, LOGGED_TABLES)
    for _, table, doc_id, doc in entries:
        _parse(path, table, HOT_TABLES[table], doc_id, doc)
    return entries


def _with_log(data: dict[str, dict[str, dict[str, Any]]] | None,
              log_path: Path) -> tuple[dict[str, dict[str, dict[str, Any]]], int]:
    """state.json's tables with state.log's lines after its mark applied (each validated),
    and the last line's seq. StoreCorrupt (the files left as they are) for damage."""
    data = {name: dict(table) for name, table in (data or {}).items()}
    marks = list((data.get("log") or {}).values())
    mark = marks[0]["seq"] if marks else 0
    seq = mark
    for seq, table, doc_id, doc in _log_entries(log_path):
        if seq > mark:
            docs = data.setdefault(table, {})
            # By its key: where state.json was put back by hand, the line's id may be another record's.
            key = HOT_TABLES[table].key
            same = next((i for i, d in docs.items() if d.get(key) == doc.get(key)), None)
            if same is None and doc_id in docs:
                same = str(max(int(i) for i in docs) + 1)
            docs[same or doc_id] = doc
    return data, max(seq, mark)


def check_state_dir(path: Path) -> list[tuple[str, bool, str]]:
    """Validate every state file, read-only and without the lock: (file, ok, message) each.

    For `scalpdesk state check`: safe to run next to a live scalpdesk, creates nothing.
    """
    state_dir = Path(path)
    if not state_dir.is_dir():
        return [(str(state_dir), False, "not a directory" if state_dir.exists() else "no such directory")]
    results: list[tuple[str, bool, str]] = []
    for file, tables in _data_files(state_dir):
        if not file.exists():
            results.append((str(file), True, "absent; the store starts empty"))
            continue
        try:
            counts = _validate(file, tables)
        except StoreCorrupt as e:
            results.append((str(file), False, e.problem))
        else:
            results.append((str(file), True, ", ".join(f"{n} {name}" for name, n in counts.items() if name != "log")))
        if file.name == STATE_FILE:
            results.extend(_check_log(state_dir))
    return results


def _check_log(state_dir: Path) -> list[tuple[str, bool, str]]:
    """state.log's line for `state check`: none when it is absent or empty (folded)."""
    path = state_dir / statelog.LOG_FILE
    try:
        entries = _log_entries(path)
    except StoreCorrupt as e:
        return [(str(path), False, e.problem)]
    if not entries:
        return []
    return [(str(path), True, f"{len(entries)} intents written since state.json was last replaced")]


# --- atomic files -------------------------------------------------------------------------


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """The file as the file system last saw it (None: there is none)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _replace_unchanged(path: Path, seen: tuple[int, int, int] | None, payload: bytes,
                       fsync: bool) -> tuple[int, int, int] | None:
    """Replace the file atomically with `payload`, unless it changed since `seen`; the new stamp.

    Reads come from memory, so a file changed behind our back is only seen here: refuse
    to write over it (it may be an operator's repair, or damage to look at)."""
    if _stamp(path) != seen:
        _load(path)  # says what is wrong with it, if anything is
        raise StoreCorrupt.changed_behind(path)
    atomic_write(path, payload, fsync=fsync)
    return _stamp(path)


def _encode(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False)


class HotFile:
    """state.json, in TinyDB's layout ({table: {doc id: record}}), each record kept as
    its encoded JSON: a write encodes only the record that changed and joins the rest,
    so its cost does not grow with every intent kept for the idempotency window (a whole
    json.dumps of 400 intents cost 3 ms a write). The file is replaced atomically, and
    never over a file changed behind our back (_replace_unchanged)."""

    def __init__(self, path: Path, data: dict[str, dict[str, dict[str, Any]]] | None, fsync: bool,
                 log: statelog.StateLog | None = None, seq: int = 0) -> None:
        """data: state.json's tables with state.log's lines applied; log: state.log, open
        (None: a throwaway store, no log); seq: the last line's number, applied or not."""
        self.path = path
        self.fsync = fsync
        self.log = log
        self.seq = seq
        self.docs: dict[str, dict[str, str]] = {name: {} for name in HOT_TABLES}  # table -> doc id -> JSON
        self.ids: dict[str, dict[Any, str]] = {name: {} for name in HOT_TABLES}  # table -> key -> doc id
        self.next_id = dict.fromkeys(HOT_TABLES, 1)
        self.pending = False  # changed in memory, not written yet
        self._seen = _stamp(path)
        for name, table in (data or {}).items():
            key = HOT_TABLES[name].key
            for doc_id, doc in table.items():
                self.docs[name][doc_id] = _encode(doc)
                self.ids[name][doc.get(key)] = doc_id
            self.next_id[name] = max((int(i) for i in table), default=0) + 1

    def put(self, name: str, key: Any, doc: dict[str, Any]) -> None:
        doc_id = self.ids[name].get(key)
        if doc_id is None:
            doc_id = self.ids[name][key] = str(self.next_id[name])
            self.next_id[name] += 1
        self.docs[name][doc_id] = _encode(doc)
        self.pending = True

    def append(self, name: str, key: Any, doc: dict[str, Any]) -> None:
        """put(), made durable by one line appended to state.log rather than a replace of
        state.json (which the next write() does, folding the line in)."""
        self.put(name, key, doc)
        if self.log is None:
            return
        self.seq += 1
        doc_id = self.ids[name][key]
        self.log.append(statelog.line(self.seq, name, doc_id, self.docs[name][doc_id]))
        if self.log.lines >= statelog.FOLD_LINES:
            self.write()

    def remove(self, name: str, key: Any) -> None:
        doc_id = self.ids[name].pop(key, None)
        if doc_id is not None:
            del self.docs[name][doc_id]
            self.pending = True

    def write(self) -> None:
        """Write what changed (nothing if nothing did): one atomic replace of the file."""
        if not self.pending:
            return
        if self.seq:  # the log's lines up to here are in this file
            self.docs["log"] = {"1": _encode({"log": statelog.LOG_FILE, "seq": self.seq})}
        tables = ",".join(
            f"{json.dumps(name)}:{{" + ",".join(f'"{i}":{doc}' for i, doc in docs.items()) + "}"
            for name, docs in self.docs.items() if docs or name in ("intents", "positions", "cooldowns")
        )
        self._seen = _replace_unchanged(self.path, self._seen, ("{" + tables + "}").encode(), self.fsync)
        self.pending = False
        if self.log is not None:
            self.log.folded()


# --- the lock -----------------------------------------------------------------------------


def _acquire_lock(state_dir: Path) -> int:
    """Take the directory's flock (released by the kernel if we die) and write our pid in it."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise StoreLocked(state_dir, int(holder) if holder.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.fsync(fd)
    return fd


# --- the store ----------------------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[P, R]) -> Callable[P, R]:
    """Run under the store's lock: engine jobs call the store from several threads."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self: StateStore = args[0]  # type: ignore[assignment]
        with self._lock:
            if self._closed:
                raise StoreError(f"the store on {self.state_dir} is closed")
            if self._broken is not None:
                raise self._broken
            try:
                return method(*args, **kwargs)
            except StoreCorrupt as e:
                self._broken = e  # nothing more is read or written until an operator looks
                raise

    return wrapper


class StateStore:
    """Durable engine state in one directory, held by one process at a time.

    All times are passed in (epoch seconds); the store never reads a clock.

    The hot state (intents, positions, cooldowns) is read from memory: this process
    holds the directory's lock, so it is the only writer and its own copy is the truth.
    Every change is written through to state.json at once (atomic, fsynced) before the
    call returns. The newest trades are kept in memory too, so a decision cycle never
    re-reads history files.

    durable=False (a replay's throwaway directory) keeps writes in memory until flush()
    or close() and skips fsync: a replay is rerun, never recovered.
    """

    def __init__(self, state_dir: Path, history_retention_days: int = 30, *, durable: bool = True) -> None:
        if history_retention_days < 0:
            raise ValueError("history_retention_days must not be negative")
        self.state_dir = Path(state_dir)
        self.history_dir = self.state_dir / HISTORY_DIR
        self.history_retention_days = history_retention_days
        self.durable = durable
        self._lock = threading.RLock()
        self._closed = True
        self._broken: StoreCorrupt | None = None
        self._batch_depth = 0  # inside batch(): hot writes wait for its end
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.state_dir)
        try:
            # Holding the lock, no one else is mid-write: temp files are leftovers of a kill.
            for directory in (self.state_dir, self.history_dir):
                for tmp in directory.glob(_TEMP_GLOB):
                    tmp.unlink(missing_ok=True)
            for path, tables in _data_files(self.state_dir):
                _validate(path, tables)
            _convert_history(self.history_dir)
        except BaseException:
            self._release_lock()
            raise
        self._state_path = self.state_dir / STATE_FILE
        self._days: dict[str, TinyDB] = {}  # kept so TinyDB remembers each table's next id
        log_path = self.state_dir / statelog.LOG_FILE
        data, seq = _with_log(_load(self._state_path), log_path)
        log = statelog.StateLog(log_path, fsync=True) if self.durable else None
        self._hot = HotFile(self._state_path, data, fsync=self.durable, log=log, seq=seq)
        if log is not None and log.dirty:
            self._hot.pending = True  # fold what an earlier run left in the log, now
            self._hot.write()
        self._intents: dict[str, Intent] = {i.intent_id: i for i in self._records(data, "intents")}
        self._positions: dict[str, PositionMeta] = {m.symbol: m for m in self._records(data, "positions")}
        self._cooldowns: dict[str, Cooldown] = {c.symbol: c for c in self._records(data, "cooldowns")}
        self._paper: dict[str, PaperAccount] = {a.venue: a for a in self._records(data, "paper")}
        self._risk: dict[str, RiskState] = {r.account: r for r in self._records(data, "risk")}
        self._recent: deque[Trade] = deque(islice(self._history("journal"), RECENT_TRADES))  # newest first
        # Every trade is in memory when the journal held fewer than RECENT_TRADES.
        self._recent_complete = len(self._recent) < RECENT_TRADES
        self._closed = False

    def _tinydb(self, path: Path) -> TinyDB:
        """TinyDB over an hour's append-only log: reads come from memory; each write
        appends to the file at once (durable), or at flush() (not)."""
        return HistoryDB(path, storage=AppendLogStorage, durable=self.durable)

    def _release_lock(self) -> None:
        os.ftruncate(self._lock_fd, 0)  # the pid in it would be stale
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Several hot-state changes as ONE durable write of state.json, at the end of the
        block (the EXECUTED intent and the metadata of its position). The store's lock is
        held throughout, so no other thread's write can be folded in and returned as
        durable before it is; keep the block short and free of venue calls. A crash
        inside the block leaves the file as it was before it."""
        with self._lock:
            if self._closed:
                raise StoreError(f"the store on {self.state_dir} is closed")
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self.durable and self._broken is None:
                    try:
                        self._hot.write()
                    except StoreCorrupt as e:
                        self._broken = e
                        raise

    def _hot_changed(self) -> None:
        """A hot record changed in memory: on disk now (durable, outside a batch), or at
        the batch's end, or at flush() (a throwaway store)."""
        if self.durable and self._batch_depth == 0:
            self._hot.write()

    @_locked
    def flush(self) -> None:
        """Write what is still only in memory (durable stores have nothing pending)."""
        self._hot.write()
        for db in self._days.values():
            db.storage.flush()

    def close(self) -> None:
        """Write what is pending, release the directory; further calls raise StoreError."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._broken is None:
                    self.flush()
                    for db in self._days.values():
                        db.close()
            finally:
                self._closed = True
                if self._hot.log is not None:
                    self._hot.log.close()
                self._release_lock()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- hot state
    # Records are dumped whole (every field, None included), so updating the matching
    # document replaces the record.

    def _records(self, data: dict[str, dict[str, dict[str, Any]]] | None, name: str) -> list[Any]:
        table = (data or {}).get(name) or {}
        return [_parse(self._state_path, name, HOT_TABLES[name], doc_id, d) for doc_id, d in table.items()]

    # --- intents

    @_locked
    def put_intent(self, intent: Intent) -> None:
        """Insert the intent, or replace the one with the same intent_id. On its own (not
        in a batch) it is one line appended to state.log: the intent written before an order
        is sent costs 0.1-0.2 ms, not a 0.6-0.8 ms replace of state.json."""
        doc = intent.model_dump(mode="json")
        if self._batch_depth == 0:
            self._hot.append("intents", intent.intent_id, doc)  # a throwaway store: in memory only
        else:
            self._hot.put("intents", intent.intent_id, doc)  # written at the batch's end
        self._intents[intent.intent_id] = intent

    @_locked
    def get_intent(self, intent_id: str) -> Intent | None:
        return self._intents.get(intent_id)

    @_locked
    def intents(self, status: IntentStatus | None = None) -> list[Intent]:
        """All intents (or those with `status`), oldest first."""
        found = (i for i in self._intents.values() if status is None or i.status is status)
        return sorted(found, key=lambda i: i.created_at)

    @_locked
    def delete_intents_older_than(self, cutoff: float) -> int:
        """Delete intents created before `cutoff`, except EXECUTING ones: those await reconciliation."""
        old = [i.intent_id for i in self._intents.values()
               if i.created_at < cutoff and i.status is not IntentStatus.EXECUTING]
        if old:
            for intent_id in old:
                del self._intents[intent_id]
                self._hot.remove("intents", intent_id)
            self._hot_changed()
        return len(old)

    # --- positions

    @_locked
    def put_position(self, meta: PositionMeta) -> None:
        self._hot.put("positions", meta.symbol, meta.model_dump(mode="json"))
        self._hot_changed()
        self._positions[meta.symbol] = meta

    @_locked
    def get_position(self, symbol: str) -> PositionMeta | None:
        return self._positions.get(symbol)

    @_locked
    def positions(self) -> list[PositionMeta]:
        """All position metadata, by symbol."""
        return [self._positions[s] for s in sorted(self._positions)]

    @_locked
    def delete_position(self, symbol: str) -> bool:
        """Forget the position's metadata; True if there was any."""
        if self._positions.pop(symbol, None) is None:
            return False
        self._hot.remove("positions", symbol)
        self._hot_changed()
        return True

    # --- cooldowns

    @_locked
    def put_cooldown(self, c: Cooldown) -> None:
        self._hot.put("cooldowns", c.symbol, c.model_dump(mode="json"))
        self._hot_changed()
        self._cooldowns[c.symbol] = c

    @_locked
    def get_cooldown(self, symbol: str) -> Cooldown | None:
        return self._cooldowns.get(symbol)

    @_locked
    def cooldowns(self) -> list[Cooldown]:
        """All cooldowns, expired ones included until cleanup, by symbol."""
        return [self._cooldowns[s] for s in sorted(self._cooldowns)]

    @_locked
    def delete_expired_cooldowns(self, now: float) -> int:
        """Delete cooldowns whose `until` has come (not active at `now`); returns how many."""
        done = [c.symbol for c in self._cooldowns.values() if c.until <= now]
        if done:
            for symbol in done:
                del self._cooldowns[symbol]
                self._hot.remove("cooldowns", symbol)
            self._hot_changed()
        return len(done)

    # --- the paper venue's account

    @_locked
    def put_paper_account(self, account: PaperAccount) -> None:
        self._hot.put("paper", account.venue, account.model_dump(mode="json"))
        self._hot_changed()
        self._paper[account.venue] = account

    @_locked
    def get_paper_account(self, venue: str) -> PaperAccount | None:
        return self._paper.get(venue)

    # --- the risk limits' memory

    @_locked
    def put_risk(self, state: RiskState, *, durable: bool = True) -> None:
        """durable=False: kept in memory and carried by the next write of state.json (the
        next intent's, before its order is sent) or the close, not written on its own."""
        self._hot.put("risk", state.account, state.model_dump(mode="json"))
        if durable:
            self._hot_changed()
        self._risk[state.account] = state

    @_locked
    def get_risk(self, account: str = "main") -> RiskState | None:
        return self._risk.get(account)

    # --- history

    def _day_path(self, ts: float) -> Path:
        """The history file a record stamped `ts` belongs in."""
        return self.history_dir / f"{_part(ts)}{LOG_SUFFIX}"

    def _day_db(self, ts: float) -> TinyDB:
        # A fresh TinyDB would re-read the whole file to find the next id on every insert.
        part = _part(ts)
        if part not in self._days:
            self.history_dir.mkdir(mode=0o700, exist_ok=True)
            while len(self._days) >= _OPEN_PARTS:
                self._days.pop(min(self._days)).close()  # writes what it still holds
            self._days[part] = self._tinydb(self.history_dir / f"{part}{LOG_SUFFIX}")
        return self._days[part]

    def _day_files(self) -> list[Path]:
        """History files (on disk, or open and not written yet), newest hour first."""
        parts = set(history_files(self.history_dir))
        parts.update(self.history_dir / f"{part}{LOG_SUFFIX}" for part in self._days)
        return sorted(parts, reverse=True)

    def _history(self, name: str, since: float | None = None) -> Iterator[Any]:
        """Records of one history table, newest first, read file by file, newest first
        (an open file from TinyDB's cache, which holds what is not written yet)."""
        spec = HISTORY_TABLES[name]
        stamp = spec.stamp
        assert stamp is not None
        first_day = None if since is None else _part(since)
        for path in self._day_files():
            if first_day is not None and path.stem < first_day:
                return
            db = self._days.get(path.stem)
            data = db.storage.read() if db is not None else _load(path)
            docs = ((data or {}).get(name) or {}).items()
            records = [(_parse(path, name, spec, i, d), int(i)) for i, d in docs]
            # Newest first; among equal stamps the later-written document first.
            records.sort(key=lambda r: (getattr(r[0], stamp), r[1]), reverse=True)
            for rec, _ in records:
                if since is None or getattr(rec, stamp) >= since:
                    yield rec

    @_locked
    def add_decision(self, rec: DecisionRecord) -> None:
        self._day_db(rec.recorded_at).table("decisions").insert(rec.model_dump(mode="json"))

    @_locked
    def add_decisions(self, recs: Sequence[DecisionRecord], updates: Sequence[DecisionRecord] = ()) -> None:
        """A cycle's new records and its updates of earlier ones (as update_decision):
        one append per history file."""
        by_part: dict[str, tuple[list[DecisionRecord], list[DecisionRecord]]] = {}
        for i, group in enumerate((recs, updates)):
            for rec in group:
                by_part.setdefault(_part(rec.recorded_at), ([], []))[i].append(rec)
        for part, (new, changed) in by_part.items():
            db = self._day_db((new or changed)[0].recorded_at)
            with db.storage.held():
                table = db.table("decisions")
                if new:
                    table.insert_multiple(r.model_dump(mode="json") for r in new)
                for rec in changed:
                    self._replace_decision(table, rec)

    @_locked
    def update_decision(self, rec: DecisionRecord) -> None:
        """Replace the record with the same decision_id in the history file of rec.recorded_at.

        Inserted if absent there: recorded_at picks the file, so it must not change."""
        self._replace_decision(self._day_db(rec.recorded_at).table("decisions"), rec)

    @staticmethod
    def _replace_decision(table: Any, rec: DecisionRecord) -> None:
        did = rec.decision.decision_id
        table.put(rec.model_dump(mode="json"), lambda doc: doc["decision"]["decision_id"] == did)

    @_locked
    def decisions(self, limit: int = 100) -> list[DecisionRecord]:
        """The newest `limit` decision records, newest first."""
        return list(islice(self._history("decisions"), limit))

    @_locked
    def add_trade(self, t: Trade) -> None:
        self._day_db(t.closed_at).table("journal").insert(t.model_dump(mode="json"))
        recent = self._recent
        i = 0  # newest first, as _history reads them (a later write first among equal times)
        while i < len(recent) and recent[i].closed_at > t.closed_at:
            i += 1
        recent.insert(i, t)
        if len(recent) > RECENT_TRADES:
            recent.pop()  # the oldest: from now on older trades are read from the files
            self._recent_complete = False

    @_locked
    def trades(self, since: float | None = None, limit: int = 100) -> list[Trade]:
        """The newest `limit` trades closed at or after `since`, newest first (from
        memory when the newest trades kept there answer it)."""
        out: list[Trade] = []
        for t in self._recent:
            if len(out) >= limit:
                return out
            if since is not None and t.closed_at < since:
                return out
            out.append(t)
        if self._recent_complete or len(out) >= limit:
            return out
        return list(islice(self._history("journal", since), limit))

    @_locked
    def realised_pnl_since(self, ts: float) -> float:
        """Sum of the PnL of every trade closed at or after `ts`."""
        return sum((t.pnl for t in self._history("journal", ts)), 0.0)

    # --- housekeeping

    @_locked
    def cleanup(self, now: float, intent_ttl_sec: float) -> dict[str, int]:
        """Drop intents past their TTL (never EXECUTING), expired cooldowns, history past retention."""
        intents = self.delete_intents_older_than(now - intent_ttl_sec)
        cooldowns = self.delete_expired_cooldowns(now)
        # Keep today and the `history_retention_days` days before it.
        oldest_kept = (_day(now) - timedelta(days=self.history_retention_days)).isoformat()
        removed = 0
        for path in self._day_files():
            if path.stem[:10] < oldest_kept:
                db = self._days.pop(path.stem, None)
                if db is not None:
                    db.storage.discard()  # closing it must not write it back
                    db.close()
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            cutoff = datetime.fromisoformat(oldest_kept).replace(tzinfo=UTC).timestamp()
            kept = [t for t in self._recent if t.closed_at >= cutoff]
            if len(kept) < len(self._recent):
                self._recent = deque(kept)
        if removed:
            fsync_dir(self.history_dir)
        return {"intents": intents, "cooldowns": cooldowns, "history_files": removed}
