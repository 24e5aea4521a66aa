"""SimFeed: a seeded synthetic market for the sim and paper venues, demos and tests.

One tick per simulated second per symbol, folded into 1, 5 and 15 minute klines as
they are made. It is calibrated to the statistics of real BTC and ETH 1-minute candles
of 2020 (engine/marketstats.py, issue 14; the table is in the README), so what a
decider learns on it is not an artefact of the simulation:

- The efficient log price takes a Gaussian step each second with no trend, so 1-minute
  returns are nearly uncorrelated, as real ones are. A weak pull towards the symbol's
  base price (time constant of days) keeps a long demo near realistic prices.
- Each step overshoots a little, and the overshoot fades over minutes to hours, as
  real trades move the price past where it settles: the lag-1 autocorrelation is about
  -0.01, the 60-minute variance ratio ~0.85, a day's range narrower than a random walk's.
- Volatility clusters: its log is the sum of a daily rhythm (quiet Asian night, busy
  US open over the EU afternoon, quieter weekends), bursts of minutes, sessions of
  hours, and swings of days between calm and wild spells; it is redrawn once a
  minute, which keeps the per-second loop cheap.
- Jumps of 3-6 % (for BTC) within a minute, a few a week at a steady pace, with a
  partial retrace and a burst of volatility after: the fat tails of real returns, and
  what makes a crash guard fire now and then.

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

# --- volatility: log sigma = rhythm + burst + session + swing -----------------------
# The daily rhythm: relative volatility by UTC hour, interpolated between the hours'
# midpoints. Lowest in the Asian night (05-06 h), highest at the US open over the EU
# afternoon (14-15 h), a smaller rise around the 00 h daily close: 2.6x from low to high.
HOURLY_VOL = (
    1.08, 1.00, 0.88, 0.78, 0.69, 0.64, 0.64, 0.72, 0.85, 0.93, 0.93, 0.93,
    1.03, 1.23, 1.57, 1.66, 1.48, 1.28, 1.12, 1.03, 1.00, 0.97, 0.93, 1.00,
)  # fmt: skip
WEEKEND_VOL = 0.65  # Saturday and Sunday (UTC)
# Bursts of minutes and sessions of hours: AR(1) components of log sigma, redrawn
# each minute. The burst's size is the profile's; the session's is common.
BURST_MIN = 10  # time constant, minutes
SESSION_MIN, SESSION_SD = 240, 0.3
# Swings of days between calm and wild spells: a slow wave of log sigma whose phase
# wanders (it is no clock). Real volatility has memory over days (|returns| a day
# apart are correlated, ~0.15) and over months; a wave rather than a random walk
# puts a few wild and a few calm spells in any month, so one month's statistics are
# the real year's, not all storm in one month and all calm in the next.
SWING_PERIOD_DAYS = 10.0
SWING_WANDER = 0.1  # radians of phase per sqrt(day)
VOLATILE_LEVEL = 1.6  # volatility above this multiple of the usual is the 'volatile' regime

# --- the price: an efficient random walk plus transients -------------------------
# Each step overshoots: a part fades in ~10 minutes, a part in ~2 hours, as trades
# move the price past where it settles. Real 1-minute returns show it: a lag-1
# autocorrelation of about -0.01 and variances that grow slower than time (the
# variance ratio at 60 minutes is ~0.85; a day's range is smaller than a random walk's).
OVERSHOOTS = ((0.07, 600), (0.3, 7200))  # (part of the step, time constant in seconds)
# Pull of the log price towards the base price: keeps a long demo within some
# percent of realistic prices; far too slow to matter within a day.
PULL_SEC = 3 * 86_400

# --- jumps: the fat tails ---------------------------------------------------------
# A jump is a move of JUMP_MIN to JUMP_MAX times the profile's 1-minute sigma (3-6 %
# for BTC) within seconds, with P(size > x) ~ x^-JUMP_TAIL, then a partial retrace over
# minutes and a burst of volatility. The real year's kurtosis (~300) and largest moves
# (~8 %) come from a handful of such minutes; for a month to show them, jumps come at
# a steady pace (gamma-distributed gaps, not a Poisson clock that leaves some months
# without one) and their sizes are drawn from a shuffled deck of JUMP_DECK strata of
# the size law, so the big ones are not all in one month either.
JUMP_MIN, JUMP_MAX, JUMP_TAIL = 30.0, 55.0, 1.5
JUMP_DECK = 4
JUMP_GAP_SHAPE = 4.0  # gamma shape of the gaps between jumps (1 would be Poisson)
JUMP_SECS = (1, 10)
JUMP_RETRACE = (0.0, 0.5)
JUMP_RETRACE_SECS = (300, 1800)
JUMP_AFTERSHOCK = (0.8, 0.3)  # added to the burst and session components
MOVE_VOLUME = 3.0  # volume multiplier during a jump or an injected move
MAX_SPREAD_MULT = 5.0


@dataclass(frozen=True)
class SymbolProfile:
    """What makes one symbol's market look like itself."""

    base_price: float
    sigma_1m: float  # the standard deviation of 1-minute returns it aims at, jumps included
    jumps_per_day: float  # on average; more in busy hours
    burst: float  # standard deviation of the minutes-long bursts of log volatility
    swing: float  # amplitude of the days-long swings of log volatility
    volume: float  # mean base-coin volume per second at the usual volatility
    spread_bps: float  # bid/ask spread in basis points of the price at the usual volatility


