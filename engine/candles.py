"""Candle files for the replay: 1-minute candles of one symbol, checked row by row.

Two formats, told apart by content:

- CSV `open_time_ms,open,high,low,close,volume`, one candle a line, oldest first; a
  header line is optional (a first line whose first field is not a number). This is
  what `scalpdesk klines download` writes.
- The JSON Bybit's /v5/market/kline returns: the whole answer
  `{"retCode":0,"result":{"list":[[start,o,h,l,c,vol,turnover],...]}}` or just the list,
  newest first as Bybit sends it (oldest first is accepted too).

The symbol comes from the file name (`BTCUSDT.csv`, `BTCUSDT-2020-03.csv`) or from a
`FILE:SYMBOL` spec. Every row is checked before anything is returned: a malformed row
raises CandleFileError `FILE:LINE: what is wrong` (JSON rows: `FILE: list row N: …`).

Columns are `array('d')` (8 bytes a value): a year of 1-minute candles is 525,600 rows,
about 25 MB for the six columns of one symbol.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.models import Kline

MINUTE = 60  # seconds; the only candle spacing the replay takes
COLUMNS = ("open_time_ms", "open", "high", "low", "close", "volume")
CSV_HEADER = ",".join(COLUMNS)
_MIN_MS = 100_000_000_000  # 1973-03-03 in ms; a smaller open time is in seconds, not ms
_SYMBOL = re.compile(r"^[A-Z0-9]{1,20}USDT$")


class CandleFileError(Exception):
    """A candle file that cannot be used; the message names the file (and line) and the problem."""

    def __init__(self, path: Path | str, problem: str, line: int | str | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if isinstance(line, int) else f"{path}" + (f": {line}" if line else "")
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Gap:
    """Missing candles between two rows more than a minute apart (an exchange outage).

    start: open time of the first missing candle; end: open time of the next candle
    present (epoch seconds), so end - start = missing_bars × 60.
    """

    symbol: str
    start: float
    end: float
    missing_bars: int

    @property
    def duration_sec(self) -> float:
        return self.end - self.start


def _col() -> array:
    return array("d")


@dataclass
class CandleSeries:
    """One symbol's 1-minute candles, ascending, as columns (open_time in epoch seconds)."""

    symbol: str
    path: Path
    open_time: array = field(default_factory=_col)
    open: array = field(default_factory=_col)
    high: array = field(default_factory=_col)
    low: array = field(default_factory=_col)
    close: array = field(default_factory=_col)
    volume: array = field(default_factory=_col)
    gaps: list[Gap] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.open_time)

    @property
    def len(self) -> int:
        return len(self.open_time)

    @property
    def first(self) -> float:
        """Open time of the first candle (epoch seconds)."""
        return self.open_time[0]

    @property
    def last(self) -> float:
        """Open time of the last candle (epoch seconds)."""
        return self.open_time[-1]

    @property
    def end(self) -> float:
        """Close time of the last candle: the file covers [first, end)."""
        return self.open_time[-1] + MINUTE

    @property
    def span_sec(self) -> float:
        """Market time the file covers, gaps included."""
        return self.end - self.first

    @property
    def missing_bars(self) -> int:
        return sum(g.missing_bars for g in self.gaps)

    @property
    def nbytes(self) -> int:
        """Memory held by the columns."""
        cols = (self.open_time, self.open, self.high, self.low, self.close, self.volume)
        return sum(c.itemsize * len(c) for c in cols)

    def kline(self, i: int) -> Kline:
        """Row i as the engine's Kline."""
        return Kline(start=self.open_time[i], open=self.open[i], high=self.high[i], low=self.low[i],
                     close=self.close[i], volume=self.volume[i])

    def describe(self) -> str:
        """One line: symbol, rows, time range, gaps."""
        gaps = (f"{len(self.gaps)} gap{'s' if len(self.gaps) != 1 else ''} "
                f"({self.missing_bars:,} missing candles)") if self.gaps else "no gaps"
        return (f"{self.symbol}: {len(self):,} candles {utc(self.first)} – {utc(self.end)} UTC "
                f"({fmt_span(self.span_sec)}), {gaps}")


# --- formatting -----------------------------------------------------------------------


def utc(ts: float) -> str:
    """2024-03-01 12:00 (UTC, minutes)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def fmt_span(sec: float) -> str:
    """A duration for people: 45 min, 3 h 20 min, 2 d 4 h."""
    minutes = int(sec // 60)
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    if days >= 2:
        return f"{days} d {hours} h" if hours else f"{days} d"
    hours += days * 24
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"


def _when(ms: int) -> str:
    try:
        return f"{ms} ({datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC)"
    except (ValueError, OverflowError, OSError):
        return str(ms)


# --- the spec -------------------------------------------------------------------------


def symbol_from_name(path: Path) -> str | None:
    """The symbol a file name carries: the first part like BTCUSDT (split at - _ . and spaces)."""
    for token in re.split(r"[-_.\s]+", path.name):
        if _SYMBOL.match(token.upper()):
            return token.upper()
    return None


def parse_spec(spec: str) -> tuple[Path, str]:
    """`FILE` or `FILE:SYMBOL` → (path, symbol); raises CandleFileError when there is no symbol."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail and "/" not in tail and "\\" not in tail:
        symbol = tail.strip().upper()
        if not _SYMBOL.match(symbol):
            raise CandleFileError(head, f"{tail!r} is not a USDT perpetual symbol like BTCUSDT")
        return Path(head), symbol
    path = Path(spec)
    symbol = symbol_from_name(path)
    if symbol is None:
        raise CandleFileError(path, "no symbol in the file name (like BTCUSDT.csv); "
                                    f"name it with FILE:SYMBOL, e.g. {spec}:BTCUSDT")
    return path, symbol


