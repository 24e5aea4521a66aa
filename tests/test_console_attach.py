"""The console attached to an engine in another process (`scalpdesk --headless`), as a
trader's second SSH login would: it only has the socket. Killed and restarted engines,
a command sent from elsewhere, the console's own commands."""

from __future__ import annotations

import asyncio
import signal

import pytest

from app.client import EngineClient
from app.console import ScalpDeskApp
from engine.commands import Pause
from engine.config import load_settings
from engine.engine import Engine
from tests.test_engine_service import start_engine, until, with_a_position

pytestmark = pytest.mark.slow
WIDE = (160, 48)


async def test_a_console_with_only_the_socket_follows_steers_and_survives_its_engine(tmp_path):
    state = tmp_path / "state"
    await with_a_position(state)
    proc = start_engine(state, "--speed", "20")
    settings = load_settings(state_dir=state)
    app = ScalpDeskApp(state / "engine.sock", settings)
    assert not [v for v in vars(app).values() if isinstance(v, Engine)]  # no engine in this process's console
    try:
        async with app.run_test(size=WIDE) as pilot:
            await asyncio.wait_for(app.started.wait(), 30)
            await pilot.pause()
            assert app.positions.table.has("BTCUSDT") and app.status.venue == "sim"
            assert not app.status.detached
            # what another console does, this one sees
            other = EngineClient(state / "engine.sock")
            await other.connect()
            reader = asyncio.create_task(_drain(other))
            assert (await other.send(Pause(paused=True))).ok
            await until(lambda: app.status.paused, timeout=10)
            reader.cancel()
            await other.close()
            # the engine is killed: the console says so at once, its picture greyed
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            await until(lambda: bool(app.status.detached), timeout=5)
            await pilot.pause()
            assert app.body.has_class("-detached") and app.positions.table.has("BTCUSDT")
            assert any("ENGINE GONE" in str(n.title) for n in app._notifications)
            # it comes back: the console attaches again by itself, with the same position
            proc = start_engine(state, "--speed", "20")
            await until(lambda: not app.status.detached, timeout=30)
            await until(lambda: app.started.is_set() and app.positions.table.has("BTCUSDT"), timeout=10)
            await pilot.pause()
            assert not app.body.has_class("-detached")
            # its own command goes through the socket to the engine in the other process
            await pilot.press("2", "c")
            await pilot.pause()
            await pilot.press("y")
            await until(lambda: not app.positions.table.has("BTCUSDT"), timeout=20)
            await until(lambda: app.cooldowns.table.has("BTCUSDT"), timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


async def _drain(client: EngineClient) -> None:
    async for _ in client.messages():
        pass
