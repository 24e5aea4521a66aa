"""Engine figures (issue: the trading engine on the simulated market).

1. Decision to order: guardrails.review + the durable intent writes + the paper venue's
   fill, per open (p50/p99), against a bare PaperVenue.place_order in the same run.
2. A state write's p50/p99 with 30 days of history on disk, against a bare atomic
   write (temp file, fsync, rename) of the same hot file: the fsync floor.
3. Engine time per decision cycle over 10 symbols on the simulated market (APPROVE
   mode, the rule decider), the decider's own time excluded, a cycle every 5 s of
   market time (p50/p99).
4. A monitor pass with 100 open positions (p50/p99), 5 s of market time apart.

Run: python bench/bench_engine.py [--opens 200] [--days 30] [--cycles 200] [--passes 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import guardrails  # noqa: E402
from engine.clock import ManualClock  # noqa: E402
from engine.config import load_settings  # noqa: E402
from engine.executor import Executor  # noqa: E402
from engine.features import symbol_features  # noqa: E402
from engine.models import (  # noqa: E402
    Action,
    CloseReason,
    Cooldown,
    Decision,
    DecisionRecord,
    Intent,
    OrderRequest,
    PositionMeta,
    Trade,
)
from engine.store import StateStore, atomic_write  # noqa: E402
from engine.venues.paper import PaperVenue  # noqa: E402
from engine.venues.simfeed import SimFeed  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def fmt(name: str, ms: list[float]) -> str:
    return f"{name:<44} p50 {pct(ms, 50):7.3f} ms   p99 {pct(ms, 99):7.3f} ms   (n={len(ms)})"


def bench_decision_to_order(n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    s = load_settings(state_dir=tmp / "state")
    clock = ManualClock()
    feed = SimFeed(["BTCUSDT"], seed=1, start=clock.now())
    venue = PaperVenue(feed, clock, equity=1e9)
    store = StateStore(s.state_dir)
    ex = Executor(store, venue, clock, s, lambda e: None)
    sym = "BTCUSDT"
    inst = venue.instruments([sym])
    engine_ms, bare_ms = [], []
    for i in range(n):
        clock.advance(5)
        f = symbol_features(venue.ticker(sym), venue.klines(sym, 1, 200), venue.klines(sym, 5, 100), venue.klines(sym, 15, 100))
        f = f.model_copy(update=dict(trend_1m=1, trend_5m=1, trend_15m=1, ret_5m_pct=0.0, last_range_1m_pct=0.0))
        ctx = guardrails.ReviewContext(now=clock.now(), balance=venue.balance(), features={sym: f}, instruments=inst)
        d = Decision(symbol=sym, action=Action.OPEN_LONG, confidence=0.8, tp_pct=2, sl_pct=1.5, leverage=5, size_pct=10)
        t0 = time.perf_counter()
        review = guardrails.review(d, ctx, s)
        intent = ex.open(review)
        engine_ms.append((time.perf_counter() - t0) * 1000)
        assert intent is not None and intent.status.value == "EXECUTED", intent
        ex.close(sym, CloseReason.FORCE_CLOSE)
        store.put_cooldown(Cooldown(symbol=sym, reason="x", started_at=0, until=0))
        # the baseline: the same venue's fill alone, opened and closed
        t0 = time.perf_counter()
        venue.place_order(OrderRequest(symbol=sym, side="Buy", qty=review.order.qty, order_link_id=f"bare-{i}"))
        bare_ms.append((time.perf_counter() - t0) * 1000)
        venue.place_order(OrderRequest(symbol=sym, side="Sell", qty=review.order.qty, order_link_id=f"bare-c{i}", reduce_only=True))
    store.close()
    print("Decision to order (guardrails + durable intent + paper fill)")
    print(fmt("  engine: review + intent writes + fill", engine_ms))
    print(fmt("  baseline: bare PaperVenue.place_order", bare_ms))
    print(f"  ratio p50 {pct(engine_ms, 50) / pct(bare_ms, 50):.1f}x   p99 {pct(engine_ms, 99) / pct(bare_ms, 99):.1f}x")


def fill_history(store: StateStore, days: int, now: float, cycle_sec: int = 60, symbols: int = 3) -> int:
    """30 days of a 60 s cycle over 3 symbols: one HOLD record per symbol per cycle,
    and 20 trades a day. Written file by file, each hour's log whole (as the store's
    appends would have left it over time)."""
    from engine.historylog import encode_log

    count = 0
    start = now - days * 86400
    by_file: dict[Path, list[dict]] = {}
    by_file_trades: dict[Path, list[dict]] = {}
    for c in range(int(days * 86400 / cycle_sec)):
        ts = start + c * cycle_sec
        path = store._day_path(ts) if hasattr(store, "_day_path") else None
        key = path or ts
        for k in range(symbols):
            rec = DecisionRecord(
                decision=Decision(symbol=("BTCUSDT", "ETHUSDT", "SOLUSDT")[k], action=Action.HOLD, confidence=0.3,
                                  rationale="no aligned trend (1m +1, 5m -1, 15m +1)", created_at=ts),
                status="HOLD", message="no aligned trend", recorded_at=ts,
            )
            by_file.setdefault(key, []).append(rec.model_dump(mode="json"))
            count += 1
        if c % 72 == 0:
            t = Trade(symbol="BTCUSDT", side="long", qty=0.01, entry_price=1e5, exit_price=1.01e5, opened_at=ts - 1800,
                      closed_at=ts, pnl=10, roi_pct=5, duration_sec=1800, reason=CloseReason.TAKE_PROFIT)
            by_file_trades.setdefault(key, []).append(t.model_dump(mode="json"))
    if path is None:  # the store has no per-file helper: go through its API (slow but exact)
        raise SystemExit("store has no _day_path(ts); cannot prefill history quickly")
    for p in set(by_file) | set(by_file_trades):
        p.parent.mkdir(parents=True, exist_ok=True)
        tables = {"decisions": {str(i): d for i, d in enumerate(by_file.get(p, []), 1)},
                  "journal": {str(i): t for i, t in enumerate(by_file_trades.get(p, []), 1)}}
        atomic_write(p, encode_log(tables))
    return count


def bench_store(days: int, n: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    now = 1_767_225_600.0 + 40 * 86400
    store = StateStore(tmp / "state", history_retention_days=days + 1)
    records = fill_history(store, days, now)
    store.close()
    size = sum(f.stat().st_size for f in (tmp / "state").rglob("*.json*"))
    t0 = time.perf_counter()
    store = StateStore(tmp / "state", history_retention_days=days + 1)
    open_ms = (time.perf_counter() - t0) * 1000
    hot, replace, hist, trade, bare = [], [], [], [], []
    for i in range(n):
        ts = now + i
        intent = Intent(intent_id=f"o-{i:032x}", kind="OPEN", symbol="BTCUSDT", side="long", qty=0.01, created_at=ts, updated_at=ts)
        t0 = time.perf_counter()
        store.put_intent(intent)
        hot.append((time.perf_counter() - t0) * 1000)
        meta = PositionMeta(symbol="BTCUSDT", side="long", opened_at=ts, time_in_trade_limit_sec=600, qty=0.01)
        t0 = time.perf_counter()
        store.put_position(meta)
        replace.append((time.perf_counter() - t0) * 1000)
        rec = DecisionRecord(decision=Decision(symbol="BTCUSDT", action=Action.HOLD, confidence=0.3, created_at=ts),
                             status="HOLD", recorded_at=ts)
        t0 = time.perf_counter()
        store.add_decision(rec)
        hist.append((time.perf_counter() - t0) * 1000)
        t = Trade(symbol="BTCUSDT", side="long", qty=0.01, entry_price=1e5, exit_price=1.01e5, opened_at=ts - 60,
                  closed_at=ts, pnl=1, roi_pct=1, duration_sec=60, reason=CloseReason.TIME_EXIT)
        t0 = time.perf_counter()
        store.add_trade(t)
        trade.append((time.perf_counter() - t0) * 1000)
        payload = (tmp / "state" / "state.json").read_bytes()
        t0 = time.perf_counter()
        atomic_write(tmp / "bare.json", payload)
        bare.append((time.perf_counter() - t0) * 1000)
    store.close()
    print(f"State writes with {days} days of history ({records} decision records, {size / 1e6:.1f} MB on disk; "
          f"store opened and validated in {open_ms:.0f} ms)")
    print(fmt("  put_intent (a line appended to state.log)", hot))
    print(fmt("  put_position (state.json replaced, the log folded in)", replace))
    print(fmt("  add_decision (history)", hist))
    print(fmt("  add_trade (journal)", trade))
    print(fmt("  baseline: bare atomic write of state.json", bare))
    print(f"  ratio put_intent/bare p50 {pct(hot, 50) / pct(bare, 50):.1f}x   p99 {pct(hot, 99) / pct(bare, 99):.1f}x")


SYMBOLS10 = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT,DOGEUSDT,BNBUSDT,ADAUSDT,AVAXUSDT,LINKUSDT,DOTUSDT"


def _sim_engine(tmp: Path, positions: int = 0):
    """An engine on the simulated market (10 symbols, rule decider, APPROVE mode) on a
    ManualClock, with `positions` more symbols each holding an open position."""
    from engine.deciders.rules import RuleDecider
    from engine.engine import Engine
    from positions import open_positions

    clock = ManualClock()
    s = load_settings(state_dir=tmp / "state", symbols=SYMBOLS10, paper_equity=1e9, mode="approve",
                      decision_interval_sec=5, monitor_interval_sec=5)
    extra = [f"B{i:03d}USDT" for i in range(positions)]
    feed = SimFeed([*s.symbols, *extra], seed=1, start=clock.now())
    venue = PaperVenue(feed, clock, equity=1e9, name="sim")
    engine = Engine(s, StateStore(s.state_dir), venue, RuleDecider(), clock)
    open_positions(engine, venue, extra, limit_sec=lambda i: 86400, band=0.5, digits=4)
    return engine, clock


def bench_cycle(n: int) -> None:
    import asyncio

    async def run() -> tuple[list[float], list[float]]:
        engine, clock = _sim_engine(Path(tempfile.mkdtemp()))
        await engine.start(schedule=False)
        decide = engine.decider.decide
        spent: list[float] = []

        async def timed(snap):
            t = time.perf_counter()
            try:
                return await decide(snap)
            finally:
                spent.append(time.perf_counter() - t)

        engine.decider.decide = timed  # type: ignore[method-assign]
        cycle_ms, model_ms = [], []
        for i in range(n + 5):
            clock.advance(5)
            spent.clear()
            t0 = time.perf_counter()
            await engine.run_decision_cycle()
            total = time.perf_counter() - t0
            if i >= 5:  # the first cycles fill the caches
                cycle_ms.append((total - sum(spent)) * 1000)
                model_ms.append(sum(spent) * 1000)
        await engine.stop()
        engine.store.close()
        return cycle_ms, model_ms

    cycle_ms, model_ms = asyncio.run(run())
    print("Decision cycle, 10 symbols, sim market, APPROVE mode (a cycle every 5 s of market time)")
    print(fmt("  engine time per cycle, the decider excluded", cycle_ms))
    print(fmt("  the rule decider itself (excluded above)", model_ms))


def _timed_venue(venue) -> list[float]:
    """Wrap the venue's calls so the time spent inside them is added up (seconds)."""
    spent: list[float] = []
    for name in ("positions", "balance", "instruments", "tickers", "place_order", "set_trading_stop", "get_order",
                 "order_history", "closed_pnl"):
        real = getattr(venue, name, None)
        if real is None:
            continue

        def timed(*a, _real=real, **k):
            t = time.perf_counter()
            try:
                return _real(*a, **k)
            finally:
                spent.append(time.perf_counter() - t)

        setattr(venue, name, timed)
    return spent