PROFILES: dict[str, SymbolProfile] = {
    # BTC and ETH: the real 2020 1-minute figures (issue 14, README); ETH's moves are
    # more often its own bursts, less often market-wide swings. SOL a bit wilder.
    "BTCUSDT": SymbolProfile(97_000.0, 0.0011, 0.20, 0.20, 0.90, 1.5, 0.2),
    "ETHUSDT": SymbolProfile(3_400.0, 0.0014, 0.13, 0.30, 0.70, 25.0, 0.3),
    "SOLUSDT": SymbolProfile(240.0, 0.0018, 0.15, 0.30, 0.80, 200.0, 0.5),
}
DEFAULT_PROFILE = SymbolProfile(100.0, 0.0017, 0.15, 0.30, 0.80, 100.0, 1.0)


def _day_rhythm() -> list[float]:
    """Relative volatility for each minute of the UTC day (HOURLY_VOL interpolated),
    scaled so that the week's mean variance is 1: sigma_1m stays the long-run figure."""
    out = []
    for m in range(1440):
        pos = (m + 0.5) / 60 - 0.5  # hours from the first hour's midpoint
        i = math.floor(pos)
        frac = pos - i
        out.append(HOURLY_VOL[i % 24] * (1 - frac) + HOURLY_VOL[(i + 1) % 24] * frac)
    mean_sq = sum(v * v for v in out) / 1440 * (5 + 2 * WEEKEND_VOL**2) / 7
    return [v / math.sqrt(mean_sq) for v in out]


_RHYTHM = _day_rhythm()
_MEAN_RHYTHM = sum(_RHYTHM) / 1440 * (5 + 2 * WEEKEND_VOL) / 7
_BURST_A = math.exp(-1 / BURST_MIN)
_BURST_B = math.sqrt(1 - _BURST_A**2)  # the innovation that keeps a unit stationary spread
_SESSION_A = math.exp(-1 / SESSION_MIN)
_SESSION_B = SESSION_SD * math.sqrt(1 - _SESSION_A**2)
_SWING_STEP = 2 * math.pi / (SWING_PERIOD_DAYS * 1440)
_SWING_NOISE = SWING_WANDER / math.sqrt(1440)
_PHI = tuple(math.exp(-1 / tau) for _, tau in OVERSHOOTS)
_SLOW_FADE = 1 - _PHI[1] ** 60  # the slow overshoot's fading over a minute


