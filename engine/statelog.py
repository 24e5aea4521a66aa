"""state.log: the hot state's changes not yet folded into state.json.

Replacing state.json durably (temp file, fsync, rename, fsync of the directory) costs
0.6–0.8 ms here; appending one line and fdatasync'ing it costs 0.1–0.2 ms. The intent
written before an order is sent sits between the decision and the exchange, so it is an
append here (StateStore.put_intent outside a batch); the next replace of state.json
(the write after the venue's answer, or any other hot write) folds it in and empties
this file.

Each line is one hot document as it was put:

    {"seq": 7, "table": "intents", "id": 3, "doc": {...}}

`seq` counts up for as long as the directory lives: state.json says how far it has
folded the log (its table "log", one record {"log": "state.log", "seq": N}), so lines up
to N are skipped when the store opens. That is what makes emptying this file after a
replace safe without an fsync, and a kill between the replace and the emptying harmless:
the lines left over are already in state.json, and are skipped.

A last line without its newline is an append a kill cut short, which never returned (the
order it announced was never sent): ignored, and gone at the next fold. Anything else
that does not parse is damage: StoreCorrupt, and the file is left as it was found.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from engine.fileio import append, fsync_dir
from engine.storeerrors import StoreCorrupt

LOG_FILE = "state.log"
FOLD_LINES = 1000  # a log this long is folded at the next put, whatever else happens


class LogMark(BaseModel):
    """state.json's own record of how far state.log is folded into it."""

    log: str = LOG_FILE
    seq: int = Field(ge=0)


def line(seq: int, table: str, doc_id: str, encoded_doc: str) -> bytes:
    return f'{{"seq":{seq},"table":{json.dumps(table)},"id":{int(doc_id)},"doc":{encoded_doc}}}\n'.encode()


def read(path: Path, tables: set[str]) -> list[tuple[int, str, str, dict[str, Any]]]:
    """The log's whole lines as (seq, table, doc id, doc), in order; [] when there is no
    log. StoreCorrupt names the first line that is not one of ours."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreCorrupt(path, f"cannot read it ({e.strerror})") from e
    out: list[tuple[int, str, str, dict[str, Any]]] = []
    whole = raw[:raw.rfind(b"\n") + 1]  # after it: a torn tail, an append that never returned
    last = 0
    for n, text in enumerate(whole.split(b"\n")[:-1], start=1):
        try:
            entry = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise StoreCorrupt(path, f"line {n} is not valid JSON ({e})") from e
        if not (isinstance(entry, dict) and entry.keys() == {"seq", "table", "id", "doc"}
                and type(entry["seq"]) is int and type(entry["id"]) is int and isinstance(entry["doc"], dict)):
            raise StoreCorrupt(path, f'line {n} should be {{"seq", "table", "id", "doc"}}, found {text[:60]!r}')
        if entry["table"] not in tables:
            raise StoreCorrupt(path, f"line {n} names table {entry['table']!r} (this log holds {', '.join(sorted(tables))})")
        if entry["seq"] <= last:
            raise StoreCorrupt(path, f"line {n} has seq {entry['seq']}, not after the line before it ({last})")
        last = entry["seq"]
        out.append((entry["seq"], entry["table"], str(entry["id"]), entry["doc"]))
    return out


class StateLog:
    """The open log: appends (durable when fsync), and emptied after a fold."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self.lines = 0  # appended since the last fold
        existed = path.exists()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.dirty = existed and os.fstat(self.fd).st_size > 0  # lines left by an earlier run
        if not existed and fsync:
            fsync_dir(path.parent)  # the file itself survives a crash, so its appends do

    def append(self, payload: bytes) -> None:
        append(self.fd, payload, self.fsync)
        self.lines += 1
        self.dirty = True

    def folded(self) -> None:
        """state.json now holds every line: empty the file (no fsync needed: lines left
        by a crash before this is on disk are at or below state.json's mark, and skipped)."""
        if self.dirty:
            os.ftruncate(self.fd, 0)
            self.lines = 0
            self.dirty = False

    def close(self) -> None:
        os.close(self.fd)
