"""SimFeed: a deterministic synthetic market whose klines agree with its ticks."""

from __future__ import annotations

import random
import statistics
from dataclasses import replace

import pytest

import engine.venues.simfeed as simfeed
from engine import marketstats
from engine.clock import ManualClock
from engine.models import Kline
from engine.venues.simfeed import MAX_CANDLES, TICK_BUFFER_SEC, SimFeed, minute_candles

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def test_same_seed_same_market_other_seed_other_market() -> None:
    a, b, c = (SimFeed(SYMBOLS, seed=s, start=T0) for s in (7, 7, 8))
    for f in (a, b, c):
        f.advance_to(T0 + 1800)
    for sym in SYMBOLS:
        assert a.klines(sym, 1, 500) == b.klines(sym, 1, 500)
        assert a.path_since(sym, T0) == b.path_since(sym, T0)
        assert a.klines(sym, 1, 500) != c.klines(sym, 1, 500)


def test_the_global_generator_and_the_wall_clock_play_no_part() -> None:
    a, b = SimFeed(["BTCUSDT"], seed=5, start=T0), SimFeed(["BTCUSDT"], seed=5, start=T0)
    for i in range(1, 31):
        random.seed(i)  # whatever else the process does with the global generator
        random.random()
        a.advance_to(T0 + 120 * i)
    b.advance_to(T0 + 3600)
    assert a.path_since("BTCUSDT", T0) == b.path_since("BTCUSDT", T0)


def test_a_symbols_market_does_not_depend_on_the_other_symbols() -> None:
    alone = SimFeed(["ETHUSDT"], seed=3, start=T0)
    together = SimFeed(SYMBOLS, seed=3, start=T0)
    assert alone.klines("ETHUSDT", 1, 300) == together.klines("ETHUSDT", 1, 300)


def test_realistic_prices_and_a_default_for_other_symbols() -> None:
    feed = SimFeed([*SYMBOLS, "dogeusdt"], seed=1, start=T0)
    assert 85_000 < feed.price("BTCUSDT") < 110_000
    assert 3_000 < feed.price("ETHUSDT") < 3_800
    assert 200 < feed.price("SOLUSDT") < 280
    assert 80 < feed.price("DOGEUSDT") < 120
    with pytest.raises(KeyError):
        feed.price("XRPUSDT")


def test_history_is_there_at_start() -> None:
    feed = SimFeed(SYMBOLS, seed=1, start=T0)
    for sym in SYMBOLS:
        assert len(feed.klines(sym, 1, 1000)) >= 200
        assert len(feed.klines(sym, 5, 1000)) >= 60
        assert len(feed.klines(sym, 15, 1000)) >= 20
    assert feed.now == T0


@pytest.mark.parametrize("interval", [1, 5, 15])
def test_kline_starts_are_aligned_and_contiguous(interval: int) -> None:
    feed = SimFeed(["BTCUSDT"], seed=2, start=T0 + 37)  # start off an interval boundary
    k = feed.klines("BTCUSDT", interval, 50)
    span = interval * 60
    assert all(c.start % span == 0 for c in k)
    assert [b.start - a.start for a, b in zip(k, k[1:])] == [span] * (len(k) - 1)
    assert k[-1].start <= feed.now < k[-1].start + span  # the newest is the unfinished one
    assert all(c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close) for c in k)


def test_one_minute_candles_agree_with_the_ticks() -> None:
    feed = SimFeed(["SOLUSDT"], seed=4, start=T0)
    feed.advance_to(T0 + 3600 + 30)
    ticks = feed.path_since("SOLUSDT", T0)
    for c in feed.klines("SOLUSDT", 1, 61)[1:]:  # the first may have begun before T0
        prices = [p for t, p in ticks if c.start <= t < c.start + 60]
        assert (c.open, c.high, c.low, c.close) == (prices[0], max(prices), min(prices), prices[-1])


