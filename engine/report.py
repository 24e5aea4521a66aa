"""Trading statistics from the journal: one computation for `scalpdesk report`, the end of
a replay and the console's statistics screen.

build_report() is pure (no I/O, no clock): closed trades in, a Report out. render_text()
draws it for people, Report.model_dump_json() is the `--json` object, write_csv() one
row per trade.

Definitions (README "The report"):
- A win is a trade with pnl > 0 (pnl is net of fees); anything else is a loss, so a
  trade that made exactly its fees back counts against the win rate.
- The equity curve is start_equity plus the cumulative net PnL in close order (realised
  only). Max drawdown is its largest fall from a running peak, in % of that peak.
- trades_per_day = trades / period in days, the period being first open .. last close
  unless given. A period shorter than a day counts as one day: two hours with 3 trades
  is 3 a day, not 36 (extrapolating a short run would promise what it never showed).
- Cooldown effectiveness compares the trades opened within `cooldown_window_sec` after
  their symbol's previous cooldown ended (previous closed_at + its cooldown_sec) with
  all the others. A previous trade without a recorded cooldown uses default_cooldown_sec;
  if that is None too, the trade counts among the others.
- The expectations table (the original system's targets): win rate and ROI per trade
  are "at least" (above the band is met), trades per day and duration are true ranges,
  max drawdown is an upper bound. With no trades every row is "no trades" (met null).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import textwrap
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from engine.models import Trade

DAY = 86400.0
_ROUND = 6  # decimals kept in the figures (not in trade_list, which is as recorded)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, _ROUND) + 0.0  # + 0.0: never "-0.0"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Group(_M):
    """Figures of a subset of the trades (by reason, symbol, hour…)."""

    trades: int
    wins: int
    win_rate_pct: float | None
    pnl: float
    avg_roi_pct: float | None
    avg_duration_min: float | None


class TradeRow(_M):
    """One trade of trade_list (and one CSV row); times in epoch seconds, pnl net of fees."""

    symbol: str
    side: str
    reason: str
    opened_at: float
    closed_at: float
    duration_min: float
    entry: float
    exit: float
    qty: float
    leverage: float
    pnl: float
    roi_pct: float
    fees: float
    intent_id: str | None


class Expectation(_M):
    """One row of the original system's expectations table."""

    name: str  # the figure's JSON name
    label: str
    expected: str
    rule: Literal["at_least", "range", "below"]
    low: float | None
    high: float | None
    value: float | None
    met: bool | None  # None: no trades


class CooldownEffect(_M):
    """The first trade after a cooldown against the rest."""

    window_sec: float
    after_cooldown: Group
    others: Group


class EquityPoint(_M):
    t: float
    equity: float


class Report(_M):
    """Every figure of the report; the JSON names are the documented interface."""

    trades: int
    trades_per_day: float
    win_rate_pct: float | None
    avg_duration_min: float | None
    median_duration_min: float | None
    avg_roi_pct: float | None
    max_drawdown_pct: float
    pnl: float
    pnl_pct: float
    fees: float
    expectancy: float | None
    profit_factor: float | None
    by_reason: dict[str, Group]
    by_symbol: dict[str, Group]
    wins: int
    losses: int
    avg_win: float | None
    avg_loss: float | None
    longest_losing_streak: int
    by_hour: dict[str, Group]  # "00".."23": UTC hour of the open, hours with trades only
    cooldown: CooldownEffect
    start_equity: float
    end_equity: float
    period_start: float | None
    period_end: float | None
    period_days: float
    equity_curve: list[EquityPoint]
    expectations: list[Expectation]
    trade_list: list[TradeRow]


# --- the computation ------------------------------------------------------------------


def _group(trades: Sequence[Trade]) -> Group:
    n = len(trades)
    wins = sum(1 for t in trades if t.pnl > 0)
    return Group(
        trades=n,
        wins=wins,
        win_rate_pct=_r(wins / n * 100) if n else None,
        pnl=_r(math.fsum(t.pnl for t in trades)),  # type: ignore[arg-type]
        avg_roi_pct=_r(statistics.fmean(t.roi_pct for t in trades)) if n else None,
        avg_duration_min=_r(statistics.fmean(t.duration_sec for t in trades) / 60) if n else None,
    )


