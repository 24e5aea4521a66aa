"""Order latency: from an approved decision to the order request arriving at Bybit,
against a bare pybit place_order to the same (loopback) server in the same run.

    PYTHONPATH=. python bench/bench_order_latency.py [--n 200]

The paths, interleaved so they share the machine's conditions:
  bare     pybit HTTP.place_order(...) called directly: the floor.
  promise  what the engine's promises cost on their own, with nothing of the engine: the
           hop to a worker thread (the engine's loop must not wait for a venue), an open's
           intent encoded as JSON, appended to a log and fdatasync'ed (the intent on disk
           before anything is sent, as engine/statelog.py writes it), then the bare call.
           The lowest an order path that keeps both promises can reach here.
  auto     Engine._execute(record) of a reviewed EXECUTE decision (AUTO mode): the
           intent is written durably (one line appended to state.log, fdatasync'ed),
           leverage is set when it changed, then the create is sent.
  approve  Engine.approve(decision_id) (APPROVE mode, the operator pressed y) with the
           streams not used: the guardrails are checked again on a fresh REST read of the
           venue (tickers, wallet, positions) before the same path as auto.
  approve-live  the same with Bybit's streams live (the loopback WebSocket fake): the
           check reads what the streams keep (LiveMarks.picture), no REST round trip.
The clock stops when the loopback server receives the POST /v5/order/create (its
handler stamps time.perf_counter() in this same process). Prints p50, p99 and the
ratio to bare for each path.

--busy N runs N processes that spin on the CPU for the whole run (the "busy" figures:
on this 2-core machine, --busy 2 leaves the bench a share of a core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybit.unified_trading import HTTP  # noqa: E402

from engine import guardrails, statelog  # noqa: E402
from engine.clock import SystemClock  # noqa: E402
from engine.factory import build_engine  # noqa: E402
from engine.models import Action, Decision, DecisionRecord, IntentStatus  # noqa: E402
from tests.fakes.bybit_exchange import FAKE_KEY, FAKE_SECRET  # noqa: E402
from tests.fakes.bybit_rig import settings_for  # noqa: E402
from tests.fakes.bybit_server import BybitFakeServer  # noqa: E402
from tests.fakes.bybit_ws_server import BybitWsServer  # noqa: E402

CREATE = "/v5/order/create"


def arrival_after(srv: BybitFakeServer, t0: float) -> float:
    with srv.exchange.lock:
        return next(t for t, m, p, _ in srv.exchange.requests if p == CREATE and t >= t0)


def flatten(srv: BybitFakeServer, engine=None) -> None:
    """The venue flat again, and the engine's record of it too (else the next open is
    taken for a late fill and waits for the venue's closed-PnL before it returns), the
    streams' picture included (a push of the flat would start a monitor pass, and its
    journalled close a cooldown that blocks the next open)."""
    with srv.exchange.lock:
        srv.exchange.positions.clear()
    if engine is not None and engine.marks is not None:
        with engine.marks._lock:
            engine.marks._positions.clear()
    if engine is not None:
        engine.store.delete_position("BTCUSDT")


def an_intent(engine, snap, settings):
    """An open's intent as the executor writes it before the send (the promise path's)."""
    review = guardrails.review(decision(), engine._context(snap), settings)
    return engine.executor._open_intent("bench-intent-0000", review, time.time(), IntentStatus.EXECUTING)


def spin() -> None:
    while True:
        pass


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def decision() -> Decision:
    return Decision(symbol="BTCUSDT", action=Action.OPEN_LONG, confidence=0.9, tp_pct=2.0, sl_pct=1.5, leverage=5,
                    size_pct=10, time_in_trade_limit_sec=1800, cooldown_sec=900, rationale="bench")


async def main(n: int, busy: int = 0) -> None:
    burners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for b in burners:
        b.start()
    try:
        await run(n, busy)
    finally:
        for b in burners:
            b.terminate()


async def live(engine, timeout: float = 30.0) -> None:
    """Until both streams are live and the live picture holds the account."""
    until = time.monotonic() + timeout
    while engine.marks is None or engine.marks.picture(["BTCUSDT"]) is None:
        if time.monotonic() > until:
            raise SystemExit("the streams did not come up")
        await asyncio.sleep(0.05)


async def run(n: int, busy: int) -> None:
    with BybitFakeServer() as srv, BybitWsServer(srv.exchange) as ws, tempfile.TemporaryDirectory() as tmp:
        ex = srv.exchange
        ex.trend["BTCUSDT"] = 1
        ex.wallet = 1e9
        bare = HTTP(testnet=True, api_key=FAKE_KEY, api_secret=FAKE_SECRET, max_retries=1, retry_codes={0})
        bare.endpoint = srv.url
        # The risk limits off: hundreds of opens and closes in a minute are the bench, not a trader's day.
        # The timers run (the streams start with them), but no cycle or monitor pass falls in the run;
        # the fake pushes prices only when they move, so silence is not staleness here.
        settings = settings_for(srv, Path(tmp) / "state", mode="approve", bybit_timeout_sec=10,
                                max_trades_per_day=0, daily_loss_limit_pct=0, max_drawdown_pct=0,
                                bybit_ws_url=ws.url, ws_stale_sec=300, decision_interval_sec=3600,
                                monitor_interval_sec=300)
        engine = build_engine(settings, clock=SystemClock())
        await engine.start()
        await live(engine)
        streams_picture = engine.marks.picture
        snap = await asyncio.to_thread(engine._snapshot, ["BTCUSDT"])
        results: dict[str, list[float]] = {"bare": [], "promise": [], "auto": [], "approve": [], "approve-live": []}
        promise_log = statelog.StateLog(Path(tmp) / "promise.log", fsync=True)
        intent = an_intent(engine, snap, settings)

        def promised(i: int) -> None:
            # as StateStore.put_intent makes its line: the model as JSON data, encoded, one log line
            promise_log.append(statelog.line(i + 1, "intents", "1", json.dumps(intent.model_dump(mode="json"))))
            bare.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001",
                             positionIdx=0, orderLinkId=f"promise-{i}")
            if promise_log.lines >= 100:
                promise_log.folded()

        try:
            for i in range(n + 5):  # the first 5 warm up connections and caches
                t0 = time.perf_counter()
                bare.place_order(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001",
                                 positionIdx=0, orderLinkId=f"bare-{i}")
                bare_ms = (arrival_after(srv, t0) - t0) * 1000
                await asyncio.sleep(0.02)  # the streams' pushes of the open land first
                flatten(srv, engine)

                t0 = time.perf_counter()
                await asyncio.to_thread(promised, i)
                promise_ms = (arrival_after(srv, t0) - t0) * 1000
                await asyncio.sleep(0.02)
                flatten(srv, engine)

                d = decision()
                review = guardrails.review(d, engine._context(snap), settings)
                assert review.order is not None, review
                record = DecisionRecord(decision=d, review=review, status="PROPOSED", recorded_at=time.time())
                t0 = time.perf_counter()
                await engine._execute(record)
                auto_ms = (arrival_after(srv, t0) - t0) * 1000
                await asyncio.sleep(0.02)  # the streams' pushes of the open land first
                flatten(srv, engine)

                approve_ms = {}
                for path in ("approve", "approve-live"):
                    engine.marks.picture = streams_picture if path == "approve-live" else (lambda symbols: None)
                    d = decision()
                    rec = DecisionRecord(decision=d, review=review.model_copy(update={"decision": d}),
                                         status="PENDING", recorded_at=time.time())
                    engine.pending.add(rec, time.time() + 60)
                    t0 = time.perf_counter()
                    answer = await engine.approve(d.decision_id)
                    assert answer.ok, answer
                    approve_ms[path] = (arrival_after(srv, t0) - t0) * 1000
                    await asyncio.sleep(0.02)  # the streams' pushes of the open land first
                    flatten(srv, engine)
                if i >= 5:
                    results["bare"].append(bare_ms)
                    results["promise"].append(promise_ms)
                    results["auto"].append(auto_ms)
                    results.update({k: results[k] + [v] for k, v in approve_ms.items()})
        finally:
            promise_log.close()
            await engine.stop()
            engine.store.close()
    base50, base99 = pct(results["bare"], 0.5), pct(results["bare"], 0.99)
    print(f"order latency to the loopback Bybit fake, n={n} each, {busy} CPU burners (ms; ratio to bare pybit)")
    print(f"{'path':<13} {'p50':>8} {'p99':>8} {'mean':>8} {'x p50':>7} {'x p99':>7}")
    for name, xs in results.items():
        p50, p99 = pct(xs, 0.5), pct(xs, 0.99)
        print(f"{name:<13} {p50:8.2f} {p99:8.2f} {statistics.fmean(xs):8.2f} {p50 / base50:7.1f} {p99 / base99:7.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--busy", type=int, default=0, help="CPU-spinning processes during the run")
    a = ap.parse_args()
    asyncio.run(main(a.n, a.busy))
