"""Time for the engine. Engine code asks a Clock, never time.time(), so tests,
snapshots and replays are deterministic, and a simulated market at --speed N moves
the engine's timers with it.

A clock also says how it relates to the wall clock (`rate`): market seconds per
wall second. The system clock runs at 1; the simulated market's clock at --speed N;
a ManualClock (tests, snapshots, replay) has no rate: it moves only when told to,
so whoever drives it (the replay, a test) runs the engine's timers itself.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    rate: float | None  # market seconds per wall second; None: moved by hand

    def now(self) -> float:
        """Seconds since the epoch, in market time."""
        ...


class SystemClock:
    """The wall clock."""

    rate: float | None = 1.0

    def now(self) -> float:
        return time.time()  # wall clock: this is the one clock that reads it


class ScaledClock:
    """Market time that runs `speed` times faster than the wall clock, from `start`
    (default: now). The simulated market at --speed N and every engine timer run on it,
    so a 40-minute time limit at speed 10 lasts 4 wall minutes."""

    def __init__(self, speed: float, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.rate: float | None = float(speed)
        self._wall0 = time.time()  # wall clock: the anchor of the scaled time
        self._start = self._wall0 if start is None else float(start)

    def now(self) -> float:
        return self._start + (time.time() - self._wall0) * self.rate  # type: ignore[operator]  # wall clock: scaled


class ManualClock:
    """A clock that moves only when told to (tests, snapshots, replay)."""

    rate: float | None = None

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01 00:00 UTC
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a ManualClock never goes back")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            if when < self._now:
                raise ValueError("a ManualClock never goes back")
            self._now = float(when)


def wall_seconds(clock: Clock, market_seconds: float) -> float:
    """How long `market_seconds` of the clock's time last on the wall clock."""
    rate = clock.rate
    if rate is None:
        raise ValueError("a manual clock has no wall-clock duration; drive its timers by hand")
    return market_seconds / rate