def _groups(trades: Iterable[Trade], key: Callable[[Trade], str]) -> dict[str, list[Trade]]:
    out: dict[str, list[Trade]] = {}
    for t in trades:
        out.setdefault(key(t), []).append(t)
    return out


def _max_drawdown_pct(start_equity: float, pnls: Iterable[float]) -> float:
    peak = equity = start_equity
    worst = 0.0
    for p in pnls:
        equity += p
        if equity > peak:
            peak = equity
        elif peak > 0:
            worst = max(worst, (peak - equity) / peak * 100)
    return worst


def _longest_losing_streak(trades: Sequence[Trade]) -> int:
    best = run = 0
    for t in trades:
        run = run + 1 if t.pnl <= 0 else 0
        best = max(best, run)
    return best


def _after_cooldown(trades: Sequence[Trade], window_sec: float, default_cooldown_sec: float | None) -> set[int]:
    """Indexes (into `trades`) of the first trade of a symbol opened within the window after
    its previous cooldown ended."""
    found: set[int] = set()
    by_symbol: dict[str, list[int]] = {}
    for i, t in enumerate(trades):
        by_symbol.setdefault(t.symbol, []).append(i)
    for idxs in by_symbol.values():
        ordered = sorted(idxs, key=lambda i: (trades[i].opened_at, trades[i].closed_at))
        for prev_i, i in zip(ordered, ordered[1:]):
            prev = trades[prev_i]
            cooldown = prev.cooldown_sec if prev.cooldown_sec is not None else default_cooldown_sec
            if cooldown is None:
                continue
            ended = prev.closed_at + cooldown
            if ended <= trades[i].opened_at < ended + window_sec:
                found.add(i)
    return found


def _expectations(n: int, win_rate: float | None, duration: float | None, per_day: float,
                  roi: float | None, drawdown: float) -> list[Expectation]:
    rows = [
        ("win_rate_pct", "win rate", "55–65 %", "at_least", 55.0, 65.0, win_rate),
        ("avg_duration_min", "trade duration (average)", "20–40 min", "range", 20.0, 40.0, duration),
        ("trades_per_day", "trades per day", "10–30", "range", 10.0, 30.0, per_day),
        ("avg_roi_pct", "average ROI per trade (on margin)", "1–3 %", "at_least", 1.0, 3.0, roi),
        ("max_drawdown_pct", "max drawdown", "< 10 %", "below", None, 10.0, drawdown),
    ]
    out = []
    for name, label, expected, rule, lo, hi, value in rows:
        met: bool | None
        if n == 0 or value is None:
            met, value = None, None
        elif rule == "at_least":
            met = value >= lo  # type: ignore[operator]
        elif rule == "range":
            met = lo <= value <= hi  # type: ignore[operator]
        else:
            met = value < hi  # type: ignore[operator]
        out.append(Expectation(name=name, label=label, expected=expected, rule=rule, low=lo, high=hi,  # type: ignore[arg-type]
                               value=value, met=met))
    return out


def _row(t: Trade) -> TradeRow:
    return TradeRow(symbol=t.symbol, side=t.side, reason=t.reason.value, opened_at=t.opened_at,
                    closed_at=t.closed_at, duration_min=_r(t.duration_sec / 60) or 0.0, entry=t.entry_price,
                    exit=t.exit_price, qty=t.qty, leverage=t.leverage, pnl=t.pnl, roi_pct=t.roi_pct,
                    fees=t.fees, intent_id=t.intent_id)


