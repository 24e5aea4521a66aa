"""Price message to engine event: a ticker pushed on Bybit's public stream (the loopback
WebSocket fake) until the engine emits the PositionsUpdated (mark, uPnL) and the
MarketUpdated (the market watch's price) it makes of it, against the same message
through a bare pybit WebSocket callback in the same run (the floor).

    PYTHONPATH=. python bench/bench_ws_latency.py [--n 200] [--gap 0.3] [--busy 2]

Two WebSocket fakes serve the same exchange: the engine's streams (testnet venue, keys,
a long BTCUSDT open, a cycle's market) connect to one, a bare pybit WebSocket subscribed
to tickers.BTCUSDT to the other; every set_price goes out on both. Each message's clock
starts when its fake's sender thread hands it to the socket (perf_counter, same process)
and stops when the engine's subscriber (engine.subscribe) gets the event carrying that
price, or when the bare callback gets it. Prices are `--gap` seconds apart, more than the
publishing throttle's 1/marks_per_sec, so the latency is the path's, not the throttle's.
`--busy N` runs N processes spinning on the CPU meanwhile. Prints p50 and p99 with the
load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybit.unified_trading import WebSocket  # noqa: E402

from engine.clock import SystemClock  # noqa: E402
from engine.events import MarketUpdated, PositionsUpdated  # noqa: E402
from engine.factory import build_engine  # noqa: E402
from tests.fakes.bybit_rig import long_btc, plan, settings_for, scripted  # noqa: E402
from tests.fakes.bybit_server import BybitFakeServer  # noqa: E402
from tests.fakes.bybit_ws_server import BybitWsServer  # noqa: E402


class BareSocket(WebSocket):
    """pybit's WebSocket as an application would use it, pointed at the loopback fake."""

    def __init__(self, url: str, **kwargs) -> None:
        self._url = url
        super().__init__("linear", **kwargs)

    def _connect(self, url: str) -> None:
        super()._connect(self._url)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def sent_at(ws: BybitWsServer, price: float) -> float | None:
    for t, topic, text in reversed(ws.sent):
        if topic == "tickers.BTCUSDT" and json.loads(text)["data"].get("lastPrice") == _num(price):
            return t
    return None


def _num(x: float) -> str:
    return f"{x:.8f}".rstrip("0").rstrip(".")


def spin() -> None:
    while True:
        pass


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main(n: int, gap: float, busy: int) -> None:
    print(f"load average before: {load()}")
    burners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for b in burners:
        b.start()
    got: dict[str, dict[float, float]] = {"positions": {}, "market": {}, "bare": {}}
    with BybitFakeServer() as srv, BybitWsServer(srv.exchange) as ws_engine, \
            BybitWsServer(srv.exchange) as ws_bare, tempfile.TemporaryDirectory() as tmp:
        ex = srv.exchange
        ex.wallet = 1e9

        def on_bare(message: dict) -> None:
            t = time.perf_counter()
            price = float(message["data"]["lastPrice"])
            got["bare"].setdefault(price, t)

        bare = BareSocket(ws_bare.url + "/v5/public/linear", testnet=False)
        bare.subscribe("tickers.{symbol}", on_bare, "BTCUSDT")

        settings = settings_for(srv, Path(tmp) / "state", bybit_ws_url=ws_engine.url, monitor_interval_sec=300,
                                decision_interval_sec=3600, bybit_timeout_sec=10)
        engine = build_engine(settings, clock=SystemClock())

        def on_event(e) -> None:
            t = time.perf_counter()
            if isinstance(e, PositionsUpdated) and e.code == "MARKS" and e.positions:
                got["positions"].setdefault(e.positions[0].mark_price, t)
            elif isinstance(e, MarketUpdated) and e.code == "MARKS" and "BTCUSDT" in e.features:
                got["market"].setdefault(e.features["BTCUSDT"].price, t)

        engine.subscribe(on_event)
        scripted(type("R", (), {"engine": engine})())  # a cycle that holds: the market watch has its market
        try:
            await engine.start()
            while engine.marks.status != "live":
                await asyncio.sleep(0.01)
            rig = type("R", (), {"engine": engine, "settings": settings, "venue": engine.venue})()
            await asyncio.to_thread(engine.executor.open, plan(rig, long_btc(size_pct=5, leverage=3)))
            await engine.run_monitor()
            await engine.run_decision_cycle()
            prices: list[float] = []
            base = ex.prices["BTCUSDT"]
            for i in range(n + 10):  # the first 10 warm up
                price = round(base + (-1) ** i * 0.1 * (i + 1), 1)  # every price once, around the entry
                await asyncio.to_thread(ex.set_price, "BTCUSDT", price)
                if i >= 10:
                    prices.append(price)
                await asyncio.sleep(gap)
            await asyncio.sleep(0.5)
        finally:
            await engine.stop()
            engine.store.close()
            bare.exit()
        rows: dict[str, list[float]] = {"bare pybit callback": [], "PositionsUpdated": [], "MarketUpdated": []}
        for price in prices:
            t_engine, t_bare = sent_at(ws_engine, price), sent_at(ws_bare, price)
            if t_bare is not None and price in got["bare"]:
                rows["bare pybit callback"].append((got["bare"][price] - t_bare) * 1000)
            if t_engine is not None:
                if price in got["positions"]:
                    rows["PositionsUpdated"].append((got["positions"][price] - t_engine) * 1000)
                if price in got["market"]:
                    rows["MarketUpdated"].append((got["market"][price] - t_engine) * 1000)
    for b in burners:
        b.terminate()
    print(f"price message on the wire to the engine's event, n={n}, {gap:g}s apart, "
          f"{busy} busy process(es) (ms; ratio to the bare pybit callback)")
    base50, base99 = pct(rows["bare pybit callback"], 0.5), pct(rows["bare pybit callback"], 0.99)
    print(f"{'path':<20} {'n':>4} {'p50':>8} {'p99':>8} {'mean':>8} {'x p50':>7} {'x p99':>7}")
    for name, xs in rows.items():
        if not xs:
            print(f"{name:<20} no samples")
            continue
        p50, p99 = pct(xs, 0.5), pct(xs, 0.99)
        print(f"{name:<20} {len(xs):>4} {p50:8.2f} {p99:8.2f} {statistics.fmean(xs):8.2f} "
              f"{p50 / base50:7.1f} {p99 / base99:7.1f}")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between price messages")
    ap.add_argument("--busy", type=int, default=0, help="processes spinning on the CPU meanwhile")
    args = ap.parse_args()
    asyncio.run(main(args.n, args.gap, args.busy))
