"""Replay: the real engine over candles on a ManualClock, with outcomes computable by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.candles import CandleSeries
from engine.config import load_settings
from engine.deciders.base import DeciderResult
from engine.models import Action, Decision, MarketSnapshot, new_id
from engine.replay import WARMUP_SEC, ReplayError, plan_replay, run_replay
from engine.venues.candlefeed import CandleFeed
from tests.children import default_sigint

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
START = T0 + WARMUP_SEC  # the replay's first moment: 2026-01-02 01:00
FIRST = START + 60  # its first decision cycle
REPO = Path(__file__).resolve().parents[1]


def series(symbol: str, bars: list[tuple[float, float, float, float]], *, flat_until: float = START,
           price: float = 100.0) -> CandleSeries:
    """Flat candles at `price` from T0 until `flat_until`, then `bars` (open, high, low, close), then
    flat again at the last close for an hour."""
    s = CandleSeries(symbol, Path(f"{symbol}.csv"))

    def add(t: float, o: float, h: float, lo: float, c: float) -> None:
        for col, v in zip((s.open_time, s.open, s.high, s.low, s.close, s.volume), (t, o, h, lo, c, 1.0)):
            col.append(v)

    t = T0
    while t < flat_until:
        add(t, price, price, price, price)
        t += 60
    for o, h, lo, c in bars:
        add(t, o, h, lo, c)
        t += 60
    last = s.close[-1]
    for _ in range(60):
        add(t, last, last, last, last)
        t += 60
    return s


class AtTimes:
    """A decider that proposes given decisions at given cycle times (HOLD otherwise) and
    remembers every snapshot it was shown."""

    name = "scripted"

    def __init__(self, plan: dict[float, list[Decision]] | None = None, every: Decision | None = None) -> None:
        self.plan = plan or {}
        self.every = every
        self.seen: list[MarketSnapshot] = []

    async def decide(self, snapshot: MarketSnapshot) -> DeciderResult:
        self.seen.append(snapshot)
        ds = self.plan.get(snapshot.ts, [self.every] if self.every is not None else [])
        # A fresh decision each cycle, as a real decider makes (its id names its order).
        return DeciderResult(decisions=[d.model_copy(update={"created_at": snapshot.ts, "decision_id": new_id("d-")})
                                        for d in ds])


def long(symbol: str = "BTCUSDT", **over) -> Decision:
    base = dict(symbol=symbol, action=Action.OPEN_LONG, confidence=0.9, tp_pct=1.0, sl_pct=1.0, leverage=5,
                size_pct=10, time_in_trade_limit_sec=1200, cooldown_sec=300, rationale="test")
    base.update(over)
    return Decision(**base)


@pytest.fixture
def settings(tmp_path):
    # A live state directory that a replay must never touch.
    return load_settings(state_dir=tmp_path / "live", mode="approve")


async def replay(settings, s: list[CandleSeries], decider):
    return await run_replay(settings, plan_replay(s), decider)


def rise(n: int, step: float = 0.1, price: float = 100.0) -> list[tuple[float, float, float, float]]:
    """n candles, each opening where the last closed and closing `step` higher."""
    return [(price + step * k, price + step * (k + 1), price + step * k, price + step * (k + 1)) for k in range(n)]


async def test_a_steady_rise_takes_profit_on_the_bar_that_reaches_it(settings):
    # The long fills at the open of the candle of its decision: 100.0 (tick 0.1 swallows the
    # 2 bps slippage). TP = ask 100.005 × 1.01 = 101.0; the rise reaches 101.0 on candle 9.
    s = series("BTCUSDT", rise(30), flat_until=FIRST)
    result = await replay(settings, [s], AtTimes({FIRST: [long()]}))
    (trade,) = [t for t in result.report.trade_list]
    assert trade.reason == "TAKE_PROFIT" and trade.entry == 100.0 and trade.exit == 101.0
    assert trade.opened_at == FIRST and trade.closed_at == FIRST + 9 * 60 + 30  # its high, mid-candle
    assert not (settings.state_dir).exists()


async def test_a_bar_spanning_both_tp_and_sl_takes_the_stop(settings):
    s = series("BTCUSDT", [(100.0, 101.5, 98.5, 100.0)], flat_until=FIRST + 60)
    result = await replay(settings, [s], AtTimes({FIRST: [long()]}))
    (trade,) = result.report.trade_list
    assert trade.reason == "STOP_LOSS"
    assert trade.exit == pytest.approx(99.0 * (1 - 0.0002), abs=0.1)  # the stop's price, slipped, not the low
    assert trade.closed_at == FIRST + 60 + 15


async def test_a_gap_through_the_stop_fills_at_the_price_after_the_gap(settings):
    s = series("BTCUSDT", [(97.0, 97.5, 96.5, 97.2)], flat_until=FIRST + 60)
    result = await replay(settings, [s], AtTimes({FIRST: [long()]}))
    (trade,) = result.report.trade_list
    assert trade.reason == "STOP_LOSS" and trade.exit == pytest.approx(97.0 * (1 - 0.0002), abs=0.1)


async def test_a_time_exit_fires_at_its_limit_in_market_time(settings):
    s = series("BTCUSDT", [], flat_until=START + 4 * 3600)
    result = await replay(settings, [s], AtTimes({FIRST: [long(time_in_trade_limit_sec=1200)]}))
    (trade,) = result.report.trade_list
    assert trade.reason == "TIME_EXIT" and trade.closed_at == FIRST + 1200 and trade.duration_min == 20


async def test_a_cooldown_blocks_the_next_entry_for_its_market_time_length(settings, tmp_path):
    s = series("BTCUSDT", [], flat_until=START + 4 * 3600)
    settings = settings.model_copy(update={"adaptive_cooldown": False})  # the fees make each close a loss
    result = await run_replay(settings, plan_replay([s]), AtTimes(every=long(cooldown_sec=300)),
                              keep_state=tmp_path / "kept")
    first, second = result.report.trade_list[:2]
    assert first.reason == "TIME_EXIT" and first.closed_at == FIRST + 1200
    assert second.opened_at == first.closed_at + 300  # not a cycle earlier
    from engine.store import StateStore

    with StateStore(tmp_path / "kept") as kept:
        blocked = [r for r in kept.decisions(limit=10_000) if r.status == "BLOCKED"]
    when = sorted(r.recorded_at for r in blocked if "COOLDOWN" in (r.review.reasons if r.review else []))
    # every cycle inside it, from the one at the very moment of the close (exits run first)
    assert [w for w in when if w < second.opened_at] == [first.closed_at + 60 * k for k in range(5)]


async def test_the_decider_never_sees_a_candle_after_the_decision_time(settings):
    """Poisoning every candle after a moment changes nothing the decider saw up to it."""
    cut = START + 3 * 3600
    clean = series("BTCUSDT", rise(600, step=0.01), flat_until=START)
    poisoned = series("BTCUSDT", rise(600, step=0.01), flat_until=START)
    for i, t in enumerate(poisoned.open_time):
        if t >= cut:
            for col in (poisoned.open, poisoned.high, poisoned.low, poisoned.close):
                col[i] = 1_000_000.0
    a, b = AtTimes(every=long(tp_pct=3.0, sl_pct=2.0)), AtTimes(every=long(tp_pct=3.0, sl_pct=2.0))
    ra = await replay(settings, [clean], a)
    rb = await replay(settings, [poisoned], b)
    seen_a = [x.model_dump_json() for x in a.seen if x.ts <= cut]
    seen_b = [x.model_dump_json() for x in b.seen if x.ts <= cut]
    assert len(seen_a) > 100 and seen_a == seen_b
    assert [t for t in ra.report.trade_list if t.closed_at <= cut] == [t for t in rb.report.trade_list if t.closed_at <= cut]


def test_the_candle_feed_shows_only_closed_candles():
    s = series("BTCUSDT", rise(10), flat_until=FIRST)
    feed = CandleFeed([s], FIRST + 90)  # mid-way through candle 1
    assert feed.price("BTCUSDT") == 100.1  # candle 0's close
    assert feed.fill_price("BTCUSDT") == 100.2  # the next candle's open: the next price there is
    k = feed.klines("BTCUSDT", 1, 3)
    assert [x.start for x in k] == [FIRST - 60, FIRST, FIRST + 60] and k[-1].close == 100.1 and k[-1].high == 100.1
    k5 = feed.klines("BTCUSDT", 5, 2)
    assert k5[-1].start == START and k5[-1].close == 100.1  # the forming 5m candle: the newest close only
    assert k5[0].start == START - 300 and k5[0].close == 100.0


def test_a_file_too_short_for_the_warm_up_is_refused_with_the_numbers():
    from engine.candles import CandleFileError

    s = series("BTCUSDT", [], flat_until=T0 + 3600)  # an hour, and the hour of flat candles after it
    with pytest.raises(CandleFileError) as err:
        plan_replay([s])
    assert "gives 2 h of candles" in str(err.value) and "needs 25 h for warm-up" in str(err.value)
    with pytest.raises(ReplayError, match="no candle files"):
        plan_replay([])


# --- the command ------------------------------------------------------------------------


def write_csv(path: Path, s: CandleSeries) -> Path:
    with open(path, "w") as f:
        f.write("open_time_ms,open,high,low,close,volume\n")
        for i in range(len(s)):
            f.write(f"{int(s.open_time[i] * 1000)},{s.open[i]},{s.high[i]},{s.low[i]},{s.close[i]},{s.volume[i]}\n")
    return path


@pytest.fixture
def files(tmp_path):
    from tests.sim_candles import sim_series

    out = []
    for s in sim_series(["BTCUSDT", "ETHUSDT"], days=1.5, seed=3):
        out.append(str(write_csv(tmp_path / f"{s.symbol}.csv", s)))
    return out


def cli(*argv: str) -> int:
    from app.cli import main

    return main(list(argv))


def test_replay_json_is_one_object_with_the_figures_and_the_text_agrees(files, capsys, tmp_path):
    assert cli("replay", "--klines", *files, "--json", "--set", "cooldown_minutes=10") == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert out.count("\n") == 1
    for key in ("trades", "trades_per_day", "win_rate_pct", "avg_duration_min", "median_duration_min",
                "avg_roi_pct", "max_drawdown_pct", "pnl", "pnl_pct", "fees", "expectancy", "profit_factor",
                "by_reason", "by_symbol", "trade_list", "cycles", "candles", "gaps"):
        assert key in data, key
    assert data["candles"] == 2 * (int(1.5 * 1440)) and data["gaps"] == [] and data["cycles"] > 600
    assert data["trades"] == len(data["trade_list"]) > 0
    assert cli("replay", "--klines", *files, "--set", "cooldown_minutes=10") == 0
    text = capsys.readouterr().out
    assert f"trades                 {data['trades']:,}" in text
    assert f"{data['cycles']:,} decision cycles" in text


def test_the_same_replay_twice_gives_byte_identical_reports(files, capsys):
    assert cli("replay", "--klines", *files, "--json") == 0
    first = capsys.readouterr().out
    assert cli("replay", "--klines", *files, "--json") == 0
    assert capsys.readouterr().out == first


def test_an_unknown_setting_in_set_is_refused_before_anything_runs(files, capsys):
    assert cli("replay", "--klines", *files, "--set", "no_such_thing=3") == 2
    err = capsys.readouterr().err
    assert "unknown setting 'no_such_thing'" in err and err.count("\n") == 1
    assert cli("replay", "--klines", *files, "--set", "cooldown_minutes=-4") == 2
    assert "COOLDOWN_MINUTES" in capsys.readouterr().err


def test_a_malformed_candle_file_stops_with_its_line(tmp_path, capsys):
    bad = tmp_path / "BTCUSDT.csv"
    bad.write_text("open_time_ms,open,high,low,close,volume\n1767225600000,1,2,0.5,1.5,3\n1767225660000,1,x,1,1,1\n")
    assert cli("replay", "--klines", str(bad)) == 2
    assert f"{bad}:3:" in capsys.readouterr().err


def test_a_grid_ranks_every_combination_by_expectancy_and_warns(files, capsys):
    assert cli("replay", "--klines", *files, "--grid", "cooldown_minutes=5,15", "--grid", "sl_atr_mult=1,2",
               "--workers", "2") == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "cooldown_minutes=" in line]
    assert len(rows) == 4 and rows[0].startswith("best ▶")
    exp = [float(r.split()[2 if r.startswith("best") else 0].replace(",", "")) for r in rows]
    assert exp == sorted(exp, reverse=True)
    assert "the best of 4 combinations is optimistic" in out


@pytest.mark.slow
def test_ctrl_c_stops_a_replay_and_leaves_the_live_state_untouched(tmp_path):
    from tests.sim_candles import sim_series

    specs = [str(write_csv(tmp_path / f"{s.symbol}.csv", s)) for s in sim_series(["BTCUSDT"], days=20, seed=1)]
    live, tmp = tmp_path / "live", tmp_path / "tmp"
    live.mkdir()
    (live / "marker").write_text("mine")
    tmp.mkdir()
    env = {**os.environ, "SCALPDESK_STATE_DIR": str(live), "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "replay", "--klines", *specs], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp.glob("scalpdesk-replay-*")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in live.iterdir()) == ["marker"]
    assert list(tmp.iterdir()) == []  # the throwaway state went too


# --- the AI decider in a replay ---------------------------------------------------------------


@pytest.fixture
def fake_ai(monkeypatch, tmp_path):
    from tests.fakes.openai_server import Answer, FakeOpenAI, decision, decisions_json

    def answer(req):
        # Long BTC on about a third of the prompts, HOLD otherwise: a function of the prompt alone.
        import hashlib

        up = hashlib.sha256(req.user.encode()).digest()[0] % 3 == 0
        btc = decision("BTCUSDT", "OPEN_LONG", 0.8) if up else decision("BTCUSDT")
        return Answer(content=decisions_json(btc, decision("ETHUSDT")))

    with FakeOpenAI() as fake:
        fake.default = answer
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-real")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        yield fake


def test_the_ai_replay_says_its_cost_first_and_needs_max_cost(files, fake_ai, capsys):
    assert cli("replay", "--klines", *files, "--decider", "openai") == 2
    err = capsys.readouterr().err
    assert "AI decider gpt-4.1-mini:" in err and "requests of about" in err
    assert "give --max-cost USD to accept it" in err
    assert cli("replay", "--klines", *files, "--decider", "openai", "--max-cost", "0.0001") == 2
    assert "is above --max-cost 0.00 USD; refused" in capsys.readouterr().err
    assert fake_ai.requests == []  # nothing asked before the run is accepted


def test_a_second_ai_replay_is_answered_from_the_cache_and_trades_the_same(files, fake_ai, capsys):
    assert cli("replay", "--klines", *files, "--decider", "openai", "--max-cost", "100", "--json") == 0
    first = json.loads(capsys.readouterr().out)
    asked = len(fake_ai.requests)
    assert asked == first["cycles"] == first["ai"]["requests"] and first["ai"]["cache_hits"] == 0
    assert first["trades"] > 0 and first["ai"]["cost_usd"] > 0
    assert cli("replay", "--klines", *files, "--decider", "openai", "--max-cost", "100", "--json") == 0
    second = json.loads(capsys.readouterr().out)
    assert len(fake_ai.requests) == asked  # not one more request
    assert second["ai"]["requests"] == 0 and second["ai"]["cache_hits"] == asked and second["ai"]["cost_usd"] == 0
    assert second["trade_list"] == first["trade_list"]
