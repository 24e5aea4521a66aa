"""`scalpdesk replay`: the real engine over historical candles, then the report.

    scalpdesk replay --klines BTCUSDT.csv ETHUSDT.csv [--set name=value]… [--grid name=v1,v2]…
                     [--json] [--csv FILE] [--decider openai --max-cost USD] [--keep-state DIR]

Settings come as for `scalpdesk` (defaults < TOML < environment < flags, `--set` last);
the replay always runs in AUTO on a throwaway state directory, never the live one.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.report_cmd import OneLineParser, UsageError
from engine.candles import CandleFileError, fmt_span, load_candles
from engine.config import Settings, SettingsError, load_settings
from engine.replay import WARMUP_SEC, WARMUP_WHY, ReplayError, ReplayPlan, ReplayResult, plan_replay, run_replay
from engine.report import render_text, write_csv

GRID_WARNING = (
    "the best of {n} combinations is optimistic: it was picked because it did best on these candles, "
    "and part of that is luck that will not repeat; check it on another period before trading it"
)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="scalpdesk replay",
        description="Replay the engine (same decider, guardrails, executor, monitor and settings) over "
        "historical 1 m candles as fast as the CPU allows, in a throwaway state directory, then print the report.",
    )
    p.add_argument("--klines", nargs="+", action="extend", required=True, metavar="FILE[:SYMBOL]",
                   help="candle files, one per symbol (CSV open_time_ms,open,high,low,close,volume or Bybit kline JSON)")
    p.add_argument("--config", type=Path, help="TOML settings file (default ~/.config/scalpdesk/config.toml)")
    p.add_argument("--decider", choices=["rules", "openai"])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                   help="override a setting (repeatable), e.g. --set cooldown_minutes=15")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,…",
                   help="run every combination of these values across the machine's cores (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write one row per trade to FILE")
    p.add_argument("--max-cost", type=float, metavar="USD",
                   help="the AI decider: refuse a run whose estimated model cost is above this")
    p.add_argument("--answer-cache", type=Path, metavar="FILE",
                   help="the AI decider's answers by request (default ~/.cache/scalpdesk/llm-answers.sqlite)")
    p.add_argument("--keep-state", type=Path, metavar="DIR",
                   help="keep the replay's state directory in DIR (new) for `scalpdesk report --state-dir DIR`")
    p.add_argument("--workers", type=int, metavar="N", help="--grid: processes at once (default: the cores)")
    return p


def _setting(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"{flag} {text!r}: use NAME=VALUE, e.g. {flag} cooldown_minutes=15")
    if name not in Settings.model_fields:
        raise UsageError(f"{flag} {text!r}: unknown setting {name!r} (the names are those of the TOML file)")
    return name, value.strip()


def _grid(texts: list[str]) -> list[dict[str, str]]:
    axes: dict[str, list[str]] = {}
    for text in texts:
        name, values = _setting(text, "--grid")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if len(vals) < 1:
            raise UsageError(f"--grid {text!r}: give values, e.g. --grid {name}=1,2,3")
        if name in axes:
            raise UsageError(f"--grid {name} given twice")
        axes[name] = vals
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def run(argv: list[str]) -> int:
    """The command; returns its exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return _replay(args)
    except (UsageError, SettingsError, CandleFileError, ReplayError) as e:
        print(f"scalpdesk replay: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nscalpdesk replay: interrupted; nothing was written outside its throwaway state directory "
              "(the live state is untouched)", file=sys.stderr)
        return 130


def _settings(args: argparse.Namespace, extra: dict[str, str]) -> Settings:
    overrides: dict[str, Any] = dict(_setting(t, "--set") for t in args.sets)
    overrides.update(extra)
    if args.decider:
        overrides["decider"] = args.decider
    return load_settings(args.config, **overrides)


