"""StateStore: atomic, locked, validated state, with history an append-only log per UTC hour."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.models import (
    Action,
    Clamp,
    CloseReason,
    Cooldown,
    Decision,
    DecisionRecord,
    Intent,
    IntentStatus,
    OrderPlan,
    PositionMeta,
    Review,
    Trade,
    Verdict,
)
from engine.historylog import encode_log, parse_log
from engine.store import StateStore, StoreCorrupt, StoreError, StoreLocked, check_state_dir

REPO = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).with_name("store_writer.py")
DAY = 1_767_225_600.0  # 2026-01-01 00:00 UTC
HOUR = 3600.0
DAYS = 86_400.0


# --- records ------------------------------------------------------------------------------


def intent(intent_id: str = "o-1", created_at: float = DAY, status: IntentStatus = IntentStatus.PENDING,
           **kw) -> Intent:
    return Intent(intent_id=intent_id, kind="OPEN", symbol="BTCUSDT", side="long", qty=0.01,
                  status=status, created_at=created_at, updated_at=created_at, **kw)


def position(symbol: str = "BTCUSDT", **kw) -> PositionMeta:
    return PositionMeta(symbol=symbol, side="long", opened_at=DAY, time_in_trade_limit_sec=600, **kw)


def cooldown(symbol: str = "BTCUSDT", until: float = DAY + 300, **kw) -> Cooldown:
    return Cooldown(symbol=symbol, reason="STOP_LOSS", started_at=DAY, until=until, **kw)


def trade(closed_at: float = DAY + HOUR, pnl: float = 1.5, **kw) -> Trade:
    return Trade(symbol="BTCUSDT", side="long", qty=0.01, entry_price=100.0, exit_price=101.5,
                 opened_at=closed_at - 60, closed_at=closed_at, pnl=pnl, roi_pct=1.5,
                 duration_sec=60.0, reason=CloseReason.TAKE_PROFIT, **kw)


def record(recorded_at: float = DAY + HOUR, decision_id: str = "d-1", status: str = "PROPOSED",
           **kw) -> DecisionRecord:
    decision = Decision(decision_id=decision_id, symbol="BTCUSDT", action=Action.OPEN_LONG, confidence=0.7,
                        created_at=recorded_at)
    return DecisionRecord(decision=decision, status=status, recorded_at=recorded_at, **kw)


def state_file(d: Path) -> Path:
    return d / "state.json"


def day_file(d: Path, hour: str) -> Path:
    """The history file of a UTC hour, e.g. 2026-01-01T01."""
    return d / "history" / f"{hour}.jsonl"


def log_tables(path: Path) -> dict:
    """The tables a history log holds (the last line of each id wins)."""
    return parse_log(path, path.read_bytes())[0]


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def fingerprint(path: Path) -> tuple[int, int, bytes]:
    """Inode, mtime and bytes: an atomic rewrite changes the inode even with the same bytes."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def refused_and_kept(path: Path, write, read, match: str) -> None:
    """A write over a file changed behind the store is refused (StoreCorrupt matching
    `match`), nothing more is served from memory either, and the file stays as found."""
    before = fingerprint(path)
    with pytest.raises(StoreCorrupt, match=match):
        write()
    with pytest.raises(StoreCorrupt):
        read()
    assert fingerprint(path) == before


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=30,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def store(tmp_path: Path):
    with StateStore(tmp_path / "state") as s:
        yield s


# --- round trips and the API --------------------------------------------------------------


def test_every_model_round_trips_through_a_reopened_store(tmp_path: Path) -> None:
    full_intent = intent(
        "o-full", decision_id="d-9", leverage=5.0, take_profit=110.0, stop_loss=95.0,
        close_reason=CloseReason.AI_CLOSE, order_id="ord-1", reason="why", time_in_trade_limit_sec=300,
        cooldown_sec=60, trail_activation_roi=2.0, tp_pct=1.0, sl_pct=0.5, status=IntentStatus.EXECUTING,
    )
    meta = position(cooldown_sec=60, tp_pct=1.0, sl_pct=0.5, take_profit=110.0, stop_loss=95.0,
                    trail_activation_roi=2.0, trailing_armed=True, entry_price=100.123456789, qty=0.3,
                    leverage=7.0, intent_id="o-full", adopted=True)
    cool = cooldown(side="short")
    closed = trade(leverage=3.0, intent_id="o-full", adopted=True, pnl=-0.1 + 0.2)
    plan = OrderPlan(symbol="BTCUSDT", side="long", qty=0.3, price=100.0, leverage=7.0, take_profit=110.0,
                     stop_loss=95.0, margin=4.28, notional=30.0)
    rec = record(status="EXECUTED", message="filled", intent_id="o-full",
                 audit={"prompt_tokens": 12, "notes": ["a", None]})
    rec = rec.model_copy(update={"review": Review(
        verdict=Verdict.CONVERTED, reasons=["REVERSE_DISABLED"], detail=["reverse became close"],
        clamps=[Clamp(field="leverage", original=50.0, value=7.0, why="max leverage")],
        decision=rec.decision, order=plan)})

    with StateStore(tmp_path) as s:
        s.put_intent(full_intent)
        s.put_position(meta)
        s.put_cooldown(cool)
        s.add_trade(closed)
        s.add_decision(rec)
    with StateStore(tmp_path) as s:
        assert s.get_intent("o-full") == full_intent
        assert s.get_position("BTCUSDT") == meta
        assert s.get_cooldown("BTCUSDT") == cool
        assert s.trades() == [closed]
        assert s.decisions() == [rec]


