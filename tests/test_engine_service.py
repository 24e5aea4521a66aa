"""The engine running on its own (`scalpdesk --headless`), and `scalpdesk status` / `stop`:
real processes, a real socket, SIGKILL and restart with consoles attached."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.client import EngineLink
from app.serve import wait_for_socket
from engine.config import load_settings
from engine.events import PositionsUpdated
from engine.factory import build_engine
from tests.rig import long_btc, plan

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def scalpdesk(*args: str, env: dict | None = None, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env or os.environ.copy(),
                          capture_output=True, text=True, timeout=90, stdin=stdin)


def start_engine(state: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "--headless", "--state-dir", str(state),
                             "--decision-interval", "3600", *extra],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def with_a_position(state: Path) -> None:
    """A sim account holding a BTC long, as a previous run left it (real market, real store)."""
    settings = load_settings(state_dir=state)
    engine = build_engine(settings, headless=True)
    await engine.start(schedule=False)

    class Rig:
        venue, clock = engine.venue, engine.clock

    Rig.settings = settings  # type: ignore[attr-defined]
    engine.executor.open(plan(Rig, long_btc(time_in_trade_limit_sec=3600)))
    await engine.stop()
    engine.store.close()


def test_status_and_stop_without_an_engine_say_so(tmp_path):
    for cmd in ("status", "stop"):
        out = scalpdesk(cmd, "--state-dir", str(tmp_path))
        assert out.returncode == 1 and f"no engine is running for {tmp_path}" in out.stderr


async def test_status_shows_the_engine_and_stop_asks_first_while_positions_are_open(tmp_path):
    state = tmp_path / "state"
    await with_a_position(state)
    proc = start_engine(state)
    try:
        assert await wait_for_socket(state / "engine.sock", None, timeout=30), proc.stderr
        status = scalpdesk("status", "--state-dir", str(state))
        assert status.returncode == 0, status.stderr
        assert "venue SIM · mode APPROVE · running" in status.stdout
        assert "positions: 1" in status.stdout and "BTCUSDT long" in status.stdout and "time exit in" in status.stdout
        refused = scalpdesk("stop", "--state-dir", str(state))  # stdin is not a terminal: no one to ask
        assert refused.returncode == 2 and "1 position(s) stay open" in refused.stderr and "--force" in refused.stderr
        assert proc.poll() is None
        stopped = scalpdesk("stop", "--force", "--state-dir", str(state))
        assert stopped.returncode == 0 and "engine stopped" in stopped.stdout
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err
        assert not (state / "engine.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_consoles_see_the_engine_killed_and_reattach_to_its_restart_with_the_same_positions(tmp_path):
    state = tmp_path / "state"
    await with_a_position(state)
    proc = start_engine(state)
    statuses: list[tuple[bool, str]] = []
    seen: list[PositionsUpdated] = []

    def on_event(event, replayed):
        if isinstance(event, PositionsUpdated):
            seen.append(event)

    links = [EngineLink(state / "engine.sock", on_event, lambda a, d: statuses.append((a, d))) for _ in range(2)]
    tasks = [asyncio.create_task(link.run()) for link in links]
    try:
        assert await wait_for_socket(state / "engine.sock", proc, timeout=30)
        await until(lambda: all(link.attached for link in links))
        assert [p.symbol for p in seen[-1].positions] == ["BTCUSDT"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        t0 = time.monotonic()
        await until(lambda: not any(link.attached for link in links), timeout=5)
        assert time.monotonic() - t0 < 2  # at once, not at the next heartbeat
        assert (state / "engine.sock").exists()  # the killed engine's leftover
        seen.clear()
        proc = start_engine(state)
        await until(lambda: all(link.attached for link in links), timeout=30)
        await until(lambda: len(seen) >= 2)
        assert [p.symbol for p in seen[-1].positions] == ["BTCUSDT"]
    finally:
        for link in links:
            await link.close()
        for t in tasks:
            t.cancel()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


async def until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)
