"""Market figures (issue 14): the simulated market next to real 2020 1-minute candles.

For each seed, 30 simulated days of BTCUSDT and ETHUSDT (and one seed of SOLUSDT and of
a symbol without a profile), their statistics (engine/marketstats.py) beside the real
ones, and how fast the market is made. A figure outside its band (real +-25 %, the
tails within a factor of 2; see marketstats.band) is marked with *.

Run: python bench/bench_market.py [--seeds 1,2,3] [--days 30]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import marketstats as ms  # noqa: E402
from engine.venues.simfeed import SimFeed, minute_candles  # noqa: E402

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC, the feed's usual start
PAIRS = ("BTCUSDT", "ETHUSDT")
OTHERS = ("SOLUSDT", "XYZUSDT")  # a profile a bit wilder than ETH's, and the default one


def fmt(name: str, value: float) -> str:
    if name in ms.PERCENT:
        return f"{value * 100:.3g} %"
    return f"{value:.3g}" if abs(value) >= 0.01 or value == 0 else f"{value:+.4f}"


def fmt_real(name: str, real: tuple[float, float]) -> str:
    lo, hi = real
    return fmt(name, lo) if lo == hi else f"{fmt(name, lo).removesuffix(' %')}–{fmt(name, hi)}"


def generate(symbols: tuple[str, ...], seed: int, days: int) -> tuple[dict[str, list[ms.Candle]], float]:
    """30 days of candles from a fresh feed and the wall time it took."""
    feed = SimFeed(list(symbols), seed=seed, start=T0, history_sec=0)
    t0 = time.perf_counter()
    candles = minute_candles(feed, T0 + days * 86_400)
    return candles, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--days", type=int, default=30)
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    print(f"scalpdesk market bench — {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{a.days} simulated days from 2026-01-01 00:00 UTC per seed\n")

    stats: dict[tuple[str, int], ms.MarketStats] = {}
    stderr: dict[tuple[str, int], float] = {}
    walls = []
    for seed in seeds:
        candles, wall = generate(PAIRS, seed, a.days)
        walls.append(wall)
        for sym in PAIRS:
            stats[sym, seed] = ms.market_stats(candles[sym])
            stderr[sym, seed] = ms.autocorrelation_se(ms.returns(candles[sym]), 1)
    others, _ = generate(OTHERS, seeds[0], a.days)
    other_stats = {sym: ms.market_stats(c) for sym, c in others.items()}

    head = ["statistic"]
    for sym in PAIRS:
        head += [f"real {sym[:3]} 2020"] + [f"sim {sym[:3]} s{s}" for s in seeds]
    head += [f"sim {sym[:3]} s{seeds[0]}" for sym in OTHERS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    misses = 0
    for name in ms.STAT_NAMES:
        row = [ms.LABELS[name].replace("|", "\\|")]  # a Markdown table's cell
        for sym in PAIRS:
            real = ms.REAL_2020[sym][name]
            row.append(fmt_real(name, real))
            for seed in seeds:
                value = getattr(stats[sym, seed], name)
                lo, hi = ms.band(name, real, stderr[sym, seed] if name == "autocorr_1" else 0.0)
                inside = lo <= value <= hi
                misses += not inside
                row.append(fmt(name, value) + ("" if inside else " *"))
        row += [fmt(name, getattr(other_stats[sym], name)) for sym in OTHERS]
        print("| " + " | ".join(row) + " |")
    print(f"\n{misses} of {len(ms.STAT_NAMES) * len(PAIRS) * len(seeds)} figures outside their band (marked *)")

    # One month measures a lag-1 autocorrelation to ~0.01; the seeds together say more.
    for sym in PAIRS:
        acs = [stats[sym, s].autocorr_1 for s in seeds]
        se = math.sqrt(sum(stderr[sym, s] ** 2 for s in seeds)) / len(seeds)
        print(f"{sym} lag-1 autocorrelation, mean of {len(seeds)} seeds: {statistics.fmean(acs):+.4f} ± {se:.4f} (1 s.e.)")

    sim_sec = a.days * 86_400
    per_symbol = [sim_sec / w for w in walls]
    print(f"\nGeneration ({len(PAIRS)} symbols a feed, klines read every ~16 simulated hours): "
          f"{statistics.median(per_symbol):,.0f} simulated seconds per wall second "
          f"({statistics.median(per_symbol) * len(PAIRS):,.0f} ticks/s; "
          f"{statistics.median(walls):.1f} s for {a.days} days)")


if __name__ == "__main__":
    main()