def _rhythm(t: int) -> float:
    """The daily and weekly rhythm of volatility at epoch second t."""
    weekday = (t // 86_400 + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return _RHYTHM[t // 60 % 1440] * (WEEKEND_VOL if weekday >= 5 else 1.0)


def _bessel_i0(x: float) -> float:
    """I0(x), the mean of exp(x sin u) over a period: the swing's share of the variance."""
    term = total = 1.0
    for k in range(1, 40):
        term *= (x / (2 * k)) ** 2
        total += term
    return total


def _jump_moment(k: int) -> float:
    """E[size^k] of the jump size law, in units of sigma_1m."""
    a, lo, hi = JUMP_TAIL, JUMP_MIN, JUMP_MAX
    return a * lo**a * (hi ** (k - a) - lo ** (k - a)) / (k - a) / (1 - (lo / hi) ** a)


def _jump_size(u: float) -> float:
    """The jump size (in sigma_1m) at quantile u of the size law."""
    a = JUMP_TAIL
    return JUMP_MIN * (1 - u * (1 - (JUMP_MIN / JUMP_MAX) ** a)) ** (-1 / a)


def _second_sigma(profile: SymbolProfile) -> float:
    """The per-second sigma at the usual volatility (level 1) that, with the overshoots,
    the spread of volatility and the jumps, gives the profile's 1-minute sigma."""
    # A 60 s return of the observed price, per unit of per-second variance: each step
    # weighs 1 + what is left of its overshoots at the minute's end; the overshoots of
    # earlier steps fading within the minute add the second term.
    trs = [(lam, phi) for (lam, _), phi in zip(OVERSHOOTS, _PHI)]
    minute = sum((1 + sum(lam * phi**i for lam, phi in trs)) ** 2 for i in range(60))
    minute += sum(l1 * l2 * (f1**60 - 1) * (f2**60 - 1) / (1 - f1 * f2) for l1, f1 in trs for l2, f2 in trs)
    # E[level^2]: lognormal bursts and sessions times the swing (the rhythm's is 1).
    level_sq = math.exp(2 * (profile.burst**2 + SESSION_SD**2)) * _bessel_i0(2 * profile.swing)
    jump_share = profile.jumps_per_day / 1440 * _jump_moment(2)
    diffusive = max(0.05, 1 - jump_share) * profile.sigma_1m**2
    return math.sqrt(diffusive / (minute * level_sq))


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
    base: float  # log price but for the fast overshoot: the efficient price plus `slow`
    sigma_s: float  # per-second sigma at level 1
    burst: float  # the log-volatility components
    session: float
    swing_phase: float
    jump_clock: float  # expected jumps still to come before the next one
    deck: list[float] = field(default_factory=list)  # jump size quantiles still to draw
    fast: float = 0.0  # the fast overshoot, on top of base
    slow: float = 0.0  # the slow overshoot within base, booked once a minute from zsum
    zsum: float = 0.0  # this minute's sum of the per-second shocks
    # This minute's parameters, drawn at its first second:
    level: float = 1.0  # volatility relative to the usual
    sig: float = 0.0  # per-second sigma
    vlevel: float = 0.0  # volume per second, before the per-tick noise
    volatile: bool = False
    moves: list[_Move] = field(default_factory=list)
    ticks: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=TICK_BUFFER_SEC))
    # Candles as mutable lists [start, open, high, low, close, volume]. The last 1m
    # candle is the live one; it is folded into 5m/15m when its minute is over.
    candles: dict[int, deque[list[float]]] = field(
        default_factory=lambda: {m: deque(maxlen=MAX_CANDLES) for m in INTERVALS}
    )

    @property
    def logp(self) -> float:
        return self.base + self.fast


