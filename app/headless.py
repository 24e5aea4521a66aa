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
    engine = build_engine(settings, headless=True)
    engine.subscribe(JsonLines(sys.stdout, verbose))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
        engine.store.close()
    return 0
