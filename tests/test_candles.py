"""Candle files: both formats, the symbol, gaps, every bad row named by file and line, warm-up."""

from __future__ import annotations

import json
from array import array

import pytest

from engine.candles import (
    CSV_HEADER,
    CandleFileError,
    Gap,
    check_warmup,
    fmt_span,
    load_candles,
    parse_spec,
    warmup_sec,
)

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, ms
M = 60_000


def rows(n: int, start: int = T0, skip: range = range(0)) -> list[list[str]]:
    out = []
    for i in range(n):
        if i in skip:
            continue
        o = 100 + i * 0.5
        c = o + 0.25
        out.append([str(start + i * M), f"{o}", f"{c + 0.5}", f"{o - 0.5}", f"{c}", "12.5"])
    return out


def write_csv(path, data, header=True):
    lines = ([CSV_HEADER] if header else []) + [",".join(r) for r in data]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_with_and_without_header(tmp_path):
    a = load_candles(str(write_csv(tmp_path / "BTCUSDT.csv", rows(5))))
    b = load_candles(str(write_csv(tmp_path / "BTCUSDT-2024-01.csv", rows(5), header=False)))
    assert a.symbol == b.symbol == "BTCUSDT" and len(a) == len(b) == 5
    assert list(a.open_time) == list(b.open_time) == [T0 / 1000 + 60 * i for i in range(5)]
    assert a.first == T0 / 1000 and a.last == T0 / 1000 + 240 and a.end == T0 / 1000 + 300
    assert (a.open[1], a.high[1], a.low[1], a.close[1], a.volume[1]) == (100.5, 101.25, 100.0, 100.75, 12.5)
    assert isinstance(a.close, array) and a.close.typecode == "d"
    assert a.gaps == [] and a.kline(0).close == 100.25


def test_bybit_json_answer_and_bare_list_newest_first(tmp_path):
    data = [r + ["1234.5"] for r in reversed(rows(4))]  # Bybit: newest first, with turnover
    answer = {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "symbol": "ETHUSDT", "list": data}}
    (tmp_path / "eth.json").write_text(json.dumps(answer, indent=2))
    s = load_candles(f"{tmp_path / 'eth.json'}:ETHUSDT")
    assert s.symbol == "ETHUSDT" and list(s.open_time) == [T0 / 1000 + 60 * i for i in range(4)]  # ascending
    (tmp_path / "SOLUSDT.json").write_text(json.dumps(data))
    assert list(load_candles(str(tmp_path / "SOLUSDT.json")).close) == list(s.close)


def test_symbol_from_the_name_or_the_spec(tmp_path):
    assert parse_spec("data/BTCUSDT.csv")[1] == "BTCUSDT"
    assert parse_spec("data/btcusdt_1m-2020-03.csv")[1] == "BTCUSDT"
    assert parse_spec("candles-SOLUSDT.json")[1] == "SOLUSDT"
    assert parse_spec("x/data.csv:ethusdt") == (parse_spec("x/data.csv:ETHUSDT")[0], "ETHUSDT")
    with pytest.raises(CandleFileError, match=r"data.csv: no symbol in the file name.*data.csv:BTCUSDT"):
        parse_spec("data.csv")
    with pytest.raises(CandleFileError, match="'BTC' is not a USDT perpetual symbol"):
        parse_spec("data.csv:BTC")


def test_gaps_are_found_and_counted(tmp_path):
    s = load_candles(str(write_csv(tmp_path / "BTCUSDT.csv", rows(100, skip=range(10, 13)))))
    s2 = load_candles(str(write_csv(tmp_path / "BTCUSDT.csv", rows(100, skip=set(range(10, 13)) | {50}))))
    t = T0 / 1000
    assert s.gaps == [Gap("BTCUSDT", t + 600, t + 780, 3)] and s.gaps[0].duration_sec == 180
    assert s2.missing_bars == 4 and [g.missing_bars for g in s2.gaps] == [3, 1]
    assert "2 gaps (4 missing candles)" in s2.describe()
    assert s.span_sec == 100 * 60 and len(s) == 97


