"""The engine as a service: the engine, its socket for consoles, and its log as JSON lines.

`scalpdesk --headless` runs it in the foreground (systemd, tmux); `scalpdesk` starts it in
the background when no engine runs for the state directory, then attaches to it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from engine.config import Settings
from engine.events import BaseEvent
from engine.protocol import SOCKET_FILE

ENGINE_LOG = "engine.log"
LOG_ROTATE_BYTES = 20 * 2**20  # engine.log moves to engine.log.1 past this, at a start
START_TIMEOUT_SEC = 30.0


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


def socket_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / SOCKET_FILE


async def serve(settings: Settings, *, out: TextIO | None = None, verbose: bool = False,
                run_for: float | None = None) -> int:
    """Run the engine and its socket until SIGINT/SIGTERM, a console's stop, or run_for seconds.

    A stop takes no new decisions, lets the work in flight finish or give up within a
    bounded time, says which orders it leaves unknown, and closes the store last; exit
    status 0."""
    # Here, not at the top: a console imports this module for socket_path and
    # start_in_background, and has no use for the engine (its venues, scheduler, store).
    from engine.factory import build_engine
    from engine.service import EngineService

    engine = build_engine(settings, headless=True)
    if out is not None:
        engine.subscribe(JsonLines(out, verbose))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            engine.log_line("warning", f"{sig.name}: stopping (no new decisions; work in flight finishes or gives up)",
                            "STOP")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    service = EngineService(engine, socket_path(settings), on_shutdown=stop.set)
    try:
        await engine.start()
        await service.start()
        engine.log_line("info", f"engine serving consoles on {service.path} (pid {os.getpid()})", "SERVE")
        if settings.mode == "approve":
            engine.log_line("warning", "APPROVE mode: proposals wait for a console to approve them "
                                       "(`scalpdesk` attaches); with none attached they are logged, not executed; "
                                       "exits keep running", "HEADLESS")
        try:
            await asyncio.wait_for(stop.wait(), timeout=run_for)
        except TimeoutError:
            pass
    finally:
        await service.stop()
        await engine.stop()
        engine.store.close()  # last: everything the stop wrote is on disk
    return 0


# --- in the background, for a console -----------------------------------------------------


def _rotate(log: Path) -> None:
    try:
        if log.stat().st_size > LOG_ROTATE_BYTES:
            log.replace(log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass


def start_in_background(settings: Settings, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start `scalpdesk --headless` with the console's own flags, detached from the
    terminal (its own session: closing the SSH login does not stop it), its JSON lines
    appended to engine.log in the state directory."""
    state = Path(settings.state_dir)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = state / ENGINE_LOG
    _rotate(log)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "--headless", *argv],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
    finally:
        os.close(fd)


def log_tail(settings: Settings, lines: int = 5) -> str:
    try:
        text = (Path(settings.state_dir) / ENGINE_LOG).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def wait_for_socket(path: Path, proc: subprocess.Popen[bytes] | None, timeout: float = START_TIMEOUT_SEC) -> bool:
    """Until the engine answers on its socket (True), or its process ended / time ran out."""
    from app.client import EngineClient, EngineGone, Refused

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        client = EngineClient(path, role="status")
        try:
            await client.connect()
            return True
        except (EngineGone, Refused):
            await asyncio.sleep(0.1)
        finally:
            await client.close()
    return False
