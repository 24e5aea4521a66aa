"""The report: figures on a hand-written journal, the JSON against the text, the command."""

from __future__ import annotations

import csv
import json
import re

import pytest

from app.cli import main
from engine.journal import read_journal
from engine.models import CloseReason, Trade
from engine.report import build_report, csv_text, expectation_value, money, num, pct, render_text
from engine.store import StateStore, StoreCorrupt, StoreError

T0 = 1_704_067_200.0  # 2024-01-01 00:00 UTC
TP, SL, TIME = CloseReason.TAKE_PROFIT, CloseReason.STOP_LOSS, CloseReason.TIME_EXIT


def trade(n: int, symbol: str, opened: float, minutes: float, pnl: float, roi: float, fees: float,
          reason: CloseReason, cooldown: int | None = 300, side: str = "long") -> Trade:
    return Trade(symbol=symbol, side=side, qty=0.01, entry_price=100.0, exit_price=101.0, opened_at=T0 + opened,
                 closed_at=T0 + opened + minutes * 60, pnl=pnl, roi_pct=roi, duration_sec=minutes * 60,
                 reason=reason, leverage=5, fees=fees, cooldown_sec=cooldown, intent_id=f"o-{n}")


# Six trades, computed by hand (start equity 1,000):
#   #  symbol   open      close     min  pnl   roi  reason       cooldown
#   1  BTCUSDT  00:00     00:30     30   +20   +4   TAKE_PROFIT  300 → ends 00:35
#   2  BTCUSDT  00:35     00:55     20   -10   -2   STOP_LOSS    600 → ends 01:05  (opened as #1's cooldown ended)
#   4  BTCUSDT  01:06     01:16     10   -15   -3   STOP_LOSS         (60 s after #2's cooldown: within 300 s)
#   3  ETHUSDT  01:00     01:40     40    -5   -1   TIME_EXIT    300 → ends 01:45
#   5  ETHUSDT  01:46     02:36     50   +30   +6   TIME_EXIT         (60 s after #3's cooldown)
#   6  SOLUSDT  +1d 00:00 +1d 00:15 15    +5   +1   TAKE_PROFIT
# Close order 1 2 4 3 5 6: equity 1000 → 1020 → 1010 → 995 → 990 → 1020 → 1025.
JOURNAL = [
    trade(1, "BTCUSDT", 0, 30, 20, 4, 1.0, TP),
    trade(2, "BTCUSDT", 2100, 20, -10, -2, 1.0, SL, cooldown=600, side="short"),
    trade(3, "ETHUSDT", 3600, 40, -5, -1, 0.5, TIME),
    trade(4, "BTCUSDT", 3960, 10, -15, -3, 1.0, SL),
    trade(5, "ETHUSDT", 6360, 50, 30, 6, 0.5, TIME, side="short"),
    trade(6, "SOLUSDT", 86400, 15, 5, 1, 0.2, TP),
]


@pytest.fixture
def report():
    return build_report(list(reversed(JOURNAL)), start_equity=1000)  # any order


def test_figures_on_a_hand_written_journal(report):
    r = report
    assert r.trades == 6 and r.wins == 3 and r.losses == 3
    assert r.win_rate_pct == 50.0
    assert r.pnl == 25.0 and r.pnl_pct == 2.5 and r.end_equity == 1025.0
    assert r.fees == pytest.approx(4.2)
    assert r.expectancy == pytest.approx(25 / 6)
    assert r.profit_factor == pytest.approx(55 / 30)
    assert r.avg_win == pytest.approx(55 / 3) and r.avg_loss == pytest.approx(-10.0)
    assert r.longest_losing_streak == 3  # -10, -15, -5 in close order
    assert r.max_drawdown_pct == pytest.approx((1020 - 990) / 1020 * 100)
    assert r.avg_duration_min == 27.5 and r.median_duration_min == 25.0  # 10 15 20 30 40 50
    assert r.avg_roi_pct == pytest.approx(5 / 6)
    # period: first open .. last close = 1 day 15 min
    assert r.period_start == T0 and r.period_end == T0 + 86400 + 900
    assert r.trades_per_day == pytest.approx(6 / (87300 / 86400), abs=1e-6)
    assert [p.equity for p in r.equity_curve] == [1000, 1020, 1010, 995, 990, 1020, 1025]
    assert [t.intent_id for t in r.trade_list] == ["o-1", "o-2", "o-4", "o-3", "o-5", "o-6"]


