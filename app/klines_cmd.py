"""`scalpdesk klines`: fetch 1-minute candles from Bybit for the replay, and check candle files.

    scalpdesk klines download SYMBOL --from DATE [--to DATE] --out FILE [--rate N]
    scalpdesk klines info FILE[:SYMBOL]...

download asks Bybit's public /v5/market/kline (pybit's get_kline, no keys) for windows of
exactly 1,000 minutes, so an answer is a whole window whichever end Bybit would trim,
reverses each answer (newest first) and appends it to a CSV file
(`open_time_ms,open,high,low,close,volume`, with a header) as one write, fsynced: an
interruption leaves whole pages only. Run the same command again and it continues after
the file's last row. The unfinished current candle is never written (Bybit's clock
decides). Requests are paced (--rate, 5 a second by default, far under Bybit's 600 per
5 s per IP).

pybit's own retries stay off (engine.venues.bybit_http.BybitClient: max_retries=1): its
10006 sleep crashes on a reset time already past and it never retries a network error
anyway (BYBIT_V5.md §3). This loop retries network errors, 5xx, 429 and 10006 itself, with
back-off (10006: until Bybit's reset time), and gives up after --attempts tries of one page.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.report_cmd import OneLineParser, UsageError, parse_date
from engine.candles import (
    CSV_HEADER,
    CandleFileError,
    Gap,
    check_row,
    fmt_span,
    load_candles,
    read_candles,
    symbol_from_name,
    utc,
    warmup_sec,
)
from engine.config import SettingsError, load_settings
from engine.fileio import atomic_write, cut_torn_tail
from engine.venues.bybit_http import BybitClient, Busy, NoAnswer, Refused, backoff

M = 60_000  # one minute in ms
PAGE = 1000  # candles per request: Bybit's maximum limit
DEFAULT_RATE = 5.0  # requests per second


class DownloadError(Exception):
    """The download stopped; what was written so far is whole and can be resumed.

    refused: Bybit refused the request (a bad symbol…): trying again will not help."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass
class Download:
    """What a download did."""

    symbol: str
    out: Path
    start_ms: int  # the range asked for, [start_ms, end_ms)
    end_ms: int
    resumed_after_ms: int | None = None  # the last row found in an existing file
    first_ms: int | None = None  # first and last row in the file
    last_ms: int | None = None
    written: int = 0
    pages: int = 0
    requests: int = 0
    gaps: list[Gap] = field(default_factory=list)  # in the whole file
    notes: list[str] = field(default_factory=list)


# --- the file ---------------------------------------------------------------------------


