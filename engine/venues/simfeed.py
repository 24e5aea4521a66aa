"""SimFeed: a seeded synthetic market for the sim and paper venues, demos and tests.

One tick per simulated second per symbol: a log-price random walk whose volatility
follows a two-state Markov chain (calm / volatile), with slowly changing trends
(so EMA deciders see trends), a weak pull back to the symbol's base price (so a
week-long demo stays near realistic prices) and rare violent moves (a jump or a fast
trend of several percent) so a crash guard fires now and then. Ticks are folded
into 1, 5 and 15 minute klines as they are made.

Everything comes from one random.Random per symbol seeded from (seed, symbol), never
the global generator or the wall clock, so a seed always gives the same market.
Memory is bounded (deques) whatever the run length, and a clock jump of an hour costs
a few tens of milliseconds.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from itertools import islice

from engine.models import Kline, Ticker

INTERVALS = (1, 5, 15)  # kline intervals kept, in minutes
MAX_CANDLES = 1000  # per symbol and interval: Bybit's get_kline limit
TICK_BUFFER_SEC = 2 * 3600  # (time, price) ticks kept for TP/SL triggering

# Regime chain, per second: calm lasts ~40 min on average, volatile ~10 min.
P_TO_VOLATILE = 1 / 2400
P_TO_CALM = 1 / 600
VOLATILE_SIGMA = 2.5  # volatile regime multiplies the per-second volatility ...
VOLATILE_VOLUME = 2.5  # ... and the traded volume
# Violent moves: about three per symbol per simulated day.
P_VIOLENT = 3 / 86_400
# Mild trends: a drift redrawn every 15-60 min; 3e-6/s is ~0.5 % over 30 min,
# about the noise over that horizon, so EMAs cross with the trend.
TREND_SIGMA = 3e-6
# Pull of the log price towards the base price (time constant one day): keeps a
# long demo within a few percent of realistic prices without hiding the trends.
MEAN_REVERSION = 1 / 86_400


@dataclass(frozen=True)
class SymbolProfile:
    """What makes one symbol's market look like itself."""

    base_price: float
    sigma: float  # calm per-second standard deviation of the log return
    volume: float  # mean base-coin volume per second in the calm regime
    spread_bps: float  # calm bid/ask spread in basis points of the price


PROFILES: dict[str, SymbolProfile] = {
    # BTC: 1e-4/s is ~0.1 % per minute and ~3 % per day, like the real thing.
    "BTCUSDT": SymbolProfile(97_000.0, 1.0e-4, 1.5, 0.2),
    "ETHUSDT": SymbolProfile(3_400.0, 1.3e-4, 25.0, 0.3),
    "SOLUSDT": SymbolProfile(240.0, 1.7e-4, 200.0, 0.5),
}
DEFAULT_PROFILE = SymbolProfile(100.0, 1.5e-4, 100.0, 1.0)


@dataclass
class _Move:
    """A forced drift: `drift` added to the log return each second in [start, end)."""

    start: int
    end: int
    drift: float


@dataclass
class _SymbolState:
    profile: SymbolProfile
    rng: random.Random
    t: int  # time of the newest tick
    logp: float
    volatile: bool = False
    trend: float = 0.0
    trend_left: int = 0
    moves: list[_Move] = field(default_factory=list)
    ticks: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=TICK_BUFFER_SEC))
    # Candles as mutable lists [start, open, high, low, close, volume]. The last 1m
    # candle is the live one; it is folded into 5m/15m when its minute is over.
    candles: dict[int, deque[list[float]]] = field(
        default_factory=lambda: {m: deque(maxlen=MAX_CANDLES) for m in INTERVALS}
    )