def build_report(
    trades: Sequence[Trade],
    *,
    start_equity: float,
    period_start: float | None = None,
    period_end: float | None = None,
    cooldown_window_sec: float = 300,
    default_cooldown_sec: float | None = None,
) -> Report:
    """The statistics of closed trades (any order). The period defaults to first open .. last close."""
    if not start_equity > 0:
        raise ValueError(f"start_equity must be positive, got {start_equity}")
    ts = sorted(trades, key=lambda t: (t.closed_at, t.opened_at))
    n = len(ts)
    if period_start is None and ts:
        period_start = min(t.opened_at for t in ts)
    if period_end is None and ts:
        period_end = max(t.closed_at for t in ts)
    if period_start is not None and period_end is not None and period_end < period_start:
        raise ValueError("the period ends before it starts")
    period_days = (period_end - period_start) / DAY if period_start is not None and period_end is not None else 0.0

    pnl = math.fsum(t.pnl for t in ts)
    wins = [t for t in ts if t.pnl > 0]
    losses = [t for t in ts if t.pnl <= 0]
    gross_win = math.fsum(t.pnl for t in wins)
    gross_loss = -math.fsum(t.pnl for t in losses if t.pnl < 0)
    durations = [t.duration_sec / 60 for t in ts]
    all_ = _group(ts)
    drawdown = _max_drawdown_pct(start_equity, (t.pnl for t in ts))
    per_day = n / max(period_days, 1.0)

    curve: list[EquityPoint] = []
    if period_start is not None:
        equity = start_equity
        curve.append(EquityPoint(t=period_start, equity=equity))
        for t in ts:
            equity += t.pnl
            curve.append(EquityPoint(t=t.closed_at, equity=_r(equity)))  # type: ignore[arg-type]

    after = _after_cooldown(ts, cooldown_window_sec, default_cooldown_sec)
    by_reason = _groups(ts, lambda t: t.reason.value)
    by_hour = _groups(ts, lambda t: f"{datetime.fromtimestamp(t.opened_at, UTC).hour:02d}")
    return Report(
        trades=n,
        trades_per_day=_r(per_day),  # type: ignore[arg-type]
        win_rate_pct=all_.win_rate_pct,
        avg_duration_min=all_.avg_duration_min,
        median_duration_min=_r(statistics.median(durations)) if ts else None,
        avg_roi_pct=all_.avg_roi_pct,
        max_drawdown_pct=_r(drawdown),  # type: ignore[arg-type]
        pnl=_r(pnl),  # type: ignore[arg-type]
        pnl_pct=_r(pnl / start_equity * 100),  # type: ignore[arg-type]
        fees=_r(math.fsum(t.fees for t in ts)),  # type: ignore[arg-type]
        expectancy=_r(pnl / n) if n else None,
        profit_factor=_r(gross_win / gross_loss) if gross_loss > 0 else None,
        by_reason={k: _group(v) for k, v in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0]))},
        by_symbol={k: _group(v) for k, v in sorted(_groups(ts, lambda t: t.symbol).items())},
        wins=len(wins),
        losses=len(losses),
        avg_win=_r(gross_win / len(wins)) if wins else None,
        avg_loss=_r(math.fsum(t.pnl for t in losses) / len(losses)) if losses else None,
        longest_losing_streak=_longest_losing_streak(ts),
        by_hour={k: _group(v) for k, v in sorted(by_hour.items())},
        cooldown=CooldownEffect(
            window_sec=cooldown_window_sec,
            after_cooldown=_group([t for i, t in enumerate(ts) if i in after]),
            others=_group([t for i, t in enumerate(ts) if i not in after]),
        ),
        start_equity=start_equity,
        end_equity=_r(start_equity + pnl),  # type: ignore[arg-type]
        period_start=period_start,
        period_end=period_end,
        period_days=_r(period_days),  # type: ignore[arg-type]
        equity_curve=curve,
        expectations=_expectations(n, all_.win_rate_pct, all_.avg_duration_min, _r(per_day),  # type: ignore[arg-type]
                                   all_.avg_roi_pct, _r(drawdown)),  # type: ignore[arg-type]
        trade_list=[_row(t) for t in ts],
    )


# --- text -----------------------------------------------------------------------------
# Every figure goes through these, so the text says exactly what the JSON holds, rounded.


def money(x: float | None, signed: bool = False) -> str:
    """1,234.56 (USDT); — when undefined."""
    if x is None:
        return "—"
    return f"{x:+,.2f}" if signed else f"{x:,.2f}"


def pct(x: float | None, signed: bool = False) -> str:
    """12.3 %; — when undefined."""
    if x is None:
        return "—"
    return f"{x:+,.2f} %" if signed else f"{x:,.2f} %"


def num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def minutes(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f} min"


def _day(ts: float | None) -> str:
    return "—" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def expectation_value(e: Expectation) -> str:
    """How the expectations table writes the value reached."""
    if e.value is None:
        return "no trades"
    if e.name == "avg_duration_min":
        return minutes(e.value)
    if e.name == "trades_per_day":
        return num(e.value, 1)
    return pct(e.value)