def _replay(args: argparse.Namespace) -> int:
    combos = _grid(args.grid) if args.grid else [{}]
    if args.grid and (args.keep_state or args.csv):
        raise UsageError("--keep-state and --csv are for a single replay, not a --grid")
    if args.max_cost is not None and not (args.max_cost >= 0 and math.isfinite(args.max_cost)):
        raise UsageError(f"--max-cost must be a non-negative amount of USD, got {args.max_cost:g}")
    settings_list = [_settings(args, c) for c in combos]  # every combination is valid before anything runs
    say = _say
    series = []
    for spec in args.klines:
        s = load_candles(spec)
        series.append(s)
        say(f"{s.describe()}")
    plan = plan_replay(series)
    cycles = plan.cycles(settings_list[0].decision_interval_sec)
    say(f"warm-up {fmt_span(WARMUP_SEC)} ({WARMUP_WHY}); trading from {_utc(plan.start)} to {_utc(plan.end)} UTC "
        f"({fmt_span(plan.end - plan.start)}), about {cycles:,} decision cycles")
    for g in plan.gaps:
        say(f"gap: {g.symbol} has no candles {_utc(g.start)} – {_utc(g.end)} UTC ({g.missing_bars:,} missing); "
            "nothing fills across it")
    _check_cost(settings_list, plan, args, say)
    if len(combos) > 1:
        return _run_grid(args, plan, combos, settings_list, say)
    bar = _Bar(plan)
    try:
        result = asyncio.run(_one(settings_list[0], plan, args, progress=bar))
    finally:
        bar.close()
    return _print_one(args, result, settings_list[0], combos[0])


# --- the AI decider's cost --------------------------------------------------------------


def _check_cost(settings_list: list[Settings], plan: ReplayPlan, args: argparse.Namespace, say: Callable[[str], None]) -> None:
    if settings_list[0].decider != "openai":
        return
    from engine.replay_ai import estimate

    est = estimate(settings_list[0], plan)
    total = est.cost_usd * len(settings_list)
    runs = f" × {len(settings_list)} combinations" if len(settings_list) > 1 else ""
    say(f"AI decider {settings_list[0].openai_model}: {est.requests:,} requests{runs} of about "
        f"{est.input_tokens:,} input and {est.output_tokens:,} output tokens; estimated cost {total:,.2f} USD "
        "(answers already in the cache cost nothing)")
    if args.max_cost is None:
        raise UsageError(f"the AI decider would cost about {total:,.2f} USD: give --max-cost USD to accept it")
    if total > args.max_cost:
        raise UsageError(f"estimated cost {total:,.2f} USD is above --max-cost {args.max_cost:,.2f} USD; refused")


# --- one replay ----------------------------------------------------------------------


async def _one(settings: Settings, plan: ReplayPlan, args: argparse.Namespace, progress=None) -> ReplayResult:
    decider, closer = _decider(settings, args)
    try:
        result = await run_replay(settings, plan, decider, progress=progress, keep_state=args.keep_state)
    finally:
        await closer()
    cache = getattr(decider, "cache", None)
    if cache is not None:
        result.ai = {"requests": cache.misses, "cache_hits": cache.hits,
                     "cost_usd": round(decider.total_cost_usd, 6), "answer_cache": str(cache.path)}
    return result


def _decider(settings: Settings, args: argparse.Namespace):
    if settings.decider == "openai":
        from engine.replay_ai import replay_decider

        return replay_decider(settings, args.answer_cache)
    from engine.factory import build_decider

    async def nothing() -> None:
        return None

    return build_decider(settings), nothing


def _figures(result: ReplayResult, settings: Settings, overrides: dict[str, str]) -> dict[str, Any]:
    out = result.report.model_dump(mode="json")
    out.update(result.extras())
    out["settings"] = overrides
    return out


def _print_one(args: argparse.Namespace, result: ReplayResult, settings: Settings, overrides: dict[str, str]) -> int:
    if args.csv is not None:
        try:
            write_csv(result.report, args.csv)
        except OSError as e:
            raise UsageError(f"cannot write {args.csv}: {e.strerror or e}") from None
    if args.json:
        sys.stdout.write(json.dumps(_figures(result, settings, overrides), sort_keys=True) + "\n")
        return 0
    tty = sys.stdout.isatty()
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 140)) if tty else 100
    notes = [
        f"replay      {result.candles:,} candles of {', '.join(result.report.by_symbol) or 'the symbols'}, "
        f"{result.cycles:,} decision cycles, decider {settings.decider}",
        f"gaps        {len(result.gaps)}" + (f" ({sum(g.missing_bars for g in result.gaps):,} missing candles)"
                                              if result.gaps else ""),
    ]
    if result.ai is not None:
        notes.append(f"AI          {result.ai['requests']:,} requests to the model, {result.ai['cache_hits']:,} answered "
                     f"from the cache, {result.ai['cost_usd']:,.4f} USD (estimated from the tokens)")
    if result.closed_at_end:
        notes.append(f"at the end  {', '.join(result.closed_at_end)} still open: closed at the last price (END_OF_DATA)")
    if args.sets:
        notes.append(f"settings    {' '.join(args.sets)}")
    sys.stdout.write(render_text(result.report, width, color=tty, title="scalpdesk replay", notes=notes))
    if args.csv is not None:
        print(f"\n{len(result.report.trade_list):,} trades written to {args.csv}")
    if result.state_dir is not None:
        print(f"\nthe replay's state is in {result.state_dir}: scalpdesk report --state-dir {result.state_dir}")
    return 0