def test_intents_replace_by_id_filter_by_status_and_delete(store: StateStore) -> None:
    store.put_intent(intent("o-1", created_at=DAY + 2))
    store.put_intent(intent("o-2", created_at=DAY + 1))
    store.put_intent(intent("o-1", created_at=DAY + 2, status=IntentStatus.EXECUTED, order_id="x"))
    assert [i.intent_id for i in store.intents()] == ["o-2", "o-1"]  # oldest first
    assert store.get_intent("o-1").status is IntentStatus.EXECUTED
    assert store.get_intent("o-1").order_id == "x"
    assert [i.intent_id for i in store.intents(IntentStatus.PENDING)] == ["o-2"]
    assert store.get_intent("nope") is None
    assert store.delete_intents_older_than(DAY + 2) == 1
    assert [i.intent_id for i in store.intents()] == ["o-1"]


def test_positions_and_cooldowns_are_keyed_by_symbol(store: StateStore) -> None:
    store.put_position(position("ETHUSDT"))
    store.put_position(position("BTCUSDT", qty=1.0))
    store.put_position(position("BTCUSDT", qty=2.0))
    assert [(p.symbol, p.qty) for p in store.positions()] == [("BTCUSDT", 2.0), ("ETHUSDT", 0.0)]
    assert store.delete_position("BTCUSDT") is True
    assert store.delete_position("BTCUSDT") is False
    assert store.get_position("BTCUSDT") is None

    store.put_cooldown(cooldown("BTCUSDT", until=DAY + 10))
    store.put_cooldown(cooldown("BTCUSDT", until=DAY + 100))
    store.put_cooldown(cooldown("ETHUSDT", until=DAY + 50))
    assert [(c.symbol, c.until) for c in store.cooldowns()] == [("BTCUSDT", DAY + 100), ("ETHUSDT", DAY + 50)]
    assert store.delete_expired_cooldowns(DAY + 50) == 1  # `until` reached means expired
    assert store.get_cooldown("ETHUSDT") is None
    assert store.get_cooldown("BTCUSDT").until == DAY + 100