# --- rows -----------------------------------------------------------------------------


def _time_ms(text: Any) -> int:
    """An open time in ms; raises ValueError with the problem."""
    if isinstance(text, bool):
        raise ValueError(f"open_time_ms is not a number: {text!r}")
    if isinstance(text, int):
        t = text
    else:
        s = str(text).strip()
        try:
            t = int(s)
        except ValueError:
            try:
                x = float(s)
            except ValueError:
                raise ValueError(f"open_time_ms is not a number: {s!r}") from None
            if not math.isfinite(x) or x != int(x):
                raise ValueError(f"open_time_ms is not a whole number of milliseconds: {s!r}") from None
            t = int(x)
    if t < 0:
        raise ValueError(f"open_time_ms is negative: {t}")
    if t < _MIN_MS:
        raise ValueError(f"open time {t} looks like seconds; open_time_ms is in milliseconds")
    if t % 60_000:
        raise ValueError(f"open time {_when(t)} is not on a minute boundary (1-minute candles only)")
    return t


def _number(name: str, text: Any) -> float:
    if isinstance(text, bool):
        raise ValueError(f"{name} is not a number: {text!r}")
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is not a number: {str(text).strip()!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} is not a finite number: {str(text).strip()!r}")
    return x


def check_row(fields: list[Any] | tuple[Any, ...]) -> tuple[int, float, float, float, float, float]:
    """(open_time_ms, open, high, low, close, volume) from six fields, or ValueError with the problem."""
    t = _time_ms(fields[0])
    o = _number("open", fields[1])
    h = _number("high", fields[2])
    lo = _number("low", fields[3])
    c = _number("close", fields[4])
    v = _number("volume", fields[5])
    for name, x in (("open", o), ("high", h), ("low", lo), ("close", c)):
        if x <= 0:
            raise ValueError(f"{name} is not a positive price: {fields[COLUMNS.index(name)]!s}")
    if v < 0:
        raise ValueError(f"volume is negative: {fields[5]!s}")
    if h < max(o, c):
        raise ValueError(f"high {fields[2]!s} is below max(open, close) {max(o, c):g}")
    if lo > min(o, c):
        raise ValueError(f"low {fields[3]!s} is above min(open, close) {min(o, c):g}")
    return t, o, h, lo, c, v