class SimFeed:
    """A deterministic synthetic market with 1 s ticks and 1/5/15 min klines.

    `start` is the feed time (epoch seconds) the market is at when created; the
    `history_sec` before it are generated at once so klines are there immediately
    (5 h gives 300 1m, 60 5m and 20 15m candles). `speed` maps clock time to feed
    time in `sync`: 10 makes the market move ten times faster than the clock.

    The market keeps the hours of its feed time (UTC): quiet nights, busy afternoons,
    quieter weekends. A seed and a start always give the same market; the same seed
    started at another hour is as busy as that hour is.
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
        # The volatility starts anywhere in its range, not always at the usual level.
        st = _SymbolState(
            profile=profile,
            rng=rng,
            t=t0,
            base=logp,
            sigma_s=_second_sigma(profile),
            burst=rng.gauss(0.0, profile.burst),
            session=rng.gauss(0.0, SESSION_SD),
            swing_phase=rng.uniform(0.0, 2 * math.pi),
            jump_clock=rng.gammavariate(JUMP_GAP_SHAPE, 1 / JUMP_GAP_SHAPE),
        )
        self._new_minute(st, t0)
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

    @staticmethod
    def _new_minute(st: _SymbolState, t: int) -> None:
        """Draw the parameters of the minute that starts at second t: the volatility
        components take their step, and a jump is scheduled when its clock runs out."""
        rng, prof = st.rng, st.profile
        gauss = rng.gauss
        # Book the slow overshoot of the minute that ended and let the older fade; the
        # price already holds it (base moves by (1 + its part) of each step).
        st.slow += OVERSHOOTS[1][0] * st.sig * st.zsum
        fade = st.slow * _SLOW_FADE
        st.slow -= fade
        st.base -= fade
        st.zsum = 0.0
        # The pull towards the base price, a minute's worth at once.
        st.base -= (st.base - st.slow - math.log(prof.base_price)) * 60 / PULL_SEC
        st.burst = _BURST_A * st.burst + prof.burst * _BURST_B * gauss(0.0, 1.0)
        st.session = _SESSION_A * st.session + _SESSION_B * gauss(0.0, 1.0)
        st.swing_phase += _SWING_STEP + _SWING_NOISE * gauss(0.0, 1.0)
        rhythm = _rhythm(t)
        # The jump clock runs with the rhythm: jumps come in busy hours more often.
        st.jump_clock -= prof.jumps_per_day / 1440 * rhythm / _MEAN_RHYTHM
        if st.jump_clock <= 0:
            st.jump_clock += rng.gammavariate(JUMP_GAP_SHAPE, 1 / JUMP_GAP_SHAPE)
            if not st.deck:
                st.deck = [(i + rng.random()) / JUMP_DECK for i in range(JUMP_DECK)]
                rng.shuffle(st.deck)
            st.moves.extend(_jump(rng, prof, _jump_size(st.deck.pop()), t))
            st.moves.sort(key=lambda m: m.end)  # _run drops expired moves from the front
            st.burst += JUMP_AFTERSHOCK[0]
            st.session += JUMP_AFTERSHOCK[1]
        level = rhythm * math.exp(st.burst + st.session + prof.swing * math.sin(st.swing_phase))
        st.level = level
        st.volatile = level > VOLATILE_LEVEL
        st.sig = st.sigma_s * level
        st.vlevel = prof.volume * level

    def _run(self, st: _SymbolState, until: int) -> None:
        """Make ticks st.t+1 .. until. Hot loop: locals only, one gauss per tick; the
        volatility, the jumps, the pull and the slow overshoot's fading change once a
        minute."""
        gauss = st.rng.gauss
        exp = math.exp
        (lam1, _), (lam2, _) = OVERSHOOTS
        phi1 = _PHI[0]
        append = st.ticks.append
        d1, d5, d15 = st.candles[1], st.candles[5], st.candles[15]
        c1 = d1[-1]
        c1_end = c1[0] + 60
        t, base, fast, zsum, moves = st.t, st.base, st.fast, st.zsum, st.moves
        step, o1, vlevel = (1 + lam2) * st.sig, lam1 * st.sig, st.vlevel
        while t < until:
            t += 1
            if t >= c1_end:
                st.base, st.zsum = base, zsum
                self._new_minute(st, t)
                base, zsum = st.base, 0.0
                step, o1, vlevel = (1 + lam2) * st.sig, lam1 * st.sig, st.vlevel
            z = gauss(0.0, 1.0)
            base += step * z
            zsum += z
            v = vlevel * (0.4 + abs(z))
            if moves:
                for m in moves:
                    if m.start <= t < m.end:
                        base += m.drift
                        v = vlevel * MOVE_VOLUME * (0.4 + abs(z))
                if moves[0].end <= t:
                    moves[:] = [m for m in moves if m.end > t]
            fast = phi1 * fast + o1 * z
            p = exp(base + fast)
            append((float(t), p))
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
        st.t, st.base, st.fast, st.zsum = t, base, fast, zsum

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
        """'calm' or 'volatile' (volatility above VOLATILE_LEVEL times the usual) at the newest tick."""
        with self._lock:
            return "volatile" if self._state(symbol).volatile else "calm"

    def ticker(self, symbol: str) -> Ticker:
        """Last, mark (mean of the last 5 ticks), bid/ask around last, a small funding rate."""
        with self._lock:
            st = self._state(symbol)
            last = st.ticks[-1][1]
            recent = [p for _, p in islice(reversed(st.ticks), 5)]
            mark = sum(recent) / len(recent)
            # Spreads widen with volatility, as market makers step back.
            widen = min(MAX_SPREAD_MULT, max(1.0, st.level))
            half = last * st.profile.spread_bps / 20_000 * widen
            # Funding leans with how far the price ran from its base, as perp funding
            # leans with a crowded side.
            lean = 0.005 * (st.logp - math.log(st.profile.base_price))
            funding = max(-0.00075, min(0.00075, 0.0001 + lean))
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

    def fill_price(self, symbol: str) -> float:
        """The price a market order fills at now (before slippage): the last tick."""
        return self.price(symbol)

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


def _jump(rng: random.Random, profile: SymbolProfile, size_sigmas: float, minute: int) -> list[_Move]:
    """A jump within the minute that starts at second `minute`: a move of `size_sigmas`
    times the profile's 1-minute sigma, either way, in a few seconds, then a partial
    retrace over minutes, as real wicks do. It stays inside its minute: split over two
    candles, its halves would add a spurious positive lag-1 autocorrelation."""
    size = size_sigmas * profile.sigma_1m * (-1.0 if rng.random() < 0.5 else 1.0)
    secs = rng.randint(*JUMP_SECS)
    at = minute + rng.randint(0, 60 - secs)
    back = -size * rng.uniform(*JUMP_RETRACE)
    back_secs = rng.randint(*JUMP_RETRACE_SECS)
    end = at + secs
    return [_Move(at, end, size / secs), _Move(end, end + back_secs, back / back_secs)]


def minute_candles(feed: SimFeed, until: float) -> dict[str, list[tuple[float, float, float, float, float]]]:
    """Advance `feed` to `until` and return, per symbol, every finished 1-minute candle
    from the oldest kept one on, as (open_time, open, high, low, close): the input of
    engine.marketstats, over a run of any length (the feed keeps only MAX_CANDLES)."""
    out: dict[str, dict[float, tuple[float, float, float, float, float]]] = {s: {} for s in feed.symbols}
    step = (MAX_CANDLES - 10) * 60
    t = feed.now
    while True:
        for symbol, candles in out.items():
            for k in feed.klines(symbol, 1, MAX_CANDLES)[:-1]:  # the last one is unfinished
                candles[k.start] = (k.start, k.open, k.high, k.low, k.close)
        if t >= until:
            break
        t = min(until, t + step)
        feed.advance_to(t)
    return {s: [c[k] for k in sorted(c)] for s, c in out.items()}


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
