"""The rules decider's figures (issue 14, part 3): the real engine replayed over simulated
months, the old trend-following rules against the new fading ones, per seed.

Each run is engine.replay.run_replay over candles of the calibrated simulated market
(tests/sim_candles.py, written as CSV files and read back as a user's files are), every
setting at its default, AUTO; the figures are engine.report's from the journal. Goal:
10–30 trades a day, max drawdown under 10 %, expectancy after fees ≥ 0, on every seed.
The tuning seeds are the ones the decider's numbers were chosen on; the fresh seeds were
not looked at while tuning.

Run: python bench/bench_decider.py                       # 30 days × 5 tuning + 5 fresh seeds
     python bench/bench_decider.py --days 5 --seeds 1,2 --fresh '' --workers 1   # a quick look
     python bench/bench_decider.py --only new --param edge_mult=2.5               # a variant
A 30-day replay takes about a minute of one core; candle files are cached in --cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.deciders.base import DeciderResult  # noqa: E402
from engine.models import Action, Decision, MarketSnapshot, SymbolFeatures  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
TUNING_SEEDS = "1,2,3,4,5"
FRESH_SEEDS = "11,12,13,14,15"


class OldRuleDecider:
    """The rules decider before issue 14 (a copy, for the baseline): trade with the trend
    when 1m, 5m and 15m agree and RSI is not stretched; TP/SL from ATR(5m)."""

    name = "rules"

    def __init__(self, tp_atr_mult: float = 2.0, sl_atr_mult: float = 1.5, time_limit_sec: int = 2400) -> None:
        self.tp_atr_mult, self.sl_atr_mult, self.time_limit_sec = tp_atr_mult, sl_atr_mult, time_limit_sec

    async def decide(self, snapshot: MarketSnapshot) -> DeciderResult:
        held = {p.symbol: p.side for p in snapshot.positions}
        return DeciderResult(decisions=[self._one(f, held.get(s), snapshot.ts) for s, f in sorted(snapshot.symbols.items())],
                             audit={"model": "rules"})

    def _one(self, f: SymbolFeatures, held: str | None, ts: float) -> Decision:
        def make(action: Action, confidence: float, why: str) -> Decision:
            opens = action.opens and f.atr_pct_5m > 0
            return Decision(symbol=f.symbol, action=action, confidence=round(confidence, 3),
                            tp_pct=round(self.tp_atr_mult * f.atr_pct_5m, 3) if opens else None,
                            sl_pct=round(self.sl_atr_mult * f.atr_pct_5m, 3) if opens else None,
                            time_in_trade_limit_sec=self.time_limit_sec if action.opens else None,
                            rationale=why, source=self.name, created_at=ts)

        if held is not None:
            against = -1 if held == "long" else 1
            if f.trend_1m == against and f.trend_5m == against:
                return make(Action.CLOSE, 0.7, "trends turned")
            return make(Action.HOLD, 0.5, "trend holds")
        trends = (f.trend_1m, f.trend_5m, f.trend_15m)
        if trends == (1, 1, 1) and 45 <= f.rsi_1m <= 70:
            return make(Action.OPEN_LONG, self._confidence(f, 1), "trends up")
        if trends == (-1, -1, -1) and 30 <= f.rsi_1m <= 55:
            return make(Action.OPEN_SHORT, self._confidence(f, -1), "trends down")
        return make(Action.HOLD, 0.3, "no aligned trend")

    @staticmethod
    def _confidence(f: SymbolFeatures, sign: int) -> float:
        strength = abs(f.ema_slope_5m) / f.atr_pct_5m if f.atr_pct_5m > 0 else 0.0
        aligned = 1.0 if f.ema_slope_5m * sign > 0 else 0.0
        return min(0.55 + 0.25 * aligned + min(strength, 1.0) * 0.2, 0.95)


def candle_files(seed: int, days: float, cache: Path) -> list[str]:
    """The seed's simulated candles as CSV files (made once, then reused)."""
    where = cache / f"seed{seed}-{days:g}d"
    paths = [where / f"{s}.csv" for s in SYMBOLS]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    from tests.sim_candles import sim_series

    where.mkdir(parents=True, exist_ok=True)
    for s, path in zip(sim_series(SYMBOLS, days, seed=seed), paths):
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write("open_time_ms,open,high,low,close,volume\n")
            for i in range(len(s)):
                f.write(f"{int(s.open_time[i] * 1000)},{s.open[i]:.6f},{s.high[i]:.6f},{s.low[i]:.6f},"
                        f"{s.close[i]:.6f},{s.volume[i]:.4f}\n")
        tmp.rename(path)
    return [str(p) for p in paths]


