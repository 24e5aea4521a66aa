"""Today's realised PnL and trade count, kept as trades close (read from the journal once
at start), so a monitor pass costs the same at 23:59 as at 00:01. The day is the UTC day
of the engine's clock (market time in a replay)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from engine.store import StateStore


def day_start(ts: float) -> float:
    """00:00 UTC of the day of `ts`."""
    d = datetime.fromtimestamp(ts, timezone.utc)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def next_day(ts: float) -> float:
    """00:00 UTC of the day after the day of `ts`."""
    return (datetime.fromtimestamp(day_start(ts), timezone.utc) + timedelta(days=1)).timestamp()


class Today:
    def __init__(self, now: float) -> None:
        self.day = day_start(now)
        self.pnl = 0.0
        self.trades = 0

    def rebuild(self, store: StateStore, now: float) -> None:
        self.day = day_start(now)
        trades = store.trades(since=self.day, limit=1_000_000)
        self.pnl = sum(t.pnl for t in trades)
        self.trades = len(trades)

    def roll(self, now: float) -> None:
        day = day_start(now)
        if day != self.day:
            self.day, self.pnl, self.trades = day, 0.0, 0

    def count(self, closed_at: float, pnl: float, now: float) -> None:
        self.roll(now)
        if closed_at >= self.day:
            self.pnl += pnl
            self.trades += 1