@pytest.mark.parametrize("interval", [5, 15])
def test_longer_candles_aggregate_the_one_minute_candles(interval: int) -> None:
    feed = SimFeed(["ETHUSDT"], seed=5, start=T0)
    feed.advance_to(T0 + 2 * 3600 + 7 * 60 + 13)  # end inside an unfinished candle
    ones = feed.klines("ETHUSDT", 1, 1000)
    span = interval * 60
    for c in feed.klines("ETHUSDT", interval, 8):  # the last one is unfinished
        parts = [m for m in ones if c.start <= m.start < c.start + span]
        assert parts and parts[0].start == c.start
        assert c.open == parts[0].open
        assert c.close == parts[-1].close
        assert c.high == max(m.high for m in parts)
        assert c.low == min(m.low for m in parts)
        assert c.volume == pytest.approx(sum(m.volume for m in parts))


def _largest_minute(feed: SimFeed, symbol: str, days: int) -> float:
    """The largest 1-minute close-to-close move over the next `days` days, as a fraction."""
    candles = minute_candles(feed, feed.now + days * 86_400)[symbol]
    return marketstats.largest_move(marketstats.returns(candles))


def test_violent_moves_happen_within_a_simulated_week() -> None:
    """Jumps of several percent within a minute (so a crash guard fires now and then):
    BTC's 1-minute sigma is 0.11 %; its jumps are 3-6 %."""
    feed = SimFeed(["BTCUSDT"], seed=11, start=T0, history_sec=0)
    assert _largest_minute(feed, "BTCUSDT", 7) > 0.025


