"""`scalpdesk --headless`: the engine without the console, events as JSON lines.

It trades only in AUTO mode; in APPROVE mode nobody is there to approve, so it logs
proposals and keeps running the exits (time exits, trailing, closes), which lets a
trader leave it guarding positions.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import TextIO

from engine.config import Settings
from engine.events import BaseEvent
from engine.factory import build_engine


class JsonLines:
    """A thread-safe event subscriber writing one JSON object a line."""

    def __init__(self, out: TextIO, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self._lock = threading.Lock()

    def __call__(self, event: BaseEvent) -> None:
        if event.level == "debug" and not self.verbose:
            return
        line = event.model_dump_json()
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()


async def run_headless(settings: Settings, verbose: bool = False, run_for: float | None = None) -> int:
    """Run until SIGTERM / SIGINT (or run_for seconds). A stop takes no new decisions,
    lets the work in flight finish or give up within a bounded time, says which orders it
    leaves unknown, and closes the store last; exit status 0."""
    engine = build_engine(settings, headless=True)
    engine.subscribe(JsonLines(sys.stdout, verbose))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            engine._log("warning", f"{sig.name}: stopping (no new decisions; work in flight finishes or gives up)",
                        "STOP")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await engine.start()
        if settings.mode == "approve":
            engine._log(
                "warning",
                "headless in APPROVE mode: proposals are logged, not executed; exits keep running",
                "HEADLESS",
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=run_for)
        except TimeoutError:
            pass
    finally:
        await engine.stop()
        engine.store.close()  # last: everything the stop wrote is on disk
    return 0
