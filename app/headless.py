"""`scalpdesk --headless`: the engine without the console, events as JSON lines on stdout,
serving consoles on its socket in the state directory.

In APPROVE mode, proposals wait for an attached console to approve them; with no console
attached they are logged and not executed, and the exits (time exits, trailing, closes)
keep running, which lets a trader leave it guarding positions.
"""

from __future__ import annotations

import sys

from app.serve import JsonLines, serve
from engine.config import Settings

__all__ = ["JsonLines", "run_headless"]


async def run_headless(settings: Settings, verbose: bool = False, run_for: float | None = None) -> int:
    """Run until SIGTERM / SIGINT, `scalpdesk stop`, or run_for seconds (see app.serve.serve)."""
    return await serve(settings, out=sys.stdout, verbose=verbose, run_for=run_for)