class SimFeed:
    """A deterministic synthetic market with 1 s ticks and 1/5/15 min klines.

    `start` is the feed time (epoch seconds) the market is at when created; the
    `history_sec` before it are generated at once so klines are there immediately
    (5 h gives 300 1m, 60 5m and 20 15m candles). `speed` maps clock time to feed
    time in `sync`: 10 makes the market move ten times faster than the clock.
    """

    def __init__(
        self,
        symbols: list[str],
        *,
        seed: int = 0,
        start: float = 1_767_225_600.0,
        history_sec: int = 5 * 3600,
        speed: float = 1.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.seed = seed
        self.start = float(start)
        self.speed = float(speed)
        self._first_clock: float | None = None
        self._now = self.start
        self._lock = threading.RLock()
        self._states: dict[str, _SymbolState] = {}
        t0 = int(math.floor(self.start)) - int(history_sec)
        for symbol in dict.fromkeys(s.upper() for s in symbols):
            self._states[symbol] = self._new_state(symbol, t0)
        for st in self._states.values():  # the history up to `start`
            self._run(st, int(math.floor(self.start)))

    def _new_state(self, symbol: str, t0: int) -> _SymbolState:
        profile = PROFILES.get(symbol, DEFAULT_PROFILE)
        # A str seed is hashed with SHA-512 by random.Random: stable across runs,
        # unlike hash(), and independent of which other symbols the feed has.
        rng = random.Random(f"{self.seed}:{symbol}")
        logp = math.log(profile.base_price) + rng.gauss(0.0, 0.005)
        st = _SymbolState(profile=profile, rng=rng, t=t0, logp=logp)
        p = math.exp(logp)
        st.ticks.append((float(t0), p))
        st.candles[1].append([float(t0 - t0 % 60), p, p, p, p, 0.0])
        return st

    # --- time -------------------------------------------------------------------

    @property
    def now(self) -> float:
        """The feed's simulated time (epoch seconds)."""
        with self._lock:
            return self._now

    @property
    def symbols(self) -> list[str]:
        """The simulated symbols, upper case, in the order given."""
        return list(self._states)

    def feed_time_at(self, clock_now: float) -> float:
        """Feed time for a clock time; the first call anchors the clock to `start`."""
        with self._lock:
            if self._first_clock is None:
                self._first_clock = clock_now
            return self.start + (clock_now - self._first_clock) * self.speed

    def clock_time_at(self, feed_t: float) -> float:
        """The clock time at which the feed reaches `feed_t` (inverse of feed_time_at)."""
        with self._lock:
            anchor = self.start if self._first_clock is None else self._first_clock
            return anchor + (feed_t - self.start) / self.speed

    def sync(self, clock_now: float) -> float:
        """Advance the market to the feed time matching `clock_now`; return that time."""
        with self._lock:
            target = self.feed_time_at(clock_now)
            self.advance_to(target)
            return self._now

    def advance_to(self, t: float) -> None:
        """Generate ticks up to feed time `t`; a time in the past changes nothing."""
        with self._lock:
            if t <= self._now:
                return
            self._now = t
            until = int(math.floor(t))
            for st in self._states.values():
                if until > st.t:
                    self._run(st, until)

    # --- generation -------------------------------------------------------------

    def _run(self, st: _SymbolState, until: int) -> None:
        """Make ticks st.t+1 .. until. Hot loop: locals only, one gauss per tick."""
        rng = st.rng
        gauss, rand = rng.gauss, rng.random
        exp = math.exp
        prof = st.profile
        base_log = math.log(prof.base_price)
        ticks = st.ticks
        d1, d5, d15 = st.candles[1], st.candles[5], st.candles[15]
        c1 = d1[-1]
        c1_end = c1[0] + 60
        t, logp, volatile = st.t, st.logp, st.volatile
        trend, trend_left, moves = st.trend, st.trend_left, st.moves
        while t < until:
            t += 1
            u = rand()
            if volatile:
                if u < P_TO_CALM:
                    volatile = False
            elif u < P_TO_VOLATILE:
                volatile = True
            if u > 1.0 - P_VIOLENT:
                moves.extend(self._violent_moves(rng, t))
                volatile = True
            trend_left -= 1
            if trend_left <= 0:
                trend = gauss(0.0, TREND_SIGMA)
                trend_left = rng.randint(900, 3600)
            drift = trend - MEAN_REVERSION * (logp - base_log)
            vol_mult = 1.0
            if moves:
                for m in moves:
                    if m.start <= t < m.end:
                        drift += m.drift
                        vol_mult = 3.0
                if moves[0].end <= t:
                    moves[:] = [m for m in moves if m.end > t]
            z = gauss(0.0, 1.0)
            if volatile:
                logp += drift + prof.sigma * VOLATILE_SIGMA * z
                vol_mult *= VOLATILE_VOLUME
            else:
                logp += drift + prof.sigma * z
            p = exp(logp)
            v = prof.volume * vol_mult * (0.4 + abs(z))
            ticks.append((float(t), p))
            if t >= c1_end:
                _fold(c1, d5, 300)
                _fold(c1, d15, 900)
                c1 = [float(t - t % 60), p, p, p, p, v]
                d1.append(c1)
                c1_end = c1[0] + 60
            else:
                if p > c1[2]:
                    c1[2] = p
                elif p < c1[3]:
                    c1[3] = p
                c1[4] = p
                c1[5] += v
        st.t, st.logp, st.volatile = t, logp, volatile
        st.trend, st.trend_left = trend, trend_left

    @staticmethod
    def _violent_moves(rng: random.Random, t: int) -> list[_Move]:
        """A jump (seconds) or a fast trend (minutes) of a few percent, then a partial
        retrace, as real wicks do (and so a long demo does not drift off)."""
        sign = -1.0 if rng.random() < 0.5 else 1.0
        if rng.random() < 0.4:
            pct, secs = rng.uniform(1.5, 3.5), rng.randint(3, 20)
        else:
            pct, secs = rng.uniform(2.5, 6.0), rng.randint(120, 420)
        size = sign * math.log1p(pct / 100)
        back, back_secs = -size * rng.uniform(0.3, 0.7), rng.randint(600, 1800)
        end = t + 1 + secs
        return [_Move(t + 1, end, size / secs), _Move(end, end + back_secs, back / back_secs)]

    def inject_move(self, symbol: str, pct: float, over_sec: float, at: float | None = None) -> None:
        """Force a move of about `pct` percent over `over_sec` seconds of feed time.

        It starts at the next tick, or at feed time `at`; the usual noise goes on on
        top of it, so the move is `pct` give or take a few tenths of a percent.
        """
        with self._lock:
            st = self._state(symbol)
            secs = max(1, int(round(over_sec)))
            first = max(st.t + 1, int(math.ceil(at)) if at is not None else 0)
            st.moves.append(_Move(first, first + secs, math.log1p(pct / 100) / secs))
            st.moves.sort(key=lambda m: m.end)  # _run drops expired moves from the front

    # --- reading ----------------------------------------------------------------

    def _state(self, symbol: str) -> _SymbolState:
        try:
            return self._states[symbol]
        except KeyError:
            raise KeyError(f"SimFeed has no symbol {symbol!r}") from None

    def price(self, symbol: str) -> float:
        """The last traded price."""
        with self._lock:
            return self._state(symbol).ticks[-1][1]

    def regime(self, symbol: str) -> str:
        """'calm' or 'volatile': the regime of the newest tick."""
        with self._lock:
            return "volatile" if self._state(symbol).volatile else "calm"

    def ticker(self, symbol: str) -> Ticker:
        """Last, mark (mean of the last 5 ticks), bid/ask around last, a small funding rate."""
        with self._lock:
            st = self._state(symbol)
            last = st.ticks[-1][1]
            recent = [p for _, p in islice(reversed(st.ticks), 5)]
            mark = sum(recent) / len(recent)
            half = last * st.profile.spread_bps / 20_000 * (3.0 if st.volatile else 1.0)
            # Funding leans with the trend, as perp funding leans with crowding.
            funding = max(-0.00075, min(0.00075, 0.0001 + st.trend * 25))
            return Ticker(
                symbol=symbol,
                last=last,
                mark=mark,
                bid=last - half,
                ask=last + half,
                funding_rate=round(funding, 6),
            )

    def klines(self, symbol: str, interval_min: int, limit: int = 200) -> list[Kline]:
        """The newest `limit` candles, oldest first; the last one may be unfinished."""
        if interval_min not in INTERVALS:
            raise ValueError(f"interval {interval_min} not simulated; use one of {INTERVALS}")
        with self._lock:
            st = self._state(symbol)
            live = st.candles[1][-1]
            if interval_min == 1:
                rows = [list(c) for c in islice(reversed(st.candles[1]), limit)][::-1]
            else:
                span = interval_min * 60
                rows = [list(c) for c in islice(reversed(st.candles[interval_min]), limit + 1)][::-1]
                _fold(live, rows, span)  # the live minute is not folded yet
                rows = rows[-limit:] if limit > 0 else []
        return [Kline(start=r[0], open=r[1], high=r[2], low=r[3], close=r[4], volume=r[5]) for r in rows]

    def path_since(self, symbol: str, t: float, side: str | None = None) -> list[tuple[float, float]]:
        """(time, price) of every kept tick after feed time `t`, oldest first.

        `side` is for feeds whose path depends on it (bid or ask); ticks here are
        single prices, so it changes nothing. Only the last TICK_BUFFER_SEC seconds
        are kept: a caller that must not miss a tick advances the feed in steps
        shorter than that (PaperVenue does).
        """
        with self._lock:
            st = self._state(symbol)
            # Ticks are one per whole second, so the count after t is known.
            count = st.t - int(math.floor(t))
            if count <= 0:
                return []
            return list(islice(reversed(st.ticks), count))[::-1]


def _fold(c1: list[float], into: deque[list[float]] | list[list[float]], span: int) -> None:
    """Merge a 1m candle into the candle of length `span` seconds that contains it."""
    start = c1[0] - c1[0] % span
    if into and into[-1][0] == start:
        c = into[-1]
        if c1[2] > c[2]:
            c[2] = c1[2]
        if c1[3] < c[3]:
            c[3] = c1[3]
        c[4] = c1[4]
        c[5] += c1[5]
    else:
        into.append([start, c1[1], c1[2], c1[3], c1[4], c1[5]])