def _existing(path: Path, symbol: str) -> tuple[int, int, list[Gap]] | None:
    """(first_ms, last_ms, gaps) of an existing OUT file to resume, or None when there is none."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head[:1] in (b"{", b"["):
        raise DownloadError(f"{path} is a JSON file: give a new .csv file to --out (downloads are CSV)")
    if path.stat().st_size < 200 and path.read_bytes().strip() == CSV_HEADER.encode():
        return None  # a header and nothing else: rows are appended after it
    try:
        series = read_candles(path, symbol)
    except CandleFileError as e:
        raise DownloadError(f"cannot continue {path}: {e}; move it away to start afresh") from None
    return int(series.first * 1000), int(series.last * 1000), list(series.gaps)


# --- fetching -----------------------------------------------------------------------------


class _Pacer:
    """At most `rate` requests a second."""

    def __init__(self, rate: float, sleep: Callable[[float], None]) -> None:
        self.interval = 1.0 / rate
        self.sleep = sleep
        self.last = -1e18

    def wait(self) -> None:
        gap = self.last + self.interval - time.monotonic()
        if gap > 0:
            self.sleep(gap)
        self.last = time.monotonic()


def _fetch(client: BybitClient, pacer: _Pacer, say: Callable[[str], None], attempts: int, what: str,
           method: str, **params: object) -> dict:
    """One request, retried on network errors, 5xx/429 and 10006 with back-off."""
    for attempt in range(attempts):
        pacer.wait()
        try:
            return client.call(method, private=False, **params)
        except Refused as e:
            raise DownloadError(f"Bybit refused {what}: {e}", refused=True) from None
        except (Busy, NoAnswer) as e:
            if attempt + 1 >= attempts:
                raise DownloadError(f"{what}: gave up after {attempts} attempts ({e})") from None
            wait = e.wait if isinstance(e, Busy) and e.code == 10006 else backoff(attempt)
            say(f"{what}: {e}; retrying in {wait:.2g} s")
            pacer.sleep(wait)
    raise AssertionError("unreachable")


def download(
    client: BybitClient,
    symbol: str,
    start_ms: int,
    end_ms: int,
    out: Path,
    *,
    rate: float = DEFAULT_RATE,
    attempts: int = 6,
    progress: Callable[[Download], None] = lambda d: None,
    say: Callable[[str], None] = lambda s: None,
    sleep: Callable[[float], None] = time.sleep,
    record: Download | None = None,
) -> Download:
    """Fetch the 1-minute candles of [start_ms, end_ms) into `out`, continuing an existing file.

    progress(d) runs after each page written; say() gets notes (retries). Raises
    DownloadError (the file holds whole pages only; run again to resume). `record`, if
    given, is filled in as the download goes (still readable after an exception).
    """
    d = record if record is not None else Download(symbol, out, start_ms, end_ms)
    if out.exists():
        dropped = cut_torn_tail(out)  # a kill in the middle of an append
        if dropped:
            d.notes.append(f"{out}: dropped an unfinished last line ({dropped} bytes) left by an interrupted write")
    found = _existing(out, symbol)
    cursor = start_ms - start_ms % M + (M if start_ms % M else 0)
    prev: int | None = None
    if found is not None:
        d.first_ms, d.last_ms, d.gaps = found
        d.resumed_after_ms = prev = d.last_ms
        cursor = max(cursor, d.last_ms + M)
        if d.first_ms > start_ms:
            d.notes.append(f"{out} starts at {utc(d.first_ms / 1000)}, after --from: a resume only adds "
                           "candles after its last row")
    pacer = _Pacer(rate, sleep)
    # Bybit's clock says which candle is unfinished: only candles closed by then are written.
    server = _fetch(client, pacer, say, attempts, "the server time", "get_server_time")
    d.requests += 1
    now_ms = int(server.get("timeNano", 0) or 0) // 1_000_000 or int(server.get("timeSecond", 0) or 0) * 1000
    if not now_ms:
        raise DownloadError("Bybit's server time answer holds no time")
    end = min(end_ms, now_ms - now_ms % M)  # candles opened before the current minute are closed
    if cursor >= end:
        return d
    handle = None
    try:
        while cursor < end:
            page_end = min(cursor + PAGE * M, end)
            what = f"{symbol} candles from {utc(cursor / 1000)} UTC"
            result = _fetch(client, pacer, say, attempts, what, "get_kline", category="linear", symbol=symbol,
                            interval="1", start=cursor, end=page_end - M, limit=PAGE)
            d.requests += 1
            rows = result.get("list")
            if not isinstance(rows, list):
                raise DownloadError(f"{what}: the answer has no list of candles")
            checked: list[tuple[int, list[str]]] = []
            for row in rows:
                try:
                    if not isinstance(row, list) or len(row) < 6:
                        raise ValueError(f"not a candle: {row!r}"[:120])
                    t = check_row(row[:6])[0]
                except ValueError as e:
                    raise DownloadError(f"{what}: Bybit sent a bad candle ({e}); nothing of this page was written")
                if cursor <= t < page_end:
                    checked.append((t, [str(x) for x in row[:6]]))
            checked.sort()
            lines = []
            for t, fields in checked:
                if prev is not None and t <= prev:
                    continue  # a repeat across pages: never twice
                if prev is not None and t - prev > M:
                    d.gaps.append(Gap(symbol, prev / 1000 + 60, t / 1000, (t - prev) // M - 1))
                lines.append(",".join(fields) + "\n")
                prev = t
                if d.first_ms is None:
                    d.first_ms = t
                d.last_ms = t
            if lines:
                payload = "".join(lines).encode()
                if handle is None and not (out.exists() and out.stat().st_size):
                    atomic_write(out, (CSV_HEADER + "\n").encode() + payload, mode=0o666)  # all or nothing
                else:
                    if handle is None:
                        handle = open(out, "ab")
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                d.written += len(lines)
            d.pages += 1
            cursor = page_end
            progress(d)
    finally:
        if handle is not None:
            handle.close()
    return d


# --- the command ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="scalpdesk klines", description="Candle files for `scalpdesk replay`.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=OneLineParser)
    dl = sub.add_parser("download", help="fetch 1-minute candles from Bybit (public, no keys) into a CSV file",
                        description="Fetch 1-minute candles of a USDT perpetual from Bybit's public kline "
                        "endpoint into a CSV file; run it again to continue an interrupted download.")
    dl.add_argument("symbol", metavar="SYMBOL", help="e.g. BTCUSDT")
    dl.add_argument("--from", dest="start", required=True, metavar="DATE",
                    help="first candle's open time, UTC: YYYY-MM-DD or YYYY-MM-DDTHH:MM")
    dl.add_argument("--to", dest="end", metavar="DATE",
                    help="end (exclusive), UTC; default now (the unfinished candle is never written)")
    dl.add_argument("--out", type=Path, required=True, metavar="FILE", help="CSV file; an existing one is continued")
    dl.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="N",
                    help=f"at most N requests a second (default {DEFAULT_RATE:g}; Bybit allows 600 per 5 s per IP)")
    dl.add_argument("--attempts", type=int, default=6, metavar="N",
                    help="tries of one page on network errors and rate limits before giving up (default 6)")
    dl.add_argument("--config", type=Path, help="TOML settings file (for bybit_base_url)")
    info = sub.add_parser("info", help="check candle files and say what they give the replay",
                          description="Check candle files row by row and say what each gives the replay: "
                          "time range, gaps, warm-up.")
    info.add_argument("files", nargs="+", metavar="FILE[:SYMBOL]")
    return p


def run(argv: list[str], *, now: Callable[[], float] = time.time) -> int:
    """The command; returns its exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.cmd == "info":
        return _info(args.files)
    try:
        return _download(args, now())
    except (UsageError, SettingsError) as e:
        print(f"scalpdesk klines: {e}", file=sys.stderr)
        return 2


