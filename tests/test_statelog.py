"""state.log: an intent put on its own is one appended line, folded into state.json by the
next replace; a restart applies what was not folded, skips what was, ignores a torn last
line, and stops at damage with the files left as found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine import statelog
from engine.models import IntentStatus
from engine.store import StateStore, StoreCorrupt, check_state_dir
from tests.test_store import cooldown, fingerprint, intent, position, state_file


def log_file(d: Path) -> Path:
    return d / "state.log"


def lines(d: Path) -> list[dict]:
    return [json.loads(x) for x in log_file(d).read_bytes().splitlines()]


def snapshot(src: Path, dst: Path) -> Path:
    """The directory's files as a kill at this moment would leave them (the lock aside)."""
    dst.mkdir()
    for name in ("state.json", "state.log"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    return dst


def test_an_intent_on_its_own_is_one_line_and_the_next_replace_folds_it(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with StateStore(d) as s:
        s.put_position(position())
        before = fingerprint(state_file(d))
        s.put_intent(intent("o-1", status=IntentStatus.EXECUTING))
        assert fingerprint(state_file(d)) == before  # state.json not rewritten
        [line] = lines(d)
        assert (line["seq"], line["table"], line["doc"]["intent_id"], line["doc"]["status"]) == (1, "intents", "o-1", "EXECUTING")
        s.put_intent(intent("o-1", status=IntentStatus.EXECUTED))
        assert [x["seq"] for x in lines(d)] == [1, 2]
        s.put_cooldown(cooldown())  # any replace of state.json folds the log in
        assert log_file(d).read_bytes() == b""
        on_disk = json.loads(state_file(d).read_bytes())
        assert [i["status"] for i in on_disk["intents"].values()] == ["EXECUTED"]
        assert list(on_disk["log"].values()) == [{"log": "state.log", "seq": 2}]


def test_a_batch_writes_state_json_once_and_no_line(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with StateStore(d) as s:
        with s.batch():
            s.put_intent(intent("o-1", status=IntentStatus.EXECUTED))
            s.put_position(position())
        assert not log_file(d).exists() or log_file(d).read_bytes() == b""
        assert [i["intent_id"] for i in json.loads(state_file(d).read_bytes())["intents"].values()] == ["o-1"]


def test_a_kill_before_the_fold_loses_nothing(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with StateStore(d) as s:
        s.put_position(position())
        s.put_intent(intent("o-1", status=IntentStatus.EXECUTING, sent_at=1.0))
        killed = snapshot(d, tmp_path / "killed")  # the intent is only in state.log
    assert "o-1" not in state_file(killed).read_text()
    with StateStore(killed) as s:
        got = s.get_intent("o-1")
        assert got is not None and got.status is IntentStatus.EXECUTING and got.sent_at == 1.0
        assert s.get_position("BTCUSDT") is not None
        # Folded at the start: state.json holds it, the log is empty, and a new line goes on from seq 2.
        assert log_file(killed).read_bytes() == b""
        assert "o-1" in state_file(killed).read_text()
        s.put_intent(intent("o-2"))
        assert [x["seq"] for x in lines(killed)] == [2]
    with StateStore(killed) as s:
        assert {i.intent_id for i in s.intents()} == {"o-1", "o-2"}


def test_a_first_intent_before_state_json_exists_survives_a_kill(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with StateStore(d) as s:
        s.put_intent(intent("o-1"))
        assert not state_file(d).exists()
        killed = snapshot(d, tmp_path / "killed")
    with StateStore(killed) as s:
        assert [i.intent_id for i in s.intents()] == ["o-1"]


def test_lines_already_folded_are_skipped(tmp_path: Path) -> None:
    """A kill after state.json was replaced but before the log was emptied leaves lines
    state.json already holds, older than it: applied again they would turn EXECUTED back
    into EXECUTING."""
    d = tmp_path / "state"
    with StateStore(d) as s:
        s.put_intent(intent("o-1", status=IntentStatus.EXECUTING))
        stale = log_file(d).read_bytes()
        with s.batch():
            s.put_intent(intent("o-1", status=IntentStatus.EXECUTED))
            s.put_position(position())
        killed = snapshot(d, tmp_path / "killed")
    log_file(killed).write_bytes(stale)
    with StateStore(killed) as s:
        assert s.get_intent("o-1").status is IntentStatus.EXECUTED
        s.put_intent(intent("o-2"))
        assert [x["seq"] for x in lines(killed)] == [2]  # numbering goes on past the stale line


def test_a_torn_last_line_never_returned_and_is_ignored(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with StateStore(d) as s:
        s.put_intent(intent("o-1"))
        s.put_intent(intent("o-2"))
        killed = snapshot(d, tmp_path / "killed")
    raw = log_file(killed).read_bytes()
    log_file(killed).write_bytes(raw[:-20])  # the second append cut short by the kill
    with StateStore(killed) as s:
        assert [i.intent_id for i in s.intents()] == ["o-1"]
        assert log_file(killed).read_bytes() == b""


@pytest.mark.parametrize("content, problem", [
    (b'{"seq": 1, "table": "intents"\n{"seq": 2}\n', "line 1 is not valid JSON"),
    (b'[1, 2]\n', 'line 1 should be {"seq", "table", "id", "doc"}'),
    (b'{"seq": 1, "table": "decisions", "id": 1, "doc": {}}\n', "line 1 names table 'decisions'"),
    (b'{"seq": 2, "table": "intents", "id": 1, "doc": {"intent_id": "o-1"}}\n'
     b'{"seq": 2, "table": "intents", "id": 1, "doc": {"intent_id": "o-1"}}\n', "line 2 has seq 2"),
    (b'{"seq": 1, "table": "intents", "id": 1, "doc": {"intent_id": "o-1"}}\n', "is not a valid Intent"),
])
def test_a_damaged_log_stops_the_start_and_is_left_as_found(tmp_path: Path, content: bytes, problem: str) -> None:
    d = tmp_path / "state"
    with StateStore(d) as s:
        s.put_position(position())
    log_file(d).write_bytes(content)
    before = {p.name: fingerprint(p) for p in d.iterdir() if p.is_file() and p.name != "scalpdesk.lock"}
    with pytest.raises(StoreCorrupt, match="state.log") as err:
        StateStore(d)
    assert problem in str(err.value)
    assert {p.name: fingerprint(p) for p in d.iterdir() if p.is_file() and p.name != "scalpdesk.lock"} == before
    [(_, ok, message)] = [r for r in check_state_dir(d) if r[0].endswith("state.log")]
    assert not ok and problem in message


def test_state_check_names_lines_not_yet_folded(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with StateStore(d) as s:
        s.put_position(position())
        assert [Path(f).name for f, _, _ in check_state_dir(d)] == ["state.json"]  # an empty log says nothing
        s.put_intent(intent("o-1"))
        s.put_intent(intent("o-2"))
        assert check_state_dir(d) == [
            (str(state_file(d)), True, "0 intents, 1 positions, 0 cooldowns, 0 paper, 0 risk"),
            (str(log_file(d)), True, "2 intents written since state.json was last replaced"),
        ]


def test_a_long_log_is_folded_by_the_put_that_reaches_the_limit(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(statelog, "FOLD_LINES", 3)
    d = tmp_path / "state"
    with StateStore(d) as s:
        for n in range(3):
            s.put_intent(intent(f"o-{n}"))
        assert log_file(d).read_bytes() == b""
        assert len(json.loads(state_file(d).read_bytes())["intents"]) == 3


def test_a_throwaway_store_keeps_no_log(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with StateStore(d, durable=False) as s:
        s.put_intent(intent("o-1"))
    assert not log_file(d).exists()
    with StateStore(d) as s:
        assert [i.intent_id for i in s.intents()] == ["o-1"]


def test_a_line_replaces_its_own_record_even_where_state_json_was_put_back_by_hand(tmp_path: Path) -> None:
    d = tmp_path / "state"
    with StateStore(d) as s:
        s.put_intent(intent("o-1"))
        s.put_position(position())  # folded: o-1 is document 1
        backup = state_file(d).read_bytes()
        s.put_intent(intent("o-2", status=IntentStatus.EXECUTING))  # document 2, in the log
        s.put_intent(intent("o-1", status=IntentStatus.FAILED))  # document 1, in the log
        killed = snapshot(d, tmp_path / "killed")
    # An operator puts back a state.json whose document 2 is another intent.
    doc = json.loads(backup)
    doc["intents"]["2"] = {**doc["intents"]["1"], "intent_id": "o-9"}
    del doc["log"]
    state_file(killed).write_text(json.dumps(doc))
    with StateStore(killed) as s:
        assert {i.intent_id: i.status for i in s.intents()} == {
            "o-1": IntentStatus.FAILED, "o-9": IntentStatus.PENDING, "o-2": IntentStatus.EXECUTING}