BAD = [
    # (replace row 3 (line 4 with the header) with these fields, the words of the message)
    ([str(T0 + 2 * M), "abc", "101", "99", "100", "1"], "open is not a number: 'abc'"),
    ([str(T0 + 2 * M), "100", "101", "99", "100"], "5 columns, expected 6"),
    ([str(T0 + 2 * M), "100", "101", "99", "100", "1", "7"], "7 columns, expected 6"),
    ([str(T0 + 2 * M), "100", "99.5", "99", "100", "1"], "high 99.5 is below max(open, close) 100"),
    ([str(T0 + 2 * M), "100", "101", "100.5", "100.7", "1"], "low 100.5 is above min(open, close) 100"),
    ([str(T0 + 2 * M), "0", "101", "0", "100", "1"], "open is not a positive price: 0"),
    ([str(T0 + 2 * M), "100", "101", "-1", "100", "1"], "low is not a positive price: -1"),
    ([str(T0 + 2 * M), "100", "101", "99", "100", "-1"], "volume is negative"),
    ([str(T0 + 2 * M), "nan", "101", "99", "100", "1"], "open is not a finite number"),
    ([str(T0 + M), "100", "101", "99", "100", "1"], "duplicate time 1704067260000 (2024-01-01 00:01:00 UTC)"),
    ([str(T0), "100", "101", "99", "100", "1"], "is before the row before it"),
    ([str(T0 + 2 * M + 1000), "100", "101", "99", "100", "1"], "is not on a minute boundary"),
    ([str((T0 + 2 * M) // 1000), "100", "101", "99", "100", "1"], "looks like seconds"),
    (["1.5e9x", "100", "101", "99", "100", "1"], "open_time_ms is not a number"),
]


@pytest.mark.parametrize("fields, words", BAD, ids=[w for _, w in BAD])
def test_a_bad_row_names_file_line_and_problem(tmp_path, fields, words):
    data = rows(6)
    data[2] = fields
    path = write_csv(tmp_path / "BTCUSDT.csv", data)
    with pytest.raises(CandleFileError) as e:
        load_candles(str(path))
    assert str(e.value).startswith(f"{path}:4: ")
    assert words in str(e.value)
    assert e.value.line == 4


def test_bad_json_rows_name_the_row(tmp_path):
    data = [r + ["1"] for r in reversed(rows(4))]
    data[1][2] = "1"  # high below open
    path = tmp_path / "BTCUSDT.json"
    path.write_text(json.dumps({"retCode": 0, "result": {"list": data}}))
    with pytest.raises(CandleFileError, match=r"BTCUSDT.json: list row 2: high 1 is below max\(open, close\)"):
        load_candles(str(path))
    data = [r + ["1"] for r in rows(4)]  # oldest first
    data[2], data[3] = data[3], data[2]
    path.write_text(json.dumps(data))
    with pytest.raises(CandleFileError, match="list row 4: time .* is before the row before it"):
        load_candles(str(path))
    path.write_text(json.dumps({"retCode": 10001, "retMsg": "params error: symbol invalid", "result": {}}))
    with pytest.raises(CandleFileError, match="a Bybit error answer \\(retCode 10001: params error"):
        load_candles(str(path))
    path.write_text('{"retCode": 0, "result": {"list": [')
    with pytest.raises(CandleFileError, match="BTCUSDT.json: not valid JSON"):
        load_candles(str(path))


@pytest.mark.parametrize("content, words", [
    ("", "the file is empty"),
    ("\n  \n", "the file is empty"),
    (CSV_HEADER + "\n", "no candles in the file"),
    ("[]", "no candles in the file"),
    ("time,open,high\n", "the header has 3 columns, expected 6"),
])
def test_empty_files_are_errors(tmp_path, content, words):
    path = tmp_path / "BTCUSDT.csv"
    path.write_text(content)
    with pytest.raises(CandleFileError, match=words):
        load_candles(str(path))


def test_a_bad_first_row_is_not_taken_for_a_header(tmp_path):
    data = rows(3)
    data[0][0] = "x1704067200000"
    path = write_csv(tmp_path / "BTCUSDT.csv", data, header=False)
    with pytest.raises(CandleFileError, match=r"BTCUSDT.csv:1: open_time_ms is not a number: 'x1704067200000'"):
        load_candles(str(path))


def test_only_one_minute_candles(tmp_path):
    five = [[str(T0 + i * 5 * M), "100", "101", "99", "100", "1"] for i in range(10)]
    with pytest.raises(CandleFileError, match="the candles are 5 minutes apart: only 1-minute candles"):
        load_candles(str(write_csv(tmp_path / "BTCUSDT.csv", five)))
    (tmp_path / "BTCUSDT.json").write_text(json.dumps({"retCode": 0, "result": {"interval": "15", "list": []}}))
    with pytest.raises(CandleFileError, match="interval 15 candles"):
        load_candles(str(tmp_path / "BTCUSDT.json"))


def test_missing_file(tmp_path):
    with pytest.raises(CandleFileError, match="BTCUSDT.csv: no such file"):
        load_candles(str(tmp_path / "BTCUSDT.csv"))


def test_warm_up(tmp_path):
    need = warmup_sec(100, 15)
    assert need == 90_000 and fmt_span(need) == "25 h"
    short = load_candles(str(write_csv(tmp_path / "BTCUSDT.csv", rows(200))))
    with pytest.raises(CandleFileError) as e:
        check_warmup(short, need, why="100 × 15 m candles")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'BTCUSDT.csv'}: gives 3 h 20 min of candles")
    assert "the replay needs 25 h for warm-up before its first decision (100 × 15 m candles)" in msg
    assert "scalpdesk klines download BTCUSDT" in msg
    check_warmup(short, 3 * 3600)  # 3 h 20 min is enough for 3 h, with 20 min to trade on
    with pytest.raises(CandleFileError):
        check_warmup(short, 200 * 60)  # exactly the file: nothing left to trade on


def test_memory_is_columns_of_doubles(tmp_path):
    s = load_candles(str(write_csv(tmp_path / "BTCUSDT.csv", rows(1000))))
    assert s.nbytes == 1000 * 6 * 8  # a year of 1 m candles: 525,600 × 48 B ≈ 25 MB a symbol
