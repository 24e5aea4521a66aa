"""Markets read from two worker threads at once (a decision cycle, and an approval's or an
AUTO entry's second look): a candle that closed is folded into the indicators once."""

from __future__ import annotations

import threading
import time

from engine.clock import ManualClock
from engine.market import Frame, Markets
from engine.venues.paper import PaperVenue
from engine.venues.simfeed import SimFeed


def test_a_closed_candle_is_added_once_when_two_threads_read_the_market(monkeypatch):
    clock = ManualClock()
    venue = PaperVenue(SimFeed(["BTCUSDT"], seed=3, start=clock.now()), clock, equity=10_000, name="sim")
    said: list[str] = []
    markets = Markets(venue, lambda level, message, code: said.append(message))
    markets.features(["BTCUSDT"], clock.now())  # the history, loaded whole
    clock.advance(60)  # one more candle closed
    m1 = markets["BTCUSDT"].m1
    before = m1.last_start
    real, added = Frame.add, []

    def slow_add(frame, row):  # the thread adding it is caught between its check and the add
        if frame is m1:
            added.append(row[0])
            time.sleep(0.05)
        real(frame, row)

    monkeypatch.setattr(Frame, "add", slow_add)
    threads = [threading.Thread(target=markets.features, args=(["BTCUSDT"], clock.now())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert added == [before + 60]  # once, by one of them
    assert m1.last_start == before + 60 and said == []
