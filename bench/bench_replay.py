"""Replay figures (issue: replay on history).

1. Throughput with the rules decider, 3 symbols, default settings: decision cycles per
   second for a 10-day and a 30-day replay (cost should grow with the candles, so the
   rate stays the same), and the 30-day month end to end (loading its CSV files included).
2. Memory: peak RSS after each length (flat: the replay keeps bounded state), and with
   --year a year of 1 m candles for 3 symbols.
3. Determinism: the month replayed twice gives byte-identical JSON reports.

Candles come from the simulated market (seeded); they are written as CSV files and read
back through the same loader a user's files take.

Run: python bench/bench_replay.py [--days 10,30] [--year] [--seed 7]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.sim_candles import sim_series  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def write_files(days: float, seed: int, where: Path) -> list[str]:
    where.mkdir(parents=True, exist_ok=True)
    out = []
    for s in sim_series(SYMBOLS, days, seed=seed):
        path = where / f"{s.symbol}.csv"
        with open(path, "w") as f:
            f.write("open_time_ms,open,high,low,close,volume\n")
            for i in range(len(s)):
                f.write(f"{int(s.open_time[i] * 1000)},{s.open[i]:.6f},{s.high[i]:.6f},{s.low[i]:.6f},"
                        f"{s.close[i]:.6f},{s.volume[i]:.4f}\n")
        out.append(str(path))
    return out


def run_child(files: list[str]) -> dict:
    """One replay in a fresh process (so its peak RSS is its own): the JSON and the timings."""
    code = (
        "import json, resource, sys, time, io\n"
        "from contextlib import redirect_stdout\n"
        "t0 = time.perf_counter()\n"
        "from app.cli import main\n"
        "buf = io.StringIO()\n"
        "with redirect_stdout(buf):\n"
        f"    rc = main(['replay', '--json', '--klines', *{files!r}])\n"
        "wall = time.perf_counter() - t0\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': rc, 'wall': wall, 'rss_mb': rss, 'out': buf.getvalue()}))\n"
    )
    env = {**os.environ, "SCALPDESK_STATE_DIR": tempfile.mkdtemp()}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def replay_in_process(files: list[str]) -> tuple[float, dict]:
    """Replay time alone (files loaded, engine run, report built) in this process."""
    from app.cli import main

    buf = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stdout(buf):
        assert main(["replay", "--json", "--klines", *files]) == 0
    return time.perf_counter() - t0, json.loads(buf.getvalue())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--days", default="10,30")
    p.add_argument("--year", action="store_true", help="also a year of candles (about 10 min)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    os.environ.setdefault("SCALPDESK_STATE_DIR", tempfile.mkdtemp())
    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on {os.cpu_count()} cores")
    lengths = [float(d) for d in args.days.split(",")] + ([365.0] if args.year else [])
    rows = []
    month_files: list[str] = []
    for days in lengths:
        files = write_files(days, args.seed, tmp / f"{days:g}d")
        if days == 30:
            month_files = files
        r = run_child(files)
        data = json.loads(r["out"])
        rows.append((days, data["candles"], data["cycles"], r["wall"], r["rss_mb"], data["trades"]))
    print()
    print(f"{'days':>5} {'candles':>9} {'cycles':>7} {'wall s':>7} {'cycles/s':>9} {'µs/candle':>9} {'peak RSS MB':>11} {'trades':>7}")
    for days, candles, cycles, wall, rss, trades in rows:
        print(f"{days:>5g} {candles:>9,} {cycles:>7,} {wall:>7.1f} {cycles / wall:>9,.0f} {wall / candles * 1e6:>9.1f} "
              f"{rss:>11.0f} {trades:>7,}")
    print("(wall: a fresh process, from start to the JSON: imports, loading the CSV files, warm-up, the replay, "
          "the report)")
    if month_files:
        first_t, first = replay_in_process(month_files)
        second_t, second = replay_in_process(month_files)
        same = json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
        print(f"\nthe 30-day month twice in one process: {first_t:.1f} s and {second_t:.1f} s "
              f"({first['cycles'] / first_t:,.0f} and {second['cycles'] / second_t:,.0f} cycles/s); "
              f"reports byte-identical: {'yes' if same else 'NO'}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