def test_breakdowns(report):
    r = report
    assert {k: (g.trades, g.wins) for k, g in r.by_reason.items()} == {
        "STOP_LOSS": (2, 0), "TAKE_PROFIT": (2, 2), "TIME_EXIT": (2, 1)}
    assert r.by_reason["TIME_EXIT"].pnl == 25.0 and r.by_reason["TIME_EXIT"].avg_duration_min == 45.0
    assert {k: (g.trades, g.wins, g.pnl) for k, g in r.by_symbol.items()} == {
        "BTCUSDT": (3, 1, -5.0), "ETHUSDT": (2, 1, 25.0), "SOLUSDT": (1, 1, 5.0)}
    # UTC hour of the open: 00 → #1 #2 #6, 01 → #3 #4 #5
    assert {k: (g.trades, g.wins) for k, g in r.by_hour.items()} == {"00": (3, 2), "01": (3, 1)}
    # after a cooldown: #2 (at its end), #4 and #5 (60 s after) — the rest: #1 #3 #6
    c = r.cooldown
    assert (c.after_cooldown.trades, c.after_cooldown.wins) == (3, 1)
    assert (c.others.trades, c.others.wins) == (3, 2)
    assert c.after_cooldown.win_rate_pct == pytest.approx(100 / 3, abs=1e-6)


def test_expectations_rules(report):
    rows = {e.name: e for e in report.expectations}
    assert [(n, rows[n].met) for n in rows] == [
        ("win_rate_pct", False), ("avg_duration_min", True), ("trades_per_day", False),
        ("avg_roi_pct", False), ("max_drawdown_pct", True)]
    # "at least": above the band is met; ranges are ranges; drawdown is an upper bound
    hot = build_report([trade(1, "BTCUSDT", 0, 90, 50, 8, 1, TP)], start_equity=1000,
                       period_start=T0, period_end=T0 + 86400)
    rows = {e.name: e for e in hot.expectations}
    assert rows["win_rate_pct"].met and rows["avg_roi_pct"].met  # 100 % and 8 %: above the band
    assert rows["avg_duration_min"].met is False  # 90 min: outside 20–40
    assert rows["trades_per_day"].met is False  # 1 a day


def test_a_period_under_a_day_counts_as_one_day():
    ts = [trade(i, "BTCUSDT", i * 1800, 20, 1, 1, 0.1, TP) for i in range(3)]  # 3 trades within 1 h 20
    r = build_report(ts, start_equity=1000)
    assert r.period_days < 1 and r.trades_per_day == 3.0
    r = build_report(ts, start_equity=1000, period_start=T0, period_end=T0 + 2 * 86400)
    assert r.trades_per_day == 1.5


def test_no_trades_is_no_division_by_zero():
    r = build_report([], start_equity=1000)
    assert r.trades == 0 and r.win_rate_pct is None and r.expectancy is None and r.profit_factor is None
    assert r.trades_per_day == 0 and r.max_drawdown_pct == 0 and r.pnl == 0 and r.equity_curve == []
    assert all(e.met is None and e.value is None for e in r.expectations)
    text = render_text(r)
    assert "no trades" in text
    json.loads(r.model_dump_json())
    r = build_report([], start_equity=1000, period_start=T0, period_end=T0 + 86400 * 7)
    assert r.period_days == 7 and r.trades_per_day == 0


def test_profit_factor_is_null_without_a_loss():
    r = build_report([trade(1, "BTCUSDT", 0, 30, 5, 1, 0.1, TP)], start_equity=1000)
    assert r.profit_factor is None and r.avg_loss is None and r.longest_losing_streak == 0
    assert json.loads(r.model_dump_json())["profit_factor"] is None


def test_unknown_cooldown_uses_the_default_else_counts_among_the_rest():
    ts = [trade(1, "BTCUSDT", 0, 10, 1, 1, 0.1, TP, cooldown=None), trade(2, "BTCUSDT", 900, 10, 1, 1, 0.1, TP)]
    assert build_report(ts, start_equity=1000).cooldown.after_cooldown.trades == 0
    assert build_report(ts, start_equity=1000, default_cooldown_sec=300).cooldown.after_cooldown.trades == 1


