"""The order path on BybitVenue against the loopback fake: one durable write before the
send (the intent as sent, a line appended to state.log), one after the answer (state.json); leverage sent only when it changes; a
process killed between the write and the send leaves an intent the restart resolves by
orderLinkId, with no order sent twice and none lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import statelog
from engine import store as store_mod
from engine.models import IntentStatus
from engine.store import StateStore
from engine.venues.base import OrderRejected
from tests.fakes.bybit_rig import long_btc, make_bybit_rig, plan
from tests.fakes.bybit_server import BybitFakeServer

ROOT = Path(__file__).resolve().parents[1]
CREATE = "/v5/order/create"
LEVERAGE = "/v5/position/set-leverage"


@pytest.fixture
def rig(srv, tmp_path):
    r = make_bybit_rig(srv, tmp_path / "state")
    yield r
    r.store.close()


def flatten(srv: BybitFakeServer, rig) -> None:
    """The venue flat again, and our record of it."""
    with srv.exchange.lock:
        srv.exchange.positions.clear()
    rig.store.delete_position("BTCUSDT")


def open_long(rig, **over):
    return rig.engine.executor.open(plan(rig, long_btc(**over)))


def test_one_durable_write_before_the_send_and_one_after_the_answer(srv, rig, monkeypatch):
    open_long(rig)  # the symbol's leverage is set by the first open: not what this test counts
    flatten(srv, rig)
    seen: list[tuple[float, str, object]] = []  # (when, what, the state written or the create's orderLinkId)
    real = store_mod.atomic_write

    def counted(path, payload, **kw):
        assert kw.get("fsync", True)  # durable: fsynced
        real(path, payload, **kw)
        seen.append((time.perf_counter(), Path(path).name, json.loads(payload)))

    real_append = statelog.append

    def appended(fd, payload, fsync):
        assert fsync  # durable: fdatasync'ed
        real_append(fd, payload, fsync)
        seen.append((time.perf_counter(), Path(os.readlink(f"/proc/self/fd/{fd}")).name, json.loads(payload)))

    monkeypatch.setattr(store_mod, "atomic_write", counted)
    monkeypatch.setattr(statelog, "append", appended)
    srv.exchange.observers.append(
        lambda phase, path, params: phase == "received" and path == CREATE
        and seen.append((time.perf_counter(), "create", params["orderLinkId"])))

    for _ in range(3):
        seen.clear()
        intent = open_long(rig)
        assert intent.status is IntentStatus.EXECUTED
        order = [what for _, what, _ in sorted(seen, key=lambda s: s[0])]
        # Before the send: the intent as sent, one line appended to state.log (engine.statelog).
        assert order == ["state.log", "create", "state.json"], order
        before, link, after = (x for _, _, x in sorted(seen, key=lambda s: s[0]))
        sent = before["doc"]  # the orderLinkId is on disk
        assert before["table"] == "intents" and sent["intent_id"] == link
        assert link == intent.intent_id and sent["status"] == "EXECUTING" and sent["sent_at"] is not None
        # What follows the answer, in one write: EXECUTED with the order id, and the position.
        [done] = [i for i in after["intents"].values() if i["intent_id"] == link]
        assert done["status"] == "EXECUTED" and done["order_id"]
        assert [p["intent_id"] for p in after["positions"].values() if p["symbol"] == "BTCUSDT"] == [link]
        flatten(srv, rig)


def test_leverage_is_set_once_for_repeated_opens_and_again_when_it_changes(srv, rig):
    levs = []
    for lev in (5, 5, 5, 3, 3, 5):
        intent = open_long(rig, leverage=lev)
        assert intent.status is IntentStatus.EXECUTED, intent
        levs.append(intent.leverage)
        flatten(srv, rig)
    assert levs == [5, 5, 5, 3, 3, 5]
    assert [p["buyLeverage"] for p in srv.sent(LEVERAGE)] == ["5", "3", "5"]
    assert srv.count(CREATE) == 6


def test_not_modified_means_right_and_a_failure_or_a_refused_order_sets_it_again(srv, rig):
    venue = rig.venue
    srv.exchange.leverage["BTCUSDT"] = 5.0
    venue.forget_leverage("BTCUSDT")
    venue.set_leverage("BTCUSDT", 5)  # 110043 "not modified": it is right
    venue.set_leverage("BTCUSDT", 5)
    assert srv.count(LEVERAGE) == 1

    # Another leverage shown by the position list (changed by hand on the open position):
    # set again at the next open.
    assert open_long(rig, leverage=5).status is IntentStatus.EXECUTED
    assert srv.count(LEVERAGE) == 1
    with srv.exchange.lock:
        srv.exchange.leverage["BTCUSDT"] = 7.0
        for pos in srv.exchange.positions.values():
            pos.leverage = 7.0
    assert [p.leverage for p in venue.positions()] == [7.0]
    flatten(srv, rig)
    assert open_long(rig, leverage=5).status is IntentStatus.EXECUTED
    flatten(srv, rig)
    assert srv.count(LEVERAGE) == 2

    # A set-leverage that fails forgets the entry.
    srv.exchange.fail(LEVERAGE, "retcode", ret_code=110013, ret_msg="cannot set leverage due to risk limit level")
    with pytest.raises(OrderRejected):
        venue.set_leverage("BTCUSDT", 3)
    n = srv.count(LEVERAGE)
    venue.set_leverage("BTCUSDT", 5)  # what was right before is asked again (110043)
    assert srv.count(LEVERAGE) == n + 1

    # An open the venue refuses forgets it too: the next open sets it before sending.
    # (Reviewed first: a review reads the position list, which also tells the leverage.)
    refused, landed, third = (plan(rig, long_btc(leverage=5)) for _ in range(3))
    srv.exchange.fail(CREATE, "retcode", ret_code=110007, ret_msg="ab not enough for new order")
    assert rig.engine.executor.open(refused).status is IntentStatus.FAILED
    assert rig.engine.executor.open(landed).status is IntentStatus.EXECUTED
    assert srv.count(LEVERAGE) == n + 2
    flatten(srv, rig)
    assert rig.engine.executor.open(third).status is IntentStatus.EXECUTED  # right again: not sent
    assert srv.count(LEVERAGE) == n + 2


# A process of its own: the open's durable write happens, then SIGKILL where the send
# would be (the venue's place_order is the next thing the executor calls).
KILLED_BETWEEN_WRITE_AND_SEND = r"""
import os, signal, sys
from pathlib import Path
from types import SimpleNamespace
from tests.fakes.bybit_rig import long_btc, make_bybit_rig, plan