def bench_monitor(n: int, positions: int = 100) -> None:
    import asyncio

    async def run() -> tuple[list[float], list[float]]:
        engine, clock = _sim_engine(Path(tempfile.mkdtemp()), positions)
        await engine.start(schedule=False)
        spent = _timed_venue(engine.venue)
        out, own = [], []
        for i in range(n + 3):
            clock.advance(5)
            spent.clear()
            t0 = time.perf_counter()
            await asyncio.to_thread(engine.monitor.run_once)
            total = time.perf_counter() - t0
            if i >= 3:
                out.append(total * 1000)
                own.append((total - sum(spent)) * 1000)
        held = len(engine.store.positions())
        await engine.stop()
        engine.store.close()
        assert held == positions, held
        return out, own

    ms, own = asyncio.run(run())
    print(f"Monitor pass with {positions} open positions (sim market, 5 s of market time apart)")
    print(fmt("  monitor.run_once, all of it", ms))
    print(fmt("  engine only (venue calls excluded)", own))
    print("  (the paper venue's calls simulate 5 s of the market for every symbol and match its orders: with a")
    print("   real venue that time is one REST request for the positions, or none with the private stream)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--opens", type=int, default=200)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--writes", type=int, default=300)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--passes", type=int, default=200)
    ap.add_argument("--only", choices=["order", "store", "cycle", "monitor"], help="one part only")
    a = ap.parse_args()
    print(f"scalpdesk engine bench — {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    if a.only in (None, "order"):
        bench_decision_to_order(a.opens)
    if a.only in (None, "store"):
        bench_store(a.days, a.writes)
    if a.only in (None, "cycle"):
        bench_cycle(a.cycles)
    if a.only in (None, "monitor"):
        bench_monitor(a.passes)
