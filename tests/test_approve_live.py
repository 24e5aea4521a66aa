"""An operator's approval checks the guardrails again on what the live streams keep (prices,
positions, the wallet) when both Bybit streams are live, so the order leaves without three
REST round trips first; while a stream is not live it reads the venue, as before. The
picture is the streams' newest: a wallet pushed a moment ago blocks the entry."""

from __future__ import annotations

import asyncio
import time

from engine.models import DecisionRecord, DecisionStatus, IntentStatus
from tests.fakes.bybit_rig import long_btc, plan
from tests.test_bybit_stream import started, stop, stream_rig, until, ws  # noqa: F401 (ws: the fixture)

CREATE = "/v5/order/create"
READS = ("/v5/market/tickers", "/v5/account/wallet-balance", "/v5/position/list")


def pending(rig, **over) -> str:
    """A decision waiting for the operator, reviewed on the fake's market."""
    review = plan(rig, long_btc(**over))
    d = review.decision
    rec = DecisionRecord(decision=d, review=review, status=DecisionStatus.PENDING, recorded_at=time.time())
    rig.engine.pending.add(rec, rig.engine.clock.now() + 60)
    return d.decision_id


def reads_before_the_create(srv, since: float) -> list[str]:
    """The REST reads between `since` and the order's create (or the end, if none was sent)."""
    with srv.exchange.lock:
        out = []
        for t, _, path, _ in srv.exchange.requests:
            if t < since:
                continue
            if path == CREATE:
                break
            if path in READS:
                out.append(path)
        return out


def approved_line(rig) -> str:
    [line] = [e.message for e in rig.events if getattr(e, "code", "") == "APPROVED"]
    return line


async def test_with_both_streams_live_an_approval_sends_without_a_rest_read(srv, ws, tmp_path):
    rig = stream_rig(srv, ws, tmp_path)
    try:
        await started(rig)
        decision_id = pending(rig)
        t0 = time.perf_counter()
        answer = await rig.engine.approve(decision_id)
        assert answer.ok, answer
        assert reads_before_the_create(srv, t0) == []
        assert srv.count(CREATE) == 1
        assert rig.store.get_position("BTCUSDT") is not None
        assert "checked again on the live streams" in approved_line(rig)
    finally:
        await stop(rig)


async def test_a_wallet_pushed_a_moment_ago_is_what_the_approval_checks(srv, ws, tmp_path):
    rig = stream_rig(srv, ws, tmp_path)
    try:
        marks = await started(rig)
        decision_id = pending(rig)  # reviewed while the account held 10,000
        with srv.exchange.lock:  # the money went elsewhere: the venue pushes the wallet
            srv.exchange.wallet = 5.0
            srv.exchange._push("wallet", None)
        await until(lambda: marks._balance is not None and marks._balance.available < 10, what="the wallet push")
        t0 = time.perf_counter()
        answer = await rig.engine.approve(decision_id)
        assert not answer.ok and "BLOCKED now: available margin 5.00 USDT" in answer.message, answer
        assert reads_before_the_create(srv, t0) == []  # the push decided it, not a REST read
        assert srv.count(CREATE) == 0
    finally:
        await stop(rig)


async def test_while_the_stream_is_stale_an_approval_reads_the_venue(srv, ws, tmp_path):
    rig = stream_rig(srv, ws, tmp_path, ws_stale_sec=1)
    try:
        marks = await started(rig)
        ws.silent = True  # connected, no data: stale, and REST polling takes over
        await until(lambda: marks.status == "stale", timeout=5, what="the stale stream")
        decision_id = pending(rig)
        t0 = time.perf_counter()
        answer = await rig.engine.approve(decision_id)
        assert answer.ok, answer
        assert set(reads_before_the_create(srv, t0)) == set(READS)
        assert approved_line(rig).endswith("approved by operator")  # the rule: not said
        assert rig.store.get_intent(answer.intent_id).status is IntentStatus.EXECUTED
    finally:
        await stop(rig)


async def test_without_the_private_stream_an_approval_reads_the_venue(srv, ws, tmp_path):
    ws.refuse_auth = True  # public prices stream, the account does not
    rig = stream_rig(srv, ws, tmp_path)
    try:
        await rig.engine.start()
        link = rig.engine.marks.streams.link("private")
        await until(lambda: bool(link.refused), what="the refusal")
        decision_id = pending(rig)
        t0 = time.perf_counter()
        answer = await rig.engine.approve(decision_id)
        assert answer.ok, answer
        assert {"/v5/account/wallet-balance", "/v5/position/list"} <= set(reads_before_the_create(srv, t0))
        assert approved_line(rig).endswith("approved by operator")
    finally:
        await stop(rig)
        await asyncio.sleep(0)


async def test_after_the_private_stream_comes_back_an_approval_reads_the_venue_until_the_resync_pass(srv, ws, tmp_path):
    """What changed while the private stream was down was never pushed: until a pass begun
    after it came up has read the positions and the wallet, the picture is not trusted."""
    rig = stream_rig(srv, ws, tmp_path)
    try:
        marks = await started(rig)
        assert marks.picture(["BTCUSDT"]) is not None
        async with rig.engine._monitor_lock:  # the reconciling pass cannot run yet
            marks.on_resync()  # the private stream is up again
            assert marks.picture(["BTCUSDT"]) is None
            # What is published while an earlier pass holds the lock (here: by hand) does not count.
            await asyncio.to_thread(rig.engine.monitor.publish)
            await rig.engine.publish_account()
            assert marks.picture(["BTCUSDT"]) is None
            decision_id = pending(rig)
            t0 = time.perf_counter()
            answer = await rig.engine.approve(decision_id)
            assert answer.ok, answer
            assert {"/v5/account/wallet-balance", "/v5/position/list"} <= set(reads_before_the_create(srv, t0))
        await until(lambda: marks.picture(["BTCUSDT"]) is not None, what="the resync pass to read the account")
    finally:
        await stop(rig)