def replay_one(job: tuple[str, int, list[str], dict[str, float]]) -> dict:
    """One replay in this process: the report's figures and what the run cost."""
    which, seed, files, params = job
    os.environ.setdefault("SCALPDESK_STATE_DIR", tempfile.mkdtemp(prefix="bench-decider-"))
    from engine.candles import load_candles
    from engine.config import Settings
    from engine.deciders.rules import RuleDecider
    from engine.factory import build_decider
    from engine.replay import plan_replay, run_replay

    settings = Settings(state_dir=Path(os.environ["SCALPDESK_STATE_DIR"]))
    plan = plan_replay([load_candles(f) for f in files])
    if which == "old":
        decider = OldRuleDecider()
    elif params:
        decider = RuleDecider(**params)  # a variant being tried
    else:
        decider = build_decider(settings)  # the new decider as the engine builds it
    t0 = time.process_time()
    result = asyncio.run(run_replay(settings, plan, decider))
    r = result.report
    return {
        "which": which, "seed": seed, "cpu": time.process_time() - t0, "days": r.period_days,
        "trades": r.trades, "per_day": r.trades_per_day, "win": r.win_rate_pct, "dur": r.avg_duration_min,
        "roi": r.avg_roi_pct, "dd": r.max_drawdown_pct, "exp": r.expectancy, "fees": r.fees, "pnl": r.pnl,
        "by_reason": {k: g.trades for k, g in r.by_reason.items()},
    }


def _f(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def goal(row: dict) -> tuple[bool, bool, bool]:
    """Met: 10–30 trades a day, max drawdown under 10 %, expectancy after fees ≥ 0."""
    return (10 <= row["per_day"] <= 30, row["dd"] < 10, row["exp"] is not None and row["exp"] >= 0)


def print_table(title: str, rows: list[dict]) -> None:
    yes = {True: "met", False: "NOT met"}
    print(f"\n{title}")
    head = (f"{'seed':>4} {'decider':>7} {'trades':>6} {'/day':>6} {'win %':>6} {'dur min':>7} {'ROI/trade':>9} "
            f"{'max DD':>7} {'expect.':>8} {'fees':>8} {'PnL':>9}  10–30/day  DD<10%   exp≥0")
    print(head)
    print("-" * len(head))
    for r in rows:
        g = goal(r)
        print(f"{r['seed']:>4} {r['which']:>7} {r['trades']:>6} {r['per_day']:>6.1f} {_f(r['win'], '6.1f')} "
              f"{_f(r['dur'], '7.1f')} {_f(r['roi'], '+8.2f')}% {r['dd']:>6.1f}% {_f(r['exp'], '+8.2f')} "
              f"{r['fees']:>8.0f} {r['pnl']:>+9.0f}  {yes[g[0]]:>9} {yes[g[1]]:>7} {yes[g[2]]:>7}")
    for which in dict.fromkeys(r["which"] for r in rows):
        rs = [r for r in rows if r["which"] == which]
        met = sum(all(goal(r)) for r in rs)
        n = sum(r["trades"] for r in rs)
        pnl = sum(r["pnl"] for r in rs)
        print(f"  {which}: goal met on {met} of {len(rs)} seeds; {n} trades, PnL {pnl:+.0f} USDT "
              f"({pnl / n if n else 0:+.2f} per trade); exits: "
              + ", ".join(f"{k} {v}" for k, v in sorted(_sum_reasons(rs).items(), key=lambda kv: -kv[1])))


def _sum_reasons(rows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        for k, v in r["by_reason"].items():
            out[k] = out.get(k, 0) + v
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=float, default=30)
    p.add_argument("--seeds", default=TUNING_SEEDS, help="tuning seeds, comma-separated")
    p.add_argument("--fresh", default=FRESH_SEEDS, help="fresh seeds (not used for tuning); '' for none")
    p.add_argument("--only", choices=["old", "new"], help="run one decider only")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a RuleDecider constructor parameter for a variant (repeatable)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "scalpdesk-bench-decider")
    args = p.parse_args()
    params = {k: float(v) for k, v in (x.split("=", 1) for x in args.param)}
    for k in ("time_limit_sec",):
        if k in params:
            params[k] = int(params[k])
    groups = [("tuning seeds", [int(s) for s in args.seeds.split(",") if s])]
    if args.fresh:
        groups.append(("fresh seeds (not used for tuning)", [int(s) for s in args.fresh.split(",") if s]))
    which = [args.only] if args.only else ["old", "new"]
    print(f"{args.days:g} simulated days × {', '.join(SYMBOLS)}; every setting at its default; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if params:
        print(f"variant: RuleDecider({', '.join(f'{k}={v:g}' for k, v in params.items())})")
    t0 = time.time()
    jobs = []
    for _, seeds in groups:
        for seed in seeds:
            files = candle_files(seed, args.days, args.cache)
            jobs += [(w, seed, files, params) for w in which]
    results = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        for fut in as_completed([pool.submit(replay_one, j) for j in jobs]):
            r = fut.result()
            results.append(r)
            print(f"  done: seed {r['seed']} {r['which']}: {r['trades']} trades, {r['per_day']:.1f}/day, "
                  f"DD {r['dd']:.1f}%, expectancy {_f(r['exp'], '+.2f')}, PnL {r['pnl']:+.0f} "
                  f"({r['cpu']:.0f} s CPU; load {os.getloadavg()[0]:.1f})", flush=True)
    by = {(r["which"], r["seed"]): r for r in results}
    for title, seeds in groups:
        print_table(f"{title}, {args.days:g} days each", [by[(w, s)] for s in seeds for w in which])
    cpu = sum(r["cpu"] for r in results)
    print(f"\n{len(results)} replays, {cpu:.0f} s of CPU, {time.time() - t0:.0f} s wall; "
          f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