def test_decisions_newest_first_across_days_and_update_in_place(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_decision(record(DAY + HOUR, "d-1"))
        s.add_decision(record(DAY + 2 * HOUR, "d-2"))
        s.add_decision(record(DAY + DAYS + HOUR, "d-3"))
        s.update_decision(record(DAY + HOUR, "d-1", status="EXECUTED"))
        assert [(r.decision.decision_id, r.status) for r in s.decisions()] == [
            ("d-3", "PROPOSED"), ("d-2", "PROPOSED"), ("d-1", "EXECUTED")]
        assert [r.decision.decision_id for r in s.decisions(limit=2)] == ["d-3", "d-2"]
    log = day_file(tmp_path, "2026-01-01T01")
    assert len(log_tables(log)["decisions"]) == 1
    # Append-only: the update is a second line for the same document, which wins.
    assert [(e["id"], e["doc"]["status"]) for e in log_lines(log)] == [(1, "PROPOSED"), (1, "EXECUTED")]
    with StateStore(tmp_path) as s:
        assert [(r.decision.decision_id, r.status) for r in s.decisions()][-1] == ("d-1", "EXECUTED")


def test_trades_since_limit_and_realised_pnl(store: StateStore) -> None:
    store.add_trade(trade(DAY + HOUR, pnl=1.0))
    store.add_trade(trade(DAY + DAYS + HOUR, pnl=-0.25))
    store.add_trade(trade(DAY + 2 * DAYS + HOUR, pnl=2.0))
    assert [t.pnl for t in store.trades()] == [2.0, -0.25, 1.0]
    assert [t.pnl for t in store.trades(limit=1)] == [2.0]
    assert [t.pnl for t in store.trades(since=DAY + DAYS + HOUR)] == [2.0, -0.25]
    assert store.realised_pnl_since(DAY + DAYS) == pytest.approx(1.75)
    assert store.realised_pnl_since(DAY + 3 * DAYS) == 0.0


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    s = StateStore(tmp_path)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        s.put_intent(intent())


# --- cleanup --------------------------------------------------------------------------------


def test_cleanup_keeps_executing_intents_past_their_ttl(store: StateStore) -> None:
    for status in IntentStatus:
        store.put_intent(intent(f"old-{status.value.lower()}", created_at=DAY, status=status))
    store.put_intent(intent("fresh", created_at=DAY + 590))
    store.put_cooldown(cooldown("BTCUSDT", until=DAY + 100))
    store.put_cooldown(cooldown("ETHUSDT", until=DAY + 1000))

    counts = store.cleanup(now=DAY + 600, intent_ttl_sec=300)

    assert counts == {"intents": 3, "cooldowns": 1, "history_files": 0}
    assert sorted(i.intent_id for i in store.intents()) == ["fresh", "old-executing"]
    assert [c.symbol for c in store.cooldowns()] == ["ETHUSDT"]


def test_cleanup_deletes_history_days_past_retention(tmp_path: Path) -> None:
    with StateStore(tmp_path, history_retention_days=2) as s:
        for n in range(6):  # 2026-01-01 .. 2026-01-06
            s.add_trade(trade(DAY + n * DAYS + HOUR))
            s.add_decision(record(DAY + n * DAYS + HOUR, f"d-{n}"))
        counts = s.cleanup(now=DAY + 5 * DAYS + 12 * HOUR, intent_ttl_sec=300)
        assert counts["history_files"] == 3
        assert sorted(p.name for p in (tmp_path / "history").iterdir()) == [
            "2026-01-04T01.jsonl", "2026-01-05T01.jsonl", "2026-01-06T01.jsonl"]
        assert len(s.trades()) == 3
        assert [r.decision.decision_id for r in s.decisions()] == ["d-5", "d-4", "d-3"]
        assert s.cleanup(now=DAY + 5 * DAYS + 12 * HOUR, intent_ttl_sec=300)["history_files"] == 0


# --- history partitioning -----------------------------------------------------------------


def test_history_is_one_file_per_utc_hour(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_decision(record(DAY + DAYS - 1, "d-late"))  # 23:59:59 on Jan 1st
        s.add_trade(trade(DAY + DAYS))  # midnight: Jan 2nd
        s.add_trade(trade(DAY + DAYS + HOUR - 1))  # 00:59:59: the same hour
        names = sorted(p.name for p in (tmp_path / "history").iterdir())
        assert names == ["2026-01-01T23.jsonl", "2026-01-02T00.jsonl"]
        assert set(log_tables(day_file(tmp_path, "2026-01-01T23"))) == {"decisions"}
        assert len(log_tables(day_file(tmp_path, "2026-01-02T00"))["journal"]) == 2
        assert not state_file(tmp_path).exists()  # history writes leave hot state alone


def test_hot_writes_do_not_touch_history_and_history_writes_touch_only_their_hour(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_decision(record(DAY + HOUR, "d-1"))
        s.put_intent(intent("o-0"))
        day1 = fingerprint(day_file(tmp_path, "2026-01-01T01"))
        time.sleep(0.01)  # so an mtime change would show

        s.put_intent(intent("o-1"))
        s.put_position(position())
        s.put_cooldown(cooldown())
        s.delete_position("BTCUSDT")
        s.cleanup(now=DAY, intent_ttl_sec=1e9)
        assert fingerprint(day_file(tmp_path, "2026-01-01T01")) == day1

        hot = fingerprint(state_file(tmp_path))
        s.add_trade(trade(DAY + DAYS + HOUR))
        s.add_decision(record(DAY + DAYS + HOUR, "d-2"))
        s.update_decision(record(DAY + DAYS + HOUR, "d-2", status="EXECUTED"))
        assert fingerprint(state_file(tmp_path)) == hot
        assert fingerprint(day_file(tmp_path, "2026-01-01T01")) == day1


# --- files: modes, lock, leftovers --------------------------------------------------------


def test_files_are_0600_and_a_new_state_dir_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual umask would leave files world-readable
    try:
        state_dir = tmp_path / "fresh" / "state"
        with StateStore(state_dir) as s:
            s.put_intent(intent())  # state.log
            s.put_position(position())  # state.json
            s.add_trade(trade())
            lock = state_dir / "scalpdesk.lock"
            for path in (state_file(state_dir), state_dir / "state.log", day_file(state_dir, "2026-01-01T01"), lock):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
            assert stat.S_IMODE((state_dir / "history").stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_second_store_in_the_same_process_is_locked_out_until_close(tmp_path: Path) -> None:
    first = StateStore(tmp_path)
    with pytest.raises(StoreLocked, match=rf"in use by another scalpdesk \(pid {os.getpid()}\)"):
        StateStore(tmp_path)
    first.close()
    StateStore(tmp_path).close()


def test_lock_holds_across_processes(tmp_path: Path) -> None:
    probe = ("import sys; from pathlib import Path; from engine.store import StateStore, StoreLocked\n"
             "try:\n    StateStore(Path(sys.argv[1])).close(); print('opened')\n"
             "except StoreLocked as e:\n    print(e)")
    with StateStore(tmp_path):
        out = run_python(probe, str(tmp_path)).stdout.strip()
        assert out == (f"state directory {tmp_path} is in use by another scalpdesk (pid {os.getpid()}); "
                       "stop it first or use another --state-dir")
        assert (tmp_path / "scalpdesk.lock").read_text().strip() == str(os.getpid())
    assert run_python(probe, str(tmp_path)).stdout.strip() == "opened"

    # And the other way round: a child holds it; when it dies the kernel frees the lock.
    child = subprocess.Popen([sys.executable, str(WRITER), str(tmp_path), "0"], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        with pytest.raises(StoreLocked, match=rf"\(pid {child.pid}\)"):
            StateStore(tmp_path)
    finally:
        child.kill()
        child.communicate()
    StateStore(tmp_path).close()


def test_leftover_temp_files_are_ignored_and_removed_on_open(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.put_intent(intent())
        s.add_trade(trade())
    leftovers = [tmp_path / ".state.json.0badc0ffee.tmp",
                 tmp_path / "history" / ".2026-01-01.json.0badc0ffee.tmp"]
    for p in leftovers:
        p.write_bytes(b'{"intents": {"1": {"intent_')  # a write killed half way
    assert all(ok for _, ok, _ in check_state_dir(tmp_path))
    with StateStore(tmp_path) as s:
        assert [i.intent_id for i in s.intents()] == ["o-1"]
    assert not any(p.exists() for p in leftovers)


# --- corrupt files ------------------------------------------------------------------------


def test_corrupt_state_file_stops_the_start_and_is_left_untouched(tmp_path: Path) -> None:
    torn = b'{"intents": {"1": {"intent_id": "o-1", "kind": "OP'
    state_file(tmp_path).write_bytes(torn)
    before = fingerprint(state_file(tmp_path))
    for _ in range(2):  # the second try shows the failed start released the lock
        with pytest.raises(StoreCorrupt, match="not valid JSON") as err:
            StateStore(tmp_path)
        assert str(state_file(tmp_path)) in str(err.value)
        assert err.value.path == state_file(tmp_path)
    assert fingerprint(state_file(tmp_path)) == before


def test_corrupt_history_file_stops_the_start_and_is_left_untouched(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_trade(trade())
        s.add_trade(trade(pnl=2.0))
        s.add_decision(record(DAY + DAYS + HOUR))
    bad = day_file(tmp_path, "2026-01-01T01")
    first, second = bad.read_bytes().splitlines(keepends=True)
    bad.write_bytes(first[:-9] + b"\n" + second)  # a damaged line with a whole one after it
    before = fingerprint(bad)
    with pytest.raises(StoreCorrupt, match="line 1 is not valid JSON") as err:
        StateStore(tmp_path)
    assert str(bad) in str(err.value)
    assert fingerprint(bad) == before


def test_a_torn_last_line_is_a_write_that_never_returned_and_the_next_append_cuts_it(tmp_path: Path) -> None:
    from engine.journal import read_journal

    with StateStore(tmp_path) as s:
        s.add_trade(trade(pnl=1.0))
    log = day_file(tmp_path, "2026-01-01T01")
    whole = log.read_bytes()
    torn = json.dumps({"table": "journal", "id": 2, "doc": trade(pnl=2.0).model_dump(mode="json")}).encode()
    log.write_bytes(whole + torn[: len(torn) // 2])  # a crash in the middle of an append
    assert [t.pnl for t in read_journal(tmp_path)] == [1.0]  # readers skip it, change nothing
    assert all(ok for _, ok, _ in check_state_dir(tmp_path))
    with StateStore(tmp_path) as s:
        assert [t.pnl for t in s.trades()] == [1.0]
        s.add_trade(trade(pnl=3.0))
        assert [t.pnl for t in s.trades()] == [3.0, 1.0]
    assert log.read_bytes().startswith(whole)  # nothing before the tear was rewritten
    assert [e["doc"]["pnl"] for e in log_lines(log)] == [1.0, 3.0]


def test_history_of_the_earlier_layout_is_read_and_converted_once(tmp_path: Path) -> None:
    """An hour written by an earlier scalpdesk (TinyDB's JSON file) loses nothing."""
    from engine.journal import read_journal

    history = tmp_path / "history"
    history.mkdir()
    old = history / "2026-01-01T01.json"
    t1, t2 = trade(pnl=1.0), trade(DAY + HOUR + 60, pnl=-2.0)
    old.write_text(json.dumps({"journal": {"1": t1.model_dump(mode="json"), "2": t2.model_dump(mode="json")},
                               "decisions": {"1": record().model_dump(mode="json")}}))
    assert [t.pnl for t in read_journal(tmp_path)] == [1.0, -2.0]  # the report reads it as it is
    with StateStore(tmp_path) as s:
        assert [t.pnl for t in s.trades()] == [-2.0, 1.0]
        assert [r.decision.decision_id for r in s.decisions()] == ["d-1"]
        s.add_trade(trade(DAY + HOUR + 120, pnl=5.0))
    assert sorted(p.name for p in history.iterdir()) == ["2026-01-01T01.jsonl"]
    assert {e["table"]: e["id"] for e in log_lines(day_file(tmp_path, "2026-01-01T01"))} == {"journal": 3, "decisions": 1}
    assert [t.pnl for t in read_journal(tmp_path)] == [1.0, -2.0, 5.0]


def test_a_conversion_cut_short_after_the_log_was_written_keeps_the_log(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_trade(trade(pnl=1.0))
    log = day_file(tmp_path, "2026-01-01T01")
    old = log.with_suffix(".json")
    old.write_text(json.dumps({"journal": {"1": trade(pnl=1.0).model_dump(mode="json")}}))  # the same hour, both
    from engine.journal import read_journal

    assert [t.pnl for t in read_journal(tmp_path)] == [1.0]  # the log, not both
    before = log.read_bytes()
    with StateStore(tmp_path) as s:
        assert [t.pnl for t in s.trades()] == [1.0]
    assert not old.exists() and log.read_bytes() == before


def test_a_history_write_appends_its_record_and_rewrites_nothing(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_decisions([record(DAY + HOUR + n, f"d-{n}") for n in range(50)])
        log = day_file(tmp_path, "2026-01-01T01")
        ino, before = log.stat().st_ino, log.read_bytes()
        s.add_decisions([record(DAY + HOUR + 60, "d-new")])
        s.add_trade(trade())
        after = log.read_bytes()
        assert log.stat().st_ino == ino and after.startswith(before)
        assert [(e["table"], e["id"]) for e in log_lines(log)[50:]] == [("decisions", 51), ("journal", 1)]


def test_a_history_log_changed_behind_the_store_is_not_appended_to(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_trade(trade(pnl=1.0))
        log = day_file(tmp_path, "2026-01-01T01")
        log.write_bytes(b"")  # an operator emptied it
        refused_and_kept(log, lambda: s.add_trade(trade(pnl=2.0)), s.trades, "changed by another program")


def test_history_documents_are_never_removed_one_by_one(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_trade(trade())
        db = s._day_db(DAY + HOUR)
        with pytest.raises(StoreError, match="append-only"):
            db.table("journal").remove(doc_ids=[1])


VALID_INTENT = intent().model_dump(mode="json")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "the file is empty"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", "expected a JSON object of tables, found an array"),
        (b'{"intents": [1, 2]}', "table 'intents' should be an object, found an array"),
        (b'{"intents": {"first": {}}}', "document id 'first' that is not a number"),
        (b'{"intents": {"1": "o-1"}}', "table 'intents' document 1 should be an object, found a string"),
        (b'{"orders": {}}', "unexpected table 'orders'"),
        (json.dumps({"intents": {"1": {**VALID_INTENT, "qty": "lots"}}}).encode(),
         "table 'intents' document 1 is not a valid Intent: qty: Input should be a valid number"),
        (json.dumps({"intents": {"1": {**VALID_INTENT, "intent_id": "no spaces"}}}).encode(), "intent_id"),
        (json.dumps({"positions": {"1": {"symbol": "BTCUSDT"}}}).encode(),
         "not a valid PositionMeta: side: Field required"),
        (b'{"cooldowns": {"1": {"symbol": "X", "reason": "r", "started_at": 0, "until": NaN}}}',
         "until: Input should be a finite number"),
        (json.dumps({"intents": {"1": VALID_INTENT, "2": VALID_INTENT}}).encode(), "two records for 'o-1'"),
    ],
    ids=["empty", "not-utf8", "array", "table-not-object", "non-numeric-id", "doc-not-object",
         "unknown-table", "bad-field", "bad-intent-id", "missing-field", "nan", "duplicate-key"],
)
def test_invalid_state_file_is_reported_and_left_untouched(tmp_path: Path, content: bytes,
                                                           problem: str) -> None:
    state_file(tmp_path).write_bytes(content)
    before = fingerprint(state_file(tmp_path))
    with pytest.raises(StoreCorrupt) as err:
        StateStore(tmp_path)
    assert problem in str(err.value)
    assert str(state_file(tmp_path)) in str(err.value)
    assert fingerprint(state_file(tmp_path)) == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (json.dumps({"journal": {"1": {**trade().model_dump(mode="json"), "reason": "BORED"}}}).encode(),
         "table 'journal' document 1 is not a valid Trade: reason"),
        (json.dumps({"decisions": {"1": record(DAY + DAYS).model_dump(mode="json")}}).encode(),
         "is dated 2026-01-02T00, not 2026-01-01T00"),
        (json.dumps({"journal": {"1": trade(1e20).model_dump(mode="json")}}).encode(),
         "is dated out of range, not 2026-01-01T00"),
        (json.dumps({"intents": {"1": VALID_INTENT}}).encode(), "unexpected table 'intents'"),
    ],
    ids=["bad-trade", "wrong-day", "out-of-range-day", "hot-table-in-history"],
)
def test_invalid_history_file_is_reported_and_left_untouched(tmp_path: Path, content: bytes,
                                                             problem: str) -> None:
    (tmp_path / "history").mkdir()
    bad = day_file(tmp_path, "2026-01-01T00")
    bad.write_bytes(encode_log(json.loads(content)))
    before = fingerprint(bad)
    with pytest.raises(StoreCorrupt) as err:
        StateStore(tmp_path)
    assert problem in str(err.value)
    assert str(bad) in str(err.value)
    assert fingerprint(bad) == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[]\n", "line 1 should be {\"table\", \"id\", \"doc\"}"),
        (b'{"table": "journal", "id": 1}\n', "line 1 should be"),
        (b'{"table": "journal", "id": "1", "doc": {}}\n', "a positive integer id"),
        (b'{"table": "journal", "id": 0, "doc": {}}\n', "a positive integer id"),
        (b'{"table": "journal", "id": 1, "doc": []}\n', "an object"),
        (b"\n", "line 1 is not valid JSON"),
    ],
    ids=["not-object", "no-doc", "id-string", "id-zero", "doc-array", "blank-line"],
)
def test_a_history_log_line_of_the_wrong_shape_is_reported(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / "history").mkdir()
    bad = day_file(tmp_path, "2026-01-01T00")
    bad.write_bytes(content)
    before = fingerprint(bad)
    with pytest.raises(StoreCorrupt) as err:
        StateStore(tmp_path)
    assert problem in str(err.value)
    assert str(bad) in str(err.value)
    assert fingerprint(bad) == before


def test_file_damaged_while_running_is_not_overwritten(store: StateStore) -> None:
    store.put_position(position())
    path = state_file(store.state_dir)
    path.write_bytes(b'{"intents": ')
    refused_and_kept(path, lambda: store.put_position(position()), store.intents, "not valid JSON")


# --- check_state_dir ----------------------------------------------------------------------


def test_check_state_dir_on_a_sound_directory_while_a_store_holds_it(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.put_intent(intent())
        s.put_position(position())
        s.add_trade(trade())
        s.add_decision(record(DAY + DAYS + HOUR))
        assert check_state_dir(tmp_path) == [
            (str(state_file(tmp_path)), True, "1 intents, 1 positions, 0 cooldowns, 0 paper, 0 risk"),
            (str(day_file(tmp_path, "2026-01-01T01")), True, "0 decisions, 1 journal"),
            (str(day_file(tmp_path, "2026-01-02T01")), True, "1 decisions, 0 journal"),
        ]


def test_check_state_dir_reports_each_bad_file_and_changes_nothing(tmp_path: Path) -> None:
    with StateStore(tmp_path) as s:
        s.add_trade(trade())
        s.add_trade(trade(DAY + DAYS + HOUR))
    state_file(tmp_path).write_bytes(b"[]")
    day_file(tmp_path, "2026-01-02T01").write_bytes(b"{\n")
    before = {p: fingerprint(p) for p in tmp_path.rglob("*") if p.is_file()}

    results = check_state_dir(tmp_path)

    assert [(Path(f).name, ok) for f, ok, _ in results] == [
        ("state.json", False), ("2026-01-01T01.jsonl", True), ("2026-01-02T01.jsonl", False)]
    assert "expected a JSON object of tables" in results[0][2]
    assert "not valid JSON" in results[2][2]
    assert {p: fingerprint(p) for p in tmp_path.rglob("*") if p.is_file()} == before


def test_check_state_dir_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert check_state_dir(missing) == [(str(missing), False, "no such directory")]
    assert not missing.exists()
    assert check_state_dir(tmp_path) == [(str(state_file(tmp_path)), True, "absent; the store starts empty")]
    assert list(tmp_path.iterdir()) == []


# --- concurrency and crashes --------------------------------------------------------------


def test_threads_hammering_the_store_lose_nothing(tmp_path: Path) -> None:
    threads, rounds = 4, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                store.put_intent(intent(f"t{t}-{i}", created_at=DAY + i))
                store.put_position(position(f"SYM{t}", qty=float(i)))
                store.add_trade(trade(DAY + HOUR + i, intent_id=f"t{t}-{i}"))
                store.intents()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    with StateStore(tmp_path) as store:
        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        assert errors == []
    json.loads(state_file(tmp_path).read_bytes())
    with StateStore(tmp_path) as store:
        expected = {f"t{t}-{i}" for t in range(threads) for i in range(rounds)}
        assert {i.intent_id for i in store.intents()} == expected
        assert {t.intent_id for t in store.trades(limit=10_000)} == expected
        last = float(rounds - 1)
        assert {(p.symbol, p.qty) for p in store.positions()} == {(f"SYM{t}", last) for t in range(threads)}


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_whole_files_and_loses_no_completed_write(tmp_path: Path) -> None:
    rng = random.Random(20260101)
    completed: dict[int, int] = {}  # run -> last round the writer reported done
    torn_writes = 0  # kills that landed mid-write (a temp file was left behind)
    for run in range(30):
        writer = [sys.executable, str(WRITER), str(tmp_path), str(run)]
        child = subprocess.Popen(writer, stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"ready\n"
            # Kill after a random number of rounds, at a random point of the next one: paced
            # by the writer's progress, not by wall time, so a loaded machine still writes.
            reported = [child.stdout.readline() for _ in range(rng.randint(0, 4))]
            time.sleep(rng.uniform(0.0, 0.006))
            child.send_signal(signal.SIGKILL)
            out, _ = child.communicate(timeout=10)
        finally:
            child.kill()
        assert child.returncode == -signal.SIGKILL
        reported += out.split(b"\n")[:-1]  # the piece after the last newline may be a torn print
        completed[run] = int(reported[-1]) if reported else -1

        torn_writes += any(tmp_path.rglob(".*.tmp"))
        if state_file(tmp_path).exists():  # not yet, if the first kill came before the first write
            json.loads(state_file(tmp_path).read_bytes())  # whole JSON, wherever the kill hit
        for log in (tmp_path / "history").glob("*.jsonl"):
            parse_log(log, log.read_bytes())  # whole lines, and at most a torn last one
        with StateStore(tmp_path) as s:
            ids = {i.intent_id for i in s.intents()}
            traded = {t.intent_id for t in s.trades(limit=100_000)}
            meta = s.get_position("BTCUSDT")
        for r, last in completed.items():
            done = {f"r{r}-{i}" for i in range(last + 1)}
            assert done <= ids, f"run {r}: lost intents {sorted(done - ids)[:5]}"
            assert done <= traded, f"run {r}: lost trades {sorted(done - traded)[:5]}"
        last_qty = max((r * 1_000_000 + last for r, last in completed.items() if last >= 0), default=None)
        if last_qty is not None:
            assert meta is not None and meta.qty >= last_qty

    assert torn_writes > 0, "no kill landed mid-write: the test proved nothing"


@pytest.fixture
def writes(monkeypatch) -> list[str]:
    """The name of each file written: state.json replaced whole, a history log appended to."""
    from engine import historylog
    from engine import store as store_mod

    from engine import statelog

    names: list[str] = []
    real_write, real_append = store_mod.atomic_write, historylog.append

    def atomic_write(path, payload, **kw):
        names.append(Path(path).name)
        return real_write(path, payload, **kw)

    def append(fd, payload, fsync):
        names.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        return real_append(fd, payload, fsync)

    monkeypatch.setattr(store_mod, "atomic_write", atomic_write)
    monkeypatch.setattr(historylog, "append", append)
    monkeypatch.setattr(statelog, "append", append)
    return names


def test_add_decisions_writes_each_history_file_once(tmp_path: Path, writes: list[str]) -> None:
    with StateStore(tmp_path) as s:
        s.add_decisions([record(DAY + HOUR, f"d-{n}") for n in range(5)] + [record(DAY + 2 * HOUR, "d-9")])
        assert sorted(writes) == ["2026-01-01T01.jsonl", "2026-01-01T02.jsonl"]
        assert [r.decision.decision_id for r in s.decisions()] == ["d-9", "d-4", "d-3", "d-2", "d-1", "d-0"]


def test_a_cycles_new_records_and_updates_are_one_append_per_history_file(tmp_path: Path, writes: list[str]) -> None:
    with StateStore(tmp_path) as s:
        s.add_decisions([record(DAY + HOUR, "d-old"), record(DAY + 2 * HOUR, "d-other")])
        writes.clear()
        s.add_decisions([record(DAY + HOUR + 5, f"d-{n}") for n in range(3)],
                        [record(DAY + HOUR, "d-old", status="EXPIRED"), record(DAY + 2 * HOUR, "d-other", status="EXPIRED")])
        assert sorted(writes) == ["2026-01-01T01.jsonl", "2026-01-01T02.jsonl"]
        assert [(r.decision.decision_id, r.status) for r in s.decisions()] == [
            ("d-other", "EXPIRED"), ("d-2", "PROPOSED"), ("d-1", "PROPOSED"), ("d-0", "PROPOSED"), ("d-old", "EXPIRED")]
    with StateStore(tmp_path) as s:  # and so they are on file
        assert [r.status for r in s.decisions()] == ["EXPIRED", "PROPOSED", "PROPOSED", "PROPOSED", "EXPIRED"]


def test_every_put_is_one_durable_write(tmp_path: Path, writes: list[str]) -> None:
    """A new record and a replaced one each cost one write (TinyDB's upsert writes twice
    for a new record: an update that matched nothing, then the insert)."""
    with StateStore(tmp_path) as s:
        for put, file in ((lambda: s.put_intent(intent("o-1")), "state.log"), (lambda: s.put_position(position()), "state.json"),
                          (lambda: s.put_cooldown(cooldown()), "state.json")):
            writes.clear()
            put()
            assert writes == [file]
            writes.clear()
            put()  # the same key again: replaced
            assert writes == [file]
        s.add_decision(record(DAY + HOUR, "d-1"))
        writes.clear()
        s.update_decision(record(DAY + HOUR, "d-1", status="EXECUTED"))
        assert writes == ["2026-01-01T01.jsonl"]
        writes.clear()
        s.update_decision(record(DAY + HOUR, "d-2", status="EXECUTED"))  # none to replace: inserted
        assert writes == ["2026-01-01T01.jsonl"]
        assert len(s.intents()) == 1 and len(s.decisions()) == 2


# --- memory behind the atomic writes ---------------------------------------------------------


def test_hot_reads_and_recent_trades_come_from_memory(tmp_path: Path, monkeypatch) -> None:
    import engine.store as store_mod

    with StateStore(tmp_path) as s:
        s.put_intent(intent("o-1"))
        s.put_intent(intent("o-2", status=IntentStatus.EXECUTING))
        s.put_position(position())
        s.put_cooldown(cooldown())
        for i in range(5):
            s.add_trade(trade(DAY + HOUR * (i + 1), pnl=float(i)))
        loads = []
        real = store_mod._load
        monkeypatch.setattr(store_mod, "_load", lambda path: loads.append(path) or real(path))
        assert [i.intent_id for i in s.intents(IntentStatus.EXECUTING)] == ["o-2"]
        assert s.get_intent("o-1").status is IntentStatus.PENDING
        assert s.get_position("BTCUSDT") is not None and len(s.cooldowns()) == 1
        assert [t.pnl for t in s.trades(limit=3)] == [4.0, 3.0, 2.0]
        assert [t.pnl for t in s.trades(since=DAY + 2 * HOUR)] == [4.0, 3.0, 2.0, 1.0]
        assert loads == []  # not one file read
    # and the files hold the same as memory did
    with StateStore(tmp_path) as s:
        assert [i.intent_id for i in s.intents()] == ["o-1", "o-2"]
        assert [t.pnl for t in s.trades()] == [4.0, 3.0, 2.0, 1.0, 0.0]


def test_trades_beyond_the_newest_in_memory_are_read_from_the_files(tmp_path: Path, monkeypatch) -> None:
    import engine.store as store_mod

    monkeypatch.setattr(store_mod, "RECENT_TRADES", 3)
    with StateStore(tmp_path) as s:
        for i in range(6):
            s.add_trade(trade(DAY + HOUR * (i + 1), pnl=float(i)))
        assert [t.pnl for t in s.trades(limit=10)] == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
        assert len(s._recent) == 3
    with StateStore(tmp_path) as s:
        assert [t.pnl for t in s.trades(limit=2)] == [5.0, 4.0]
        assert [t.pnl for t in s.trades(limit=10)] == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
        assert [t.pnl for t in s.trades(since=DAY + 2 * HOUR)] == [5.0, 4.0, 3.0, 2.0, 1.0]
        assert s.realised_pnl_since(DAY) == 15.0


def test_a_throwaway_store_writes_at_flush_and_close_only(tmp_path: Path) -> None:
    s = StateStore(tmp_path, durable=False)
    s.put_intent(intent("o-1"))
    s.add_trade(trade())
    assert not state_file(tmp_path).exists() and not list(tmp_path.glob("history/*"))
    assert s.get_intent("o-1") is not None and len(s.trades()) == 1  # served from memory meanwhile
    s.flush()
    assert state_file(tmp_path).exists() and day_file(tmp_path, "2026-01-01T01").exists()
    s.put_intent(intent("o-2"))
    s.close()
    with StateStore(tmp_path) as again:
        assert [i.intent_id for i in again.intents()] == ["o-1", "o-2"]
        assert len(again.trades()) == 1


def test_a_sound_file_changed_behind_the_store_is_not_overwritten_either(store: StateStore) -> None:
    store.put_position(position())
    path = state_file(store.state_dir)
    path.write_text(json.dumps({"intents": {}}))  # an operator's edit, valid JSON
    refused_and_kept(path, lambda: store.put_cooldown(cooldown()), lambda: store.get_position("BTCUSDT"),
                     "changed by another program")
