"""Pacing by Bybit's own counters: a request that would overdraw its endpoint's per-second
budget (X-Bapi-Limit-Status, X-Bapi-Limit-Reset-Timestamp) waits for the next window
instead of being refused with 10006; entries leave the last requests to exits."""

from __future__ import annotations

import threading
import time

from engine.venues.bybit_http import Pacer
from tests.fakes.bybit_rig import venue_for
from tests.fakes.bybit_server import BybitFakeServer

POSITIONS = "/v5/position/list"


def _hammer(venue, threads: int, calls: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        for _ in range(calls):
            try:
                venue.positions()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    return errors


def test_requests_wait_for_the_next_window_instead_of_a_10006():
    with BybitFakeServer() as srv:
        ex = srv.exchange
        ex.rate_limits[POSITIONS] = 5
        venue = venue_for(srv, giveup_sec=30.0)
        start = time.monotonic()
        errors = _hammer(venue, threads=3, calls=5)  # 15 requests against 5 a second
        took = time.monotonic() - start
        assert errors == []
        assert srv.count(POSITIONS) == 15, "every request sent once: none refused and sent again"
        assert ex.rate_refused == 0, "no 10006: the pacer waited before the budget ran out"
        assert venue.client.pacer.waits > 0
        assert took >= 1.8, f"15 requests at 5 a second take two windows at least, not {took:.2f}s"
        # Never more than the budget inside one window, as the fake counted them.
        times = sorted(t for t, _, p, _ in ex.requests if p == POSITIONS)
        assert max(sum(1 for u in times if t <= u < t + 0.95) for t in times) <= 5


def test_without_the_counters_the_same_load_is_refused():
    """The control: the fake does refuse past its limit (so the test above shows the pacing)."""
    with BybitFakeServer() as srv:
        ex = srv.exchange
        ex.rate_limits[POSITIONS] = 5
        venue = venue_for(srv, giveup_sec=30.0)
        venue.client.pacer.after = lambda *a, **k: None  # the pacer never learns the counters
        _hammer(venue, threads=3, calls=5)
        assert ex.rate_refused > 0


def test_entries_keep_the_reserve_for_exits():
    now = [1_000_000]
    pacer = Pacer(lambda: now[0], reserve=1)
    pacer.after("place_order", {"X-Bapi-Limit": "10", "X-Bapi-Limit-Status": "1",
                                "X-Bapi-Limit-Reset-Timestamp": str(now[0] + 400)})
    halt = threading.Event()
    pacer.halt = halt
    t0 = time.monotonic()
    pacer.before("place_order", exit_=True)  # a close may spend the last one
    assert time.monotonic() - t0 < 0.05 and pacer.waits == 0

    pacer.after("place_order", {"X-Bapi-Limit": "10", "X-Bapi-Limit-Status": "1",
                                "X-Bapi-Limit-Reset-Timestamp": str(now[0] + 400)})
    waited = threading.Event()

    def entry() -> None:
        pacer.before("place_order", exit_=False)
        waited.set()

    t = threading.Thread(target=entry)
    t.start()
    time.sleep(0.1)
    assert not waited.is_set(), "an entry does not take the request kept for exits"
    assert pacer.waits >= 1
    now[0] += 500  # the window starts again
    t.join(3)
    assert waited.is_set()
