"""Helpers for tests that run scalpdesk as a child process."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """The child takes Ctrl-C as a person's terminal would, even where this test runs with
    SIGINT ignored (a background job of a shell without job control): Python does not
    raise KeyboardInterrupt for a signal ignored when it starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