def _info(specs: list[str]) -> int:
    need = warmup_sec()
    bad = 0
    for spec in specs:
        try:
            s = load_candles(spec)
        except CandleFileError as e:
            print(f"BAD  {e}")
            bad += 1
            continue
        print(f"ok   {s.path}: {s.describe()}")
        for g in s.gaps[:10]:
            print(f"       gap {utc(g.start)} – {utc(g.end)} UTC: {g.missing_bars:,} missing ({fmt_span(g.duration_sec)})")
        if len(s.gaps) > 10:
            print(f"       … and {len(s.gaps) - 10} more gaps")
        enough = "enough" if s.span_sec > need else "TOO SHORT"
        print(f"       warm-up: the deciders read 100 × 15 m candles ({fmt_span(need)}); this file gives "
              f"{fmt_span(s.span_sec)}: {enough}")
    return 1 if bad else 0


def _download(args: argparse.Namespace, now: float) -> int:
    symbol = args.symbol.strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{2,30}", symbol):
        raise UsageError(f"{args.symbol!r} is not a symbol like BTCUSDT")
    start = parse_date(args.start, "--from")
    end = parse_date(args.end, "--to") if args.end is not None else now
    if start >= end:
        raise UsageError(f"--from {args.start} is not before --to {args.end or 'now'}")
    if start >= now:
        raise UsageError(f"--from {args.start} is in the future")
    if not args.rate > 0 or args.rate > 50:
        raise UsageError(f"--rate must be above 0 and at most 50 requests a second, got {args.rate:g}")
    if args.attempts < 1:
        raise UsageError("--attempts must be at least 1")
    named = symbol_from_name(args.out)
    if named is not None and named != symbol:
        raise UsageError(f"--out {args.out} is named for {named}, not {symbol}: the replay takes the symbol "
                         "from the file name")
    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a directory")
    if not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: no such directory {args.out.parent}")
    settings = load_settings(args.config)
    client = BybitClient("live", None, base_url=settings.bybit_base_url, timeout_sec=settings.bybit_timeout_sec)

    start_ms, end_ms = int(start * 1000), int(end * 1000)
    tty = sys.stderr.isatty()
    last_shown = [0.0]

    def progress(d: Download) -> None:
        done = (d.last_ms or start_ms) + M - start_ms
        share = min(max(done / max(end_ms - start_ms, 1), 0.0), 1.0)
        line = (f"{symbol}: {d.written:,} candles written, up to {utc(((d.last_ms or start_ms) + M) / 1000)} UTC "
                f"({share:.0%}), {d.pages:,} pages")
        if tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif time.monotonic() - last_shown[0] >= 5:
            last_shown[0] = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    def say(text: str) -> None:
        print(("\n" if tty else "") + text, file=sys.stderr, flush=True)

    print(f"{symbol}: fetching 1-minute candles {utc(start)} – {utc(end)} UTC from {client.endpoint} "
          f"into {args.out}, at most {args.rate:g} requests a second", file=sys.stderr)
    d = Download(symbol, args.out, start_ms, end_ms)
    try:
        download(client, symbol, start_ms, end_ms, args.out, rate=args.rate, attempts=args.attempts,
                 progress=progress, say=say, record=d)
    except DownloadError as e:
        if tty:
            print(file=sys.stderr)
        print(f"scalpdesk klines: {e}", file=sys.stderr)
        if not e.refused:
            _resume_hint(d, args)
        return 2 if e.refused else 1
    except KeyboardInterrupt:
        if tty:
            print(file=sys.stderr)
        print("scalpdesk klines: interrupted", file=sys.stderr)
        _resume_hint(d, args)
        return 130
    if tty:
        print(file=sys.stderr)
    for note in d.notes:
        print(note, file=sys.stderr)
    if d.resumed_after_ms is not None:
        print(f"{args.out}: continued after its last row ({utc(d.resumed_after_ms / 1000)} UTC)")
    if d.first_ms is None:
        print(f"{symbol}: Bybit has no 1-minute candles in {utc(start)} – {utc(end)} UTC; nothing written")
        return 1
    print(f"{args.out}: {d.written:,} candles written ({d.requests:,} requests); it holds {symbol} "
          f"{utc(d.first_ms / 1000)} – {utc(d.last_ms / 1000 + 60)} UTC")  # type: ignore[operator]
    if d.first_ms > start_ms + M - 1:
        print(f"  the first candle is at {utc(d.first_ms / 1000)} UTC: none before it (listed later?)")
    if d.gaps:
        missing = sum(g.missing_bars for g in d.gaps)
        print(f"  {len(d.gaps)} gap{'s' if len(d.gaps) != 1 else ''} ({missing:,} missing candles), "
              "left as they are (the replay reports them and never fills across one):")
        for g in d.gaps[:10]:
            print(f"    {utc(g.start)} – {utc(g.end)} UTC: {g.missing_bars:,} missing ({fmt_span(g.duration_sec)})")
        if len(d.gaps) > 10:
            print(f"    … and {len(d.gaps) - 10} more")
    else:
        print("  no gaps")
    if named is None:
        print(f"  its name says no symbol: give it to the replay as {args.out}:{symbol}")
    return 0


def _resume_hint(d: Download, args: argparse.Namespace) -> None:
    held = f"holds candles up to {utc(d.last_ms / 1000 + 60)} UTC" if d.last_ms else "was not changed"
    print(f"{args.out} {held}; run the same command again to continue", file=sys.stderr)