JSON_NAMES = ["trades", "trades_per_day", "win_rate_pct", "avg_duration_min", "median_duration_min", "avg_roi_pct",
              "max_drawdown_pct", "pnl", "pnl_pct", "fees", "expectancy", "profit_factor", "by_reason", "by_symbol",
              "trade_list"]
TRADE_NAMES = ["symbol", "side", "reason", "opened_at", "closed_at", "entry", "exit", "qty", "pnl", "roi_pct",
               "fees", "intent_id"]


def test_the_json_has_the_documented_names(report):
    d = json.loads(report.model_dump_json())
    assert all(name in d for name in JSON_NAMES)
    assert all(name in d["trade_list"][0] for name in TRADE_NAMES)
    first = d["trade_list"][0]
    assert first["opened_at"] == T0 and first["closed_at"] == T0 + 1800  # epoch seconds


def _row(text: str, label: str) -> list[str]:
    """The cells of the table row starting with `label` (columns are 2+ spaces apart)."""
    for line in text.splitlines():
        if line.strip().startswith(label):
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row {label!r} in\n{text}")


def test_the_text_says_what_the_json_says(report):
    text = render_text(report, width=100)
    d = json.loads(report.model_dump_json())
    for e in d["expectations"]:
        row = _row(text, e["label"])
        assert row[1] == e["expected"]
        assert row[2] == expectation_value(type(report.expectations[0])(**e))
        assert row[3] == ("met" if e["met"] else "NOT met")
    assert _row(text, "win rate  ")[1] == "55–65 %" and _row(text, "win rate  ")[2] == pct(d["win_rate_pct"])
    assert _row(text, "trades per day ")[2] == num(d["trades_per_day"], 1)
    assert f"pnl (net of fees)      {money(d['pnl'], signed=True)} USDT ({pct(d['pnl_pct'], signed=True)}" in text
    assert f"fees                   {money(d['fees'])} USDT" in text
    assert f"expectancy             {money(d['expectancy'], signed=True)} USDT per trade" in text
    assert f"profit factor          {num(d['profit_factor'])}" in text
    assert f"max drawdown           {pct(d['max_drawdown_pct'])}" in text
    assert f"median {d['median_duration_min']:,.1f} min" in text
    for reason, g in d["by_reason"].items():
        assert _row(text, reason)[1:3] == [str(g["trades"]), pct(g["win_rate_pct"])]
    for symbol, g in d["by_symbol"].items():
        assert _row(text, symbol)[1:4] == [str(g["trades"]), pct(g["win_rate_pct"]), money(g["pnl"], signed=True)]
    assert "time exits: 2 of 6" in text
    assert _row(text, "after a cooldown")[1:3] == ["3", pct(d["cooldown"]["after_cooldown"]["win_rate_pct"])]


def test_the_equity_curve_is_plain_text_when_not_colour(report):
    text = render_text(report, width=90)
    assert "\x1b[" not in text
    assert "Realised equity" in text and "1,025" in text and "990" in text  # y ticks, thousands separated
    assert max(len(line) for line in text.splitlines()) <= 90
    assert "\x1b[" in render_text(report, width=90, color=True)


def test_thousands_are_separated():
    big = [trade(1, "BTCUSDT", 0, 30, 12345.678, 40, 10, TP)]
    text = render_text(build_report(big, start_equity=100_000))
    assert "+12,345.68 USDT" in text and "100,000.00" in text


def test_csv_has_a_header_and_a_row_per_trade(report, tmp_path):
    path = tmp_path / "trades.csv"
    from engine.report import write_csv

    write_csv(report, path)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 6 and rows[0]["intent_id"] == "o-1" and rows[0]["opened_at"] == "2024-01-01 00:00:00"
    assert float(rows[2]["pnl"]) == -15 and rows[2]["reason"] == "STOP_LOSS"
    assert path.read_text() == csv_text(report)


# --- the journal and the command ----------------------------------------------------------------


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    with StateStore(d) as store:
        for t in JOURNAL:
            store.add_trade(t)
    return d


