"""`scalpdesk klines download` through real pybit against the loopback fake: pages, resume,
holes, retries, pacing, the unfinished candle, bad arguments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import main
from app.klines_cmd import Download, DownloadError, download
from engine.candles import CSV_HEADER, load_candles
from engine.venues.bybit_http import BybitClient
from tests.children import default_sigint
from tests.fakes.bybit_exchange import history_candle
from tests.fakes.bybit_server import BybitFakeServer

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, ms
M = 60_000
KLINE = "/v5/market/kline"


@pytest.fixture
def srv(monkeypatch):
    with BybitFakeServer() as s:
        monkeypatch.setenv("BYBIT_BASE_URL", s.url)
        yield s


def dl(out: Path, *extra: str, symbol: str = "BTCUSDT", start: str = "2024-01-01", end: str = "2024-01-03") -> int:
    return main(["klines", "download", symbol, "--from", start, "--to", end, "--out", str(out), "--rate", "50", *extra])


def rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == CSV_HEADER
    return [ln.split(",") for ln in lines[1:]]


def test_a_multi_page_download(srv, tmp_path, capsys):
    out = tmp_path / "BTCUSDT.csv"
    assert dl(out) == 0
    data = rows(out)
    assert len(data) == 2 * 1440 and [int(r[0]) for r in data] == [T0 + i * M for i in range(2880)]
    assert data[1500] == history_candle("BTCUSDT", T0 + 1500 * M)[:6]  # what Bybit sent, as it sent it
    pages = srv.sent(KLINE)
    assert len(pages) == 3 and {p["limit"] for p in pages} == {"1000"} and {p["interval"] for p in pages} == {"1"}
    assert [(int(p["start"]), int(p["end"])) for p in pages] == [
        (T0, T0 + 999 * M), (T0 + 1000 * M, T0 + 1999 * M), (T0 + 2000 * M, T0 + 2879 * M)]
    s = load_candles(str(out))
    assert len(s) == 2880 and s.gaps == []
    cap = capsys.readouterr()
    assert "2,880 candles written" in cap.out and "no gaps" in cap.out
    assert "BTCUSDT: fetching 1-minute candles" in cap.err  # progress on stderr


def test_a_hole_is_left_and_reported(srv, tmp_path, capsys):
    srv.exchange.kline_holes.append((T0 + 1990 * M, T0 + 2095 * M))  # across a page boundary
    out = tmp_path / "BTCUSDT.csv"
    assert dl(out) == 0
    s = load_candles(str(out))
    assert len(s) == 2880 - 105 and len(s.gaps) == 1 and s.gaps[0].missing_bars == 105
    assert s.gaps[0].start == (T0 + 1990 * M) / 1000
    out_text = capsys.readouterr().out
    assert "1 gap (105 missing candles)" in out_text and "2024-01-02 09:10 – 2024-01-02 10:55 UTC" in out_text


def test_an_interrupted_download_resumes_without_duplicates(srv, tmp_path, capsys):
    out = tmp_path / "BTCUSDT.csv"
    client = BybitClient("live", None, base_url=srv.url)

    def ctrl_c_after_first_page(d: Download) -> None:
        if d.pages == 1:
            raise KeyboardInterrupt

    record = Download("BTCUSDT", out, T0, T0 + 2880 * M)
    with pytest.raises(KeyboardInterrupt):
        download(client, "BTCUSDT", T0, T0 + 2880 * M, out, rate=50, progress=ctrl_c_after_first_page, record=record)
    assert record.last_ms == T0 + 999 * M and len(load_candles(str(out))) == 1000  # whole pages: a valid file
    before = len(srv.sent(KLINE))
    assert dl(out) == 0
    again = srv.sent(KLINE)[before:]
    assert int(again[0]["start"]) == T0 + 1000 * M  # continued after the last row
    times = [int(r[0]) for r in rows(out)]
    assert times == [T0 + i * M for i in range(2880)]  # no duplicates, no gaps
    assert "continued after its last row (2024-01-01 16:39 UTC)" in capsys.readouterr().out
    # run once more: nothing left to fetch, nothing changes
    text = out.read_text()
    assert dl(out) == 0 and out.read_text() == text


def test_a_torn_last_line_is_dropped_before_resuming(srv, tmp_path, capsys):
    out = tmp_path / "BTCUSDT.csv"
    assert dl(out, end="2024-01-01T10:00") == 0
    with open(out, "a") as f:
        f.write(f"{T0 + 600 * M},97447.7,9754")  # a kill in the middle of an append
    assert dl(out) == 0
    assert [int(r[0]) for r in rows(out)] == [T0 + i * M for i in range(2880)]
    assert "dropped an unfinished last line" in capsys.readouterr().err


def test_network_errors_and_rate_limits_are_retried(srv, tmp_path, capsys):
    srv.exchange.fail(KLINE, "reset", times=2)
    srv.exchange.fail(KLINE, "retcode", ret_code=10006, ret_msg="Too many visits!", reset_in_ms=200)
    out = tmp_path / "BTCUSDT.csv"
    assert dl(out) == 0
    assert len(rows(out)) == 2880
    err = capsys.readouterr().err
    assert err.count("retrying in") == 3 and "Too many visits! (code 10006)" in err


def test_giving_up_leaves_whole_pages_to_resume(srv, tmp_path, capsys):
    out = tmp_path / "BTCUSDT.csv"
    seen = []

    def after_first(phase, path, params):
        if phase == "received" and path == KLINE:
            seen.append(1)
            if len(seen) == 2:  # the second page's first try (faults are taken after "received")
                srv.exchange.fail(KLINE, "reset", times=5)

    srv.exchange.observers.append(after_first)
    assert dl(out, "--attempts", "3") == 1
    err = capsys.readouterr().err
    assert "gave up after 3 attempts" in err and "run the same command again to continue" in err
    assert len(load_candles(str(out))) == 1000
    srv.exchange.observers.clear()
    srv.exchange.faults.clear()
    assert dl(out) == 0 and len(rows(out)) == 2880


def test_requests_are_paced(srv, tmp_path):
    out = tmp_path / "BTCUSDT.csv"
    assert main(["klines", "download", "BTCUSDT", "--from", "2024-01-01", "--to", "2024-01-03", "--out", str(out),
                 "--rate", "10"]) == 0
    stamps = [t for t, _, _, _ in srv.exchange.requests]
    assert len(stamps) == 4  # server time + 3 pages
    # 10 a second: three gaps of 0.1 s. Measured where the server reads them, one gap can
    # shrink when the request before it was held up on the way; the span cannot (unpaced,
    # the four take a few milliseconds on loopback).
    assert stamps[-1] - stamps[0] >= 0.25


def test_the_unfinished_candle_is_never_written(srv, tmp_path):
    out = tmp_path / "BTCUSDT.csv"
    now_ms = int(time.time() * 1000)
    start = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now_ms / 1000 - 1800))
    assert main(["klines", "download", "BTCUSDT", "--from", start, "--out", str(out), "--rate", "50"]) == 0
    last = int(rows(out)[-1][0])
    after_ms = int(time.time() * 1000)
    assert last + M <= after_ms  # closed when written
    assert last >= now_ms - now_ms % M - 2 * M  # and nothing closed was left out (a minute may turn meanwhile)


@pytest.mark.parametrize("args, words, code", [
    (["BTCUSDT", "--from", "2024-01-03", "--to", "2024-01-01"], "--from 2024-01-03 is not before --to 2024-01-01", 2),
    (["BTCUSDT", "--from", "2024-13-01", "--to", "2024-01-01"], "--from '2024-13-01' is not a date", 2),
    (["BTCUSDT", "--from", "2999-01-01", "--to", "2999-02-01"], "is in the future", 2),
    (["BTC/USDT", "--from", "2024-01-01", "--to", "2024-01-02"], "is not a symbol like BTCUSDT", 2),
    (["FOOUSDT", "--from", "2024-01-01", "--to", "2024-01-02"],
     "Bybit refused FOOUSDT candles from 2024-01-01 00:00 UTC: params error: symbol invalid FOOUSDT (code 10001)", 2),
    (["BTCUSDT", "--from", "2024-01-01", "--to", "2024-01-02", "--rate", "0"], "--rate must be above 0", 2),
    (["BTCUSDT", "--from", "2024-01-01"], "the following arguments are required: --out", 2),
])
def test_bad_arguments(srv, tmp_path, capsys, args, words, code):
    out = tmp_path / "candles.csv"
    argv = ["klines", "download", *args] + (["--out", str(out)] if "--rate" in args or "--to" in args else [])
    assert main(argv) == code
    err = capsys.readouterr().err
    assert words in err, err
    assert not out.exists()


def test_out_named_for_another_symbol_is_refused(srv, tmp_path, capsys):
    assert dl(tmp_path / "ETHUSDT.csv") == 2
    assert "named for ETHUSDT, not BTCUSDT" in capsys.readouterr().err


def test_a_file_that_is_not_ours_is_not_appended_to(srv, tmp_path, capsys):
    out = tmp_path / "BTCUSDT.csv"
    out.write_text(CSV_HEADER + "\n" + f"{T0},1,0.5,1,1,1\n")  # high below open
    assert dl(out) == 1
    assert "cannot continue" in capsys.readouterr().err and out.read_text().count("\n") == 2
    client = BybitClient("live", None, base_url=srv.url)
    with pytest.raises(DownloadError, match="high 0.5 is below"):
        download(client, "BTCUSDT", T0, T0 + 10 * M, out)


def test_info_says_what_a_file_gives(srv, tmp_path, capsys):
    out = tmp_path / "BTCUSDT.csv"
    assert dl(out, end="2024-01-01T20:00") == 0
    capsys.readouterr()
    assert main(["klines", "info", str(out), str(tmp_path / "nothing.csv:ETHUSDT")]) == 1
    text = capsys.readouterr().out
    assert "1,200 candles 2024-01-01 00:00 – 2024-01-01 20:00 UTC (20 h)" in text
    assert "this file gives 20 h: TOO SHORT" in text and "BAD  " in text and "no such file" in text


@pytest.mark.slow
def test_ctrl_c_leaves_a_valid_file_that_resumes(srv, tmp_path):
    out = tmp_path / "BTCUSDT.csv"
    cmd = [sys.executable, "-m", "app.cli", "klines", "download", "BTCUSDT", "--from", "2024-01-01", "--to",
           "2024-01-04T11:20", "--out", str(out), "--rate", "3"]  # 5 pages, a third of a second apart
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BYBIT_BASE_URL": srv.url}
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err and "run the same command again to continue" in err
    part = load_candles(str(out))
    assert 0 < len(part) < 5000 and len(part) % 1000 == 0
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [int(r[0]) for r in rows(out)] == [T0 + i * M for i in range(5000)]
