"""`scalpdesk report`: the trading statistics of a state directory's journal.

Reads the journal without the state directory's lock (a running engine holds it), so it
runs next to a live scalpdesk. `--json` prints one JSON object and nothing else on stdout.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from engine.config import SettingsError, load_settings
from engine.journal import read_journal
from engine.report import build_report, render_text, write_csv
from engine.store import StoreError


class UsageError(Exception):
    """Bad input on the command line: one line for stderr, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse_date(text: str, flag: str) -> float:
    """A UTC date or date-time (2024-03-01, 2024-03-01T12:30, with an optional offset) → epoch seconds."""
    s = text.strip()
    try:
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="scalpdesk report",
        description="Trading statistics from the journal, with the original system's expectations table. "
        "Reads the state files without their lock: safe next to a running scalpdesk.",
    )
    p.add_argument("--days", type=float, metavar="N", help="trades closed in the last N days (default: all)")
    p.add_argument("--since", metavar="DATE", help="trades closed since DATE (UTC, YYYY-MM-DD[THH:MM])")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write one row per trade to FILE")
    p.add_argument("--config", type=Path, help="TOML settings file (default ~/.config/scalpdesk/config.toml)")
    p.add_argument("--state-dir", type=Path, help="state directory (default: the settings' state_dir)")
    p.add_argument("--equity", type=float, metavar="USDT",
                   help="start equity for PnL %% and drawdown (default: the paper_equity setting)")
    return p


def run(argv: list[str], *, now: Callable[[], float] = time.time) -> int:
    """The command; returns its exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already said on stderr)
        return int(e.code or 0)
    try:
        return _report(args, now())
    except (UsageError, SettingsError, StoreError) as e:
        print(f"scalpdesk report: {e}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace, now: float) -> int:
    since: float | None = None
    if args.days is not None and args.since is not None:
        raise UsageError("--days and --since both given: choose one")
    if args.days is not None:
        if not (args.days > 0 and math.isfinite(args.days)):
            raise UsageError(f"--days must be a positive number of days, got {args.days:g}")
        since = now - args.days * 86400
    if args.since is not None:
        since = parse_date(args.since, "--since")
        if since > now:
            raise UsageError(f"--since {args.since} is in the future")
    if args.equity is not None and not (args.equity > 0 and math.isfinite(args.equity)):
        raise UsageError(f"--equity must be a positive amount of USDT, got {args.equity:g}")

    settings = load_settings(args.config, state_dir=args.state_dir)
    state_dir = settings.state_dir
    if not state_dir.is_dir():
        raise UsageError(f"no such state directory {state_dir} (give --state-dir, or set SCALPDESK_STATE_DIR)")
    trades = read_journal(state_dir, since=since)
    if args.equity is not None:
        equity, source = args.equity, "--equity"
    else:
        equity = settings.paper_equity
        source = (f"the paper_equity setting ({equity:,.2f}); for an exchange account pass --equity USDT, "
                  "the account's equity at the start of the period")
    report = build_report(
        trades,
        start_equity=equity,
        period_start=since,
        period_end=now if since is not None else None,
        default_cooldown_sec=settings.default_cooldown_sec,
    )
    if args.csv is not None:
        try:
            write_csv(report, args.csv)
        except OSError as e:
            raise UsageError(f"cannot write {args.csv}: {e.strerror or e}") from None
    if args.json:
        sys.stdout.write(report.model_dump_json() + "\n")
        if args.csv is not None:
            print(f"scalpdesk report: {len(report.trade_list):,} trades written to {args.csv}", file=sys.stderr)
        return 0
    tty = sys.stdout.isatty()
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 140)) if tty else 100
    window = "all trades" if since is None else f"trades closed since {datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} UTC"
    notes = [f"state        {state_dir} ({window})", f"start equity from {source}"]
    sys.stdout.write(render_text(report, width, color=tty, notes=notes))
    if args.csv is not None:
        print(f"\n{len(report.trade_list):,} trades written to {args.csv}")
    return 0