rig = make_bybit_rig(SimpleNamespace(url=sys.argv[1]), Path(sys.argv[2]))
review = plan(rig, long_btc(decision_id="d-killed-between-write-and-send"))
rig.venue.set_leverage("BTCUSDT", review.order.leverage)
print("READY", flush=True)
rig.venue.place_order = lambda order: os.kill(os.getpid(), signal.SIGKILL)
rig.engine.executor.open(review)
print("NOT KILLED", flush=True)
"""


def test_sigkill_between_the_durable_write_and_the_send(srv, tmp_path):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALPDESK_", "BYBIT_"))}
    env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path / "config"))
    p = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_WRITE_AND_SEND, srv.url, str(state)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == -9 and "READY" in p.stdout and "NOT KILLED" not in p.stdout, p.stdout + p.stderr
    assert srv.count(CREATE) == 0  # it never left

    with StateStore(state) as store:  # not lost: on disk as sent, orderLinkId = intent_id
        [left] = store.intents()
    assert left.status is IntentStatus.EXECUTING and left.sent_at is not None
    assert left.intent_id == "o-killed-between-write-and-send"

    rig = make_bybit_rig(srv, state)  # the restart
    try:
        ex = rig.engine.executor
        assert "BTCUSDT" in ex.in_flight()  # no entry on the symbol while its order may land
        deadline = time.time() + 30
        while (i := rig.store.get_intent(left.intent_id)).status is IntentStatus.EXECUTING:
            assert time.time() < deadline, i
            ex.resolve_pending()
            time.sleep(0.2)
        assert i.status is IntentStatus.FAILED and "not found on the venue by orderLinkId" in i.reason
        looked_up = [q for q in srv.sent("/v5/order/realtime") if q.get("orderLinkId") == left.intent_id]
        assert looked_up  # resolved by asking the venue for its orderLinkId
        # The same decision again is IDEMPOTENT: nothing reaches the venue twice.
        again = ex.open(plan(rig, long_btc(decision_id="d-killed-between-write-and-send")))
        assert again.intent_id == left.intent_id and again.status is IntentStatus.FAILED
        assert rig.lines("IDEMPOTENT")
        assert srv.count(CREATE) == 0
        assert ex.in_flight() == {}
    finally:
        rig.store.close()