def _met(e: Expectation) -> str:
    return {True: "met", False: "NOT met", None: "—"}[e.met]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return [line(headers), line(["─" * w for w in widths])] + [line(r) for r in rows]


def _group_rows(groups: dict[str, Group]) -> list[list[str]]:
    return [[k, f"{g.trades:,}", pct(g.win_rate_pct), money(g.pnl, signed=True), pct(g.avg_roi_pct, signed=True),
             minutes(g.avg_duration_min)] for k, g in groups.items()]


_GROUP_HEAD = ["trades", "win rate", "pnl", "avg ROI", "avg duration"]
_GROUP_RIGHT = [False, True, True, True, True, True]

_plot_lock = threading.Lock()  # plotext draws on one module-level figure


DRAWDOWN_MARK = "░"  # what fills the drawdown under the running peak in equity_plot(drawdown=True)


def equity_plot(report: Report, width: int = 100, height: int = 15, color: bool = False, *,
                drawdown: bool = False, title: str = "Realised equity (USDT), by close time, UTC") -> str:
    """The realised equity curve drawn by plotext; "" with fewer than two points.

    drawdown=True shades, with DRAWDOWN_MARK, what lies between the curve and its running
    peak (the drawdown of max_drawdown_pct), on a curve sampled at every half column."""
    pts = report.equity_curve
    if len(pts) < 2:
        return ""
    import plotext  # imported here: 150 ms, and only the text report draws

    # Realised equity moves in steps at each close: draw the steps, not slopes between closes.
    xs, ys = [pts[0].t], [pts[0].equity]
    for p in pts[1:]:
        xs += [p.t, p.t]
        ys += [ys[-1], p.equity]
    if xs[-1] == xs[0]:
        xs.append(xs[0] + 1.0)
        ys.append(ys[-1])
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    yticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    xticks = [xs[0] + (xs[-1] - xs[0]) * k / 3 for k in range(4)]
    span = xs[-1] - xs[0]
    form = "%m-%d %H:%M" if span < 5 * DAY else "%Y-%m-%d"
    if drawdown:
        # plotext fills from each point of a signal to the same point of another: sample the
        # steps finely enough that the fills touch (two points a column).
        n = max(2 * width, 4)
        sx = [xs[0] + span * k / (n - 1) for k in range(n)]
        closes = [p.t for p in pts]
        sy, j = [], 0
        for x in sx:
            while j + 1 < len(closes) and closes[j + 1] <= x:
                j += 1
            sy.append(pts[j].equity)
        peak, top = [], sy[0]
        for y in sy:
            top = max(top, y)
            peak.append(top)
    with _plot_lock:
        # The size asked for, whatever terminal this process has (plotext clamps to it by default).
        plotext.terminal.limit(False, False)
        fig = plotext.figure
        fig.clear()
        fig.plot_size(width, height)
        if drawdown:
            line = fig.signal(sx, sy)
            line.lines()
            shade = fig.signal(sx, peak, marker=plotext.marker(DRAWDOWN_MARK))
            shade.fill(line)
            fig.draw(shade)
            fig.draw(line)
        else:
            sig = fig.signal(xs, ys)
            sig.lines()
            fig.draw(sig)
        if title:
            fig.title(title)
        fig.ruler("y").ticks(yticks, [f"{y:,.0f}" for y in yticks])
        fig.ruler("x").ticks(xticks, [datetime.fromtimestamp(x, UTC).strftime(form) for x in xticks])
        text = fig.build().string(colorless=not color)
        fig.clear()
    return "\n".join(line.rstrip() for line in text.splitlines())


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def render_text(report: Report, width: int = 100, *, color: bool = False, title: str = "scalpdesk report",
                notes: Sequence[str] = ()) -> str:
    """The human report: expectations side by side, figures, breakdowns, equity curve.

    Prose is wrapped to `width`; `notes` are extra lines under the header (where the
    figures come from). color=False gives plain text (no escape codes): for pipes and files.
    """
    r = report
    width = max(width, 60)
    out: list[str] = [title, "=" * min(len(title), width)]
    if r.period_start is None or r.period_end is None:
        period = "period       — (an empty journal)"
    else:
        period = (f"period       {_day(r.period_start)} – {_day(r.period_end)} UTC ({num(r.period_days, 2)} days"
                  + (", under a day: trades per day counts it as one day)" if r.trades and r.period_days < 1 else ")"))
    out += _wrap(period, width, " " * 13)
    out.append(f"start equity {money(r.start_equity)} USDT   end equity {money(r.end_equity)} USDT")
    for note in notes:
        out += _wrap(note, width, " " * 13)
    out.append("")
    if not r.trades:
        out.append("no trades in this period")
        return "\n".join(out) + "\n"

    out.append("Expectations (the original system's targets)")
    out += _table(["metric", "expected", "reached", "met"],
                  [[e.label, e.expected, expectation_value(e), _met(e)] for e in r.expectations],
                  [False, True, True, False])
    out += _wrap("  win rate and ROI: at least the band's low end; trades per day and duration: within the band; "
                 "drawdown: below", width, "  ")
    out.append("")

    out.append("Figures")
    figures = [
        ("trades", f"{r.trades:,}"),
        ("trades per day", num(r.trades_per_day, 1)),
        ("win rate", f"{pct(r.win_rate_pct)} ({r.wins:,} won, {r.losses:,} lost)"),
        ("pnl (net of fees)", f"{money(r.pnl, signed=True)} USDT ({pct(r.pnl_pct, signed=True)} of start equity)"),
        ("fees", f"{money(r.fees)} USDT"),
        ("expectancy", f"{money(r.expectancy, signed=True)} USDT per trade"),
        ("profit factor", num(r.profit_factor) if r.profit_factor is not None else "— (no losing trade)"),
        ("average win", f"{money(r.avg_win, signed=True)} USDT"),
        ("average loss", f"{money(r.avg_loss, signed=True)} USDT"),
        ("longest losing streak", f"{r.longest_losing_streak:,}"),
        ("average ROI per trade", pct(r.avg_roi_pct, signed=True)),
        ("duration", f"average {minutes(r.avg_duration_min)}, median {minutes(r.median_duration_min)}"),
        ("max drawdown", pct(r.max_drawdown_pct)),
    ]
    label_w = max(len(k) for k, _ in figures)
    out += [f"  {k.ljust(label_w)}  {v}" for k, v in figures]
    out.append("")

    time_exits = r.by_reason.get("TIME_EXIT")
    n_time = time_exits.trades if time_exits else 0
    out.append(f"By close reason (time exits: {n_time:,} of {r.trades:,}, {pct(n_time / r.trades * 100)})")
    out += _table(["reason", *_GROUP_HEAD], _group_rows(r.by_reason), _GROUP_RIGHT)
    out.append("")
    out.append("By symbol")
    out += _table(["symbol", *_GROUP_HEAD], _group_rows(r.by_symbol), _GROUP_RIGHT)
    out.append("")
    out.append("By hour of the open (UTC)")
    out += _table(["hour", *_GROUP_HEAD], _group_rows(r.by_hour), _GROUP_RIGHT)
    out.append("")

    c = r.cooldown
    out += _wrap(f"Cooldown effectiveness (first trade of a symbol opened within {c.window_sec / 60:g} min "
                 "after its cooldown ended, against the rest)", width, "  ")
    out += _table(["", *_GROUP_HEAD], _group_rows({"after a cooldown": c.after_cooldown, "the rest": c.others}),
                  _GROUP_RIGHT)
    out.append("")

    plot = equity_plot(r, width=min(width, 200), color=color)
    if plot:
        out.append(plot)
    return "\n".join(out) + "\n"


# --- CSV ------------------------------------------------------------------------------

CSV_FIELDS = list(TradeRow.model_fields)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def csv_text(report: Report) -> str:
    """One row per trade with a header; times as UTC `YYYY-MM-DD HH:MM:SS` a spreadsheet reads."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for row in report.trade_list:
        d = row.model_dump()
        d["opened_at"], d["closed_at"] = _iso(row.opened_at), _iso(row.closed_at)
        w.writerow(["" if d[k] is None else d[k] for k in CSV_FIELDS])
    return buf.getvalue()


def write_csv(report: Report, path: Path | str) -> None:
    """Write csv_text() to `path` atomically (a crash leaves the old file or the new one)."""
    from engine.store import atomic_write

    atomic_write(Path(path), csv_text(report).encode())