class _Builder:
    """Appends checked rows in ascending time, finding gaps as it goes."""

    def __init__(self, path: Path, symbol: str) -> None:
        self.series = CandleSeries(symbol=symbol, path=path)
        self.prev_ms: int | None = None
        self.min_step_ms: int | None = None

    def add(self, row: tuple[int, float, float, float, float, float]) -> None:
        t = row[0]
        prev = self.prev_ms
        if prev is not None:
            step = t - prev
            if step == 0:
                raise ValueError(f"duplicate time {_when(t)} (the row before has it too)")
            if step < 0:
                raise ValueError(f"time {_when(t)} is before the row before it ({_when(prev)}): "
                                 "rows must be in ascending time")
            if self.min_step_ms is None or step < self.min_step_ms:
                self.min_step_ms = step
            if step > 60_000:
                s = self.series
                s.gaps.append(Gap(s.symbol, prev / 1000 + MINUTE, t / 1000, step // 60_000 - 1))
        self.prev_ms = t
        s = self.series
        s.open_time.append(t / 1000)
        s.open.append(row[1])
        s.high.append(row[2])
        s.low.append(row[3])
        s.close.append(row[4])
        s.volume.append(row[5])

    def done(self) -> CandleSeries:
        s = self.series
        if not len(s):
            raise CandleFileError(s.path, "no candles in the file")
        if self.min_step_ms is not None and self.min_step_ms > 60_000:
            minutes = self.min_step_ms / 60_000
            s.gaps.clear()
            raise CandleFileError(s.path, f"the candles are {minutes:g} minutes apart: only 1-minute candles "
                                          "are supported (scalpdesk klines download fetches them)")
        return s


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for n, line in enumerate(f, 1):
                yield n, line
    except UnicodeDecodeError as e:
        raise CandleFileError(path, f"not a text file ({e.reason})") from None


def _read_csv(path: Path, symbol: str) -> CandleSeries:
    b = _Builder(path, symbol)
    seen_line = False
    for n, line in _csv_lines(path):
        text = line.strip()
        if not text:
            continue
        fields = text.split(",")
        if not seen_line:
            seen_line = True
            # A header has no number in it; a first row with a bad time still has its prices.
            if not any(_is_number(x) for x in fields):
                if len(fields) != len(COLUMNS):
                    raise CandleFileError(path, f"the header has {len(fields)} columns, expected "
                                                f"{len(COLUMNS)}: {CSV_HEADER}", n)
                continue
        if len(fields) != len(COLUMNS):
            raise CandleFileError(path, f"{len(fields)} columns, expected {len(COLUMNS)} ({CSV_HEADER})", n)
        try:
            b.add(check_row(fields))
        except ValueError as e:
            raise CandleFileError(path, str(e), n) from None
    if not seen_line:
        raise CandleFileError(path, "the file is empty")
    return b.done()


def bybit_rows(data: Any, path: Path) -> list[Any]:
    """The candle list of a saved /v5/market/kline answer (or of a bare list)."""
    if isinstance(data, dict):
        code = data.get("retCode", 0)
        if code not in (0, "0"):
            raise CandleFileError(path, f"a Bybit error answer (retCode {code}: {data.get('retMsg', '')}), "
                                        "not candles")
        result = data.get("result", data)
        rows = result.get("list") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise CandleFileError(path, "JSON without a result.list of candles (the answer of /v5/market/kline)")
        interval = result.get("interval") if isinstance(result, dict) else None
        if interval not in (None, "1", 1):
            raise CandleFileError(path, f"interval {interval} candles: only 1-minute candles are supported")
        return rows
    if isinstance(data, list):
        return data
    raise CandleFileError(path, "JSON that is neither a /v5/market/kline answer nor a list of candles")


def _read_json(path: Path, symbol: str) -> CandleSeries:
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:
        raise CandleFileError(path, f"not valid JSON ({e})") from None
    rows = bybit_rows(data, path)
    if not rows:
        raise CandleFileError(path, "no candles in the file")

    def start(i: int) -> int | None:
        try:
            return _time_ms(rows[i][0])
        except (ValueError, TypeError, IndexError, KeyError):
            return None

    # Bybit sends newest first; a list saved oldest first is taken as it is.
    t0, t1 = (start(0), start(1)) if len(rows) > 1 else (None, None)
    ascending = t0 is not None and t1 is not None and t0 < t1
    order: Iterable[int] = range(len(rows)) if ascending else range(len(rows) - 1, -1, -1)
    b = _Builder(path, symbol)
    for i in order:
        row = rows[i]
        where = f"list row {i + 1}"
        if not isinstance(row, list):
            raise CandleFileError(path, f"not a candle (a list of 7 values): {row!r}"[:200], where)
        if len(row) not in (6, 7):
            raise CandleFileError(path, f"{len(row)} columns, expected 7 "
                                        "(start, open, high, low, close, volume, turnover)", where)
        try:
            b.add(check_row(row[:6]))
        except ValueError as e:
            msg = str(e)
            if not ascending and ("before the row before" in msg or "duplicate" in msg):
                msg += " (Bybit's list is newest first)"
            raise CandleFileError(path, msg, where) from None
    return b.done()


def read_candles(path: Path | str, symbol: str) -> CandleSeries:
    """Read and check one candle file of `symbol` (CSV or Bybit JSON, told by content)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise CandleFileError(path, "no such file") from None
    except IsADirectoryError:
        raise CandleFileError(path, "is a directory, not a candle file") from None
    except OSError as e:
        raise CandleFileError(path, f"cannot read it ({e.strerror})") from None
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not text:
        raise CandleFileError(path, "the file is empty")
    if text[:1] in (b"{", b"["):
        return _read_json(path, symbol)
    return _read_csv(path, symbol)


def load_candles(spec: str) -> CandleSeries:
    """`FILE` or `FILE:SYMBOL` → the checked series; raises CandleFileError."""
    path, symbol = parse_spec(spec)
    return read_candles(path, symbol)


# --- warm-up --------------------------------------------------------------------------


def warmup_sec(bars: int = 100, interval_min: int = 15) -> int:
    """History the deciders read before a decision: `bars` candles of `interval_min` minutes."""
    return bars * interval_min * MINUTE


def check_warmup(series: CandleSeries, need_sec: float, *, why: str = "") -> None:
    """Refuse a file too short to warm up the deciders and still leave a candle to trade on.

    The first decision can come at series.first + need_sec; the file must reach past it.
    `why` says where need_sec comes from, e.g. "100 × 15 m candles".
    """
    if series.span_sec > need_sec:
        return
    because = f" ({why})" if why else ""
    raise CandleFileError(
        series.path,
        f"gives {fmt_span(series.span_sec)} of candles ({utc(series.first)} – {utc(series.end)} UTC), "
        f"the replay needs {fmt_span(need_sec)} for warm-up before its first decision{because} "
        f"and candles after it to trade on: fetch more, e.g. scalpdesk klines download {series.symbol} "
        f"--from {datetime.fromtimestamp(series.end - need_sec - 86400, UTC):%Y-%m-%d} "
        f"--to {datetime.fromtimestamp(series.end, UTC):%Y-%m-%dT%H:%M}",
    )