def test_without_jumps_no_such_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counterpart of the test above: the violent moves are the jumps, not bad luck."""
    calm = {sym: replace(p, jumps_per_day=0.0) for sym, p in simfeed.PROFILES.items()}
    monkeypatch.setattr(simfeed, "PROFILES", calm)
    feed = SimFeed(["BTCUSDT"], seed=11, start=T0, history_sec=0)
    assert _largest_minute(feed, "BTCUSDT", 7) < 0.015


def test_weekends_are_quieter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Saturdays and Sundays (UTC) move less. The days-long swings and the jumps are
    switched off here: over two weeks they would blur what this test looks at."""
    steady = {sym: replace(p, swing=0.0, jumps_per_day=0.0) for sym, p in simfeed.PROFILES.items()}
    monkeypatch.setattr(simfeed, "PROFILES", steady)
    feed = SimFeed(["BTCUSDT"], seed=3, start=T0, history_sec=0)  # T0 is a Thursday
    candles = minute_candles(feed, T0 + 14 * 86_400)["BTCUSDT"]
    moves: dict[bool, list[float]] = {True: [], False: []}
    for c, r in zip(candles[1:], marketstats.returns(candles)):
        moves[(int(c[0]) // 86_400 + 3) % 7 >= 5].append(abs(r))  # 1970-01-01 was a Thursday
    assert statistics.fmean(moves[True]) < 0.8 * statistics.fmean(moves[False])


def _by_regime(symbol: str, seed: int, minutes: int) -> dict[str, list[Kline]]:
    """Each finished 1-minute candle filed under the regime it was made in."""
    feed = SimFeed([symbol], seed=seed, start=T0, history_sec=0)
    out: dict[str, list[Kline]] = {"calm": [], "volatile": []}
    for i in range(1, minutes):
        feed.advance_to(T0 + 60 * i)  # the first tick of minute i: its regime is drawn
        regime = feed.regime(symbol)
        feed.advance_to(T0 + 60 * i + 59)
        out[regime].append(feed.klines(symbol, 1, 1)[0])
    return out


def test_regimes_switch_and_volatile_is_wilder() -> None:
    by = _by_regime("BTCUSDT", seed=6, minutes=3 * 1440)
    assert len(by["calm"]) > 300 and len(by["volatile"]) > 300
    ranges = {r: statistics.median((k.high - k.low) / k.open for k in ks) for r, ks in by.items()}
    assert ranges["volatile"] > 1.8 * ranges["calm"]


def test_volume_is_higher_when_volatile() -> None:
    by = _by_regime("ETHUSDT", seed=6, minutes=3 * 1440)
    volumes = {r: statistics.median(k.volume for k in ks) for r, ks in by.items()}
    assert volumes["volatile"] > 1.8 * volumes["calm"]


def test_inject_move_forces_a_move() -> None:
    feed = SimFeed(["BTCUSDT"], seed=1, start=T0)
    before = feed.price("BTCUSDT")
    feed.inject_move("BTCUSDT", -8.0, over_sec=120)
    feed.advance_to(T0 + 120)
    assert feed.price("BTCUSDT") / before - 1 == pytest.approx(-0.08, abs=0.01)


def test_inject_move_can_start_later() -> None:
    feed = SimFeed(["BTCUSDT"], seed=1, start=T0)
    feed.inject_move("BTCUSDT", 10.0, over_sec=60, at=T0 + 600)
    feed.advance_to(T0 + 599)
    before = feed.price("BTCUSDT")
    feed.advance_to(T0 + 660)
    assert feed.price("BTCUSDT") / before - 1 == pytest.approx(0.10, abs=0.01)


def test_advance_to_the_past_changes_nothing() -> None:
    feed = SimFeed(["BTCUSDT"], seed=1, start=T0)
    feed.advance_to(T0 + 100)
    k = feed.klines("BTCUSDT", 1, 10)
    feed.advance_to(T0 + 50)
    assert feed.now == T0 + 100  # time never goes back
    assert feed.klines("BTCUSDT", 1, 10) == k
    feed.advance_to(T0 + 100)
    assert feed.klines("BTCUSDT", 1, 10) == k


def test_advancing_in_steps_or_at_once_gives_the_same_market() -> None:
    steps, once = SimFeed(["SOLUSDT"], seed=9, start=T0), SimFeed(["SOLUSDT"], seed=9, start=T0)
    for i in range(1, 61):
        steps.advance_to(T0 + 30.5 * i)
    once.advance_to(T0 + 30.5 * 60)
    assert steps.klines("SOLUSDT", 5, 100) == once.klines("SOLUSDT", 5, 100)


def test_sync_maps_clock_time_with_the_speed_factor() -> None:
    clock = ManualClock(5_000.0)  # the clock need not share the feed's epoch
    feed = SimFeed(["BTCUSDT"], seed=1, start=T0, speed=10)
    assert feed.sync(clock.now()) == T0  # the first sync anchors the clock
    clock.advance(60)
    assert feed.sync(clock.now()) == T0 + 600
    assert feed.clock_time_at(T0 + 600) == clock.now()
    assert len(feed.path_since("BTCUSDT", T0)) == 600


def test_path_since_takes_a_side_and_ticks_are_points() -> None:
    feed = SimFeed(["BTCUSDT"], seed=1, start=T0)
    feed.advance_to(T0 + 30)
    path = feed.path_since("BTCUSDT", T0)
    assert len(path) == 30
    assert feed.path_since("BTCUSDT", T0, side="Buy") == path == feed.path_since("BTCUSDT", T0, side="Sell")


def test_memory_stays_bounded_over_a_long_run() -> None:
    feed = SimFeed(["BTCUSDT"], seed=1, start=T0, history_sec=0)
    feed.advance_to(T0 + 20 * 3600)  # 1200 minutes, 72000 ticks
    assert len(feed.klines("BTCUSDT", 1, 10**6)) == MAX_CANDLES
    assert len(feed.path_since("BTCUSDT", 0)) == TICK_BUFFER_SEC


def test_ticker_spreads_around_last() -> None:
    feed = SimFeed(SYMBOLS, seed=1, start=T0)
    for sym in SYMBOLS:
        tk = feed.ticker(sym)
        assert tk.symbol == sym and tk.last == feed.price(sym)
        assert tk.bid < tk.last < tk.ask
        assert (tk.ask - tk.bid) / tk.last < 0.001
        assert tk.mark == pytest.approx(tk.last, rel=0.002)
        assert abs(tk.funding_rate) <= 0.00075


def test_only_simulated_intervals() -> None:
    feed = SimFeed(["BTCUSDT"], seed=1, start=T0)
    with pytest.raises(ValueError):
        feed.klines("BTCUSDT", 60, 10)


def test_an_hour_jump_completes() -> None:
    clock = ManualClock(T0)
    feed = SimFeed(SYMBOLS, seed=1, start=T0)
    feed.sync(clock.now())
    clock.advance(3600)
    assert feed.sync(clock.now()) == T0 + 3600