# --- a grid across the cores ------------------------------------------------------------

_PLAN: ReplayPlan | None = None  # inherited by the grid's forked workers
_ARGS: argparse.Namespace | None = None


def _grid_worker(index: int, settings: Settings) -> tuple[int, dict[str, Any]]:
    assert _PLAN is not None and _ARGS is not None
    result = asyncio.run(_one(settings, _PLAN, _ARGS))
    return index, _figures(result, settings, {})


@dataclass
class _Row:
    overrides: dict[str, str]
    figures: dict[str, Any]


def _run_grid(args: argparse.Namespace, plan: ReplayPlan, combos: list[dict[str, str]],
              settings_list: list[Settings], say: Callable[[str], None]) -> int:
    global _PLAN, _ARGS
    _PLAN, _ARGS = plan, args
    workers = args.workers or os.cpu_count() or 1
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    say(f"grid: {len(combos)} combinations on {min(workers, len(combos))} processes")
    rows: list[_Row | None] = [None] * len(combos)
    bar = _Bar(None, total=len(combos), unit="combinations")
    ctx = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(combos)), mp_context=ctx) as pool:
            futures = [pool.submit(_grid_worker, i, s) for i, s in enumerate(settings_list)]
            done = 0
            for fut in as_completed(futures):
                i, figures = fut.result()
                rows[i] = _Row(combos[i], figures)
                done += 1
                bar(done, len(combos))
    finally:
        bar.close()
    ranked = sorted((r for r in rows if r is not None), key=_rank)
    if args.json:
        out = {
            "grid": [{**r.figures, "settings": r.overrides} for r in ranked],
            "best": ranked[0].overrides,
            "warning": GRID_WARNING.format(n=len(ranked)),
        }
        sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
        return 0
    print(_grid_table(ranked))
    print()
    print("warning: " + GRID_WARNING.format(n=len(ranked)))
    return 0


def _rank(row: _Row) -> tuple[int, float]:
    e = row.figures.get("expectancy")
    return (1, 0.0) if e is None else (0, -e)


def _grid_table(ranked: list[_Row]) -> str:
    from engine.report import money, num, pct

    head = ["", "expectancy", "trades", "per day", "win rate", "ROI/trade", "pnl", "max dd", "settings"]
    body = []
    for i, r in enumerate(ranked):
        f = r.figures
        body.append([
            "best ▶" if i == 0 else "", money(f.get("expectancy"), signed=True), f"{f['trades']:,}",
            num(f.get("trades_per_day"), 1), pct(f.get("win_rate_pct")), pct(f.get("avg_roi_pct"), signed=True),
            pct(f.get("pnl_pct"), signed=True), pct(f.get("max_drawdown_pct")),
            " ".join(f"{k}={v}" for k, v in r.overrides.items()),
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    right = [False, True, True, True, True, True, True, True, False]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


# --- what it says while it runs ------------------------------------------------------------


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _say(line: str) -> None:
    """A line about the run, on stderr (stdout is the report, or the JSON alone)."""
    print(line, file=sys.stderr)


class _Bar:
    """A progress bar on stderr (rich's, as Textual ships it) while the replay runs."""

    def __init__(self, plan: ReplayPlan | None, total: float | None = None, unit: str = "") -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        label = "replaying" if plan is not None else f"grid ({unit})"
        self.progress = Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TextColumn("{task.fields[where]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=True)
        self.plan = plan
        self.task = self.progress.add_task(label, total=total or (plan.end - plan.start if plan else 1), where="")
        self.progress.start()

    def __call__(self, done: float, total: float) -> None:
        where = _utc(self.plan.start + done) if self.plan is not None else f"{done:g}/{total:g}"
        self.progress.update(self.task, completed=done, total=total, where=where)

    def close(self) -> None:
        self.progress.stop()