def test_read_journal_reads_in_close_order_and_windows(state):
    assert [t.intent_id for t in read_journal(state)] == ["o-1", "o-2", "o-4", "o-3", "o-5", "o-6"]
    assert [t.intent_id for t in read_journal(state, since=T0 + 3300, until=T0 + 6000)] == ["o-2", "o-4"]
    assert [t.intent_id for t in read_journal(state, since=T0 + 86400)] == ["o-6"]


def test_read_journal_skips_hours_outside_the_window(state):
    # a damaged file outside the window is never opened (an hour of the earlier layout here)
    (state / "history" / "2023-12-31T23.json").write_text("{ torn")
    assert len(read_journal(state, since=T0)) == 6
    with pytest.raises(StoreCorrupt, match="2023-12-31T23.json: not valid JSON"):
        read_journal(state)


def test_read_journal_does_not_need_the_lock(state):
    with StateStore(state) as live:  # a running engine holds the lock
        live.add_trade(trade(7, "SOLUSDT", 90000, 10, 1, 1, 0.1, TP))
        assert len(read_journal(state)) == 7


def test_read_journal_names_a_record_that_does_not_validate(state):
    path = state / "history" / "2024-01-01T00.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[0]["doc"]["pnl"] = "lots"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    with pytest.raises(StoreCorrupt, match=r"2024-01-01T00.jsonl: table 'journal' document 1 is not a valid Trade"):
        read_journal(state)
    with pytest.raises(StoreError, match="no such state directory"):
        read_journal(state.parent / "nowhere")


def test_report_command_text(state, capsys):
    assert main(["report", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert _row(out, "win rate  ")[2:] == ["50.00 %", "NOT met"]
    assert "paper_equity setting (10,000.00)" in out and "--equity" in out


def test_report_command_json_is_one_object_and_nothing_else(state, capsys, tmp_path):
    assert main(["report", "--state-dir", str(state), "--json", "--equity", "1000", "--csv",
                 str(tmp_path / "t.csv")]) == 0
    cap = capsys.readouterr()
    d = json.loads(cap.out)  # the whole of stdout
    assert d["trades"] == 6 and d["pnl_pct"] == 2.5 and d["start_equity"] == 1000
    assert (tmp_path / "t.csv").exists() and "6 trades written" in cap.err


def test_report_command_windows(state, capsys):
    now = T0 + 86400 + 3600
    from app.report_cmd import run

    assert run(["--state-dir", str(state), "--json", "--days", "0.5"], now=lambda: now) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["trades"] == 1 and d["period_days"] == 0.5 and d["trades_per_day"] == 1.0  # under a day: one day
    assert run(["--state-dir", str(state), "--json", "--since", "2024-01-01T01:00"], now=lambda: now) == 0
    d = json.loads(capsys.readouterr().out)
    assert [t["intent_id"] for t in d["trade_list"]] == ["o-4", "o-3", "o-5", "o-6"]


@pytest.mark.parametrize("args, words", [
    (["--days", "3", "--since", "2024-01-01"], "--days and --since both given"),
    (["--since", "yesterday"], "--since 'yesterday' is not a date"),
    (["--since", "2999-01-01"], "in the future"),
    (["--days", "-2"], "--days must be a positive number"),
    (["--days", "many"], "argument --days: invalid float value"),
    (["--equity", "0"], "--equity must be a positive amount"),
])
def test_report_command_bad_input_is_one_line_and_exit_2(state, capsys, args, words):
    assert main(["report", "--state-dir", str(state), "--json", *args]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert words in cap.err and len(cap.err.strip().splitlines()) == 1, cap.err


def test_report_command_missing_state_dir(tmp_path, capsys):
    assert main(["report", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["report", "--state-dir", str(tmp_path / "nowhere"), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "no such state directory" in cap.err and len(cap.err.splitlines()) == 1


def test_report_command_corrupt_journal(state, capsys):
    (state / "history" / "2024-01-01T00.jsonl").write_text("[]\n")
    assert main(["report", "--state-dir", str(state), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "2024-01-01T00.jsonl" in cap.err and "left untouched" in cap.err
