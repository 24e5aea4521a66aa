"""The engine's socket: attach with a replay of the desk, live events, commands with typed
results, many consoles at once, refusals (another user, another protocol), stale sockets."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

import pytest

from app.client import EngineClient, EngineGone, EngineLink, Refused
from engine.commands import Approve, ForceClose, Pause, Shutdown
from engine.events import CooldownStarted, DecisionEvent, EngineState, LogEvent, PositionsUpdated
from engine.protocol import PROTOCOL, Hello, decode, encode
from engine.service import EngineService
from tests.rig import calm, long_btc, make_rig, plan


@pytest.fixture
async def served(tmp_path):
    rig = make_rig(tmp_path / "state", decision_interval_sec=3600, monitor_interval_sec=300)
    calm(rig)
    await rig.engine.start()
    service = EngineService(rig.engine, rig.store.state_dir / "engine.sock")
    await service.start()
    yield rig, service
    await service.stop()
    await rig.engine.stop()
    rig.store.close()


async def collect(client: EngineClient, into: list, until=lambda items: False, timeout: float = 5.0) -> None:
    async def read():
        async for msg in client.messages():
            if msg.type == "replayed":
                continue
            into.append(msg)
            if until(into):
                return

    await asyncio.wait_for(read(), timeout)


async def test_the_socket_is_0600_in_the_state_directory(served):
    rig, service = served
    mode = os.stat(service.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert service.path.parent == rig.store.state_dir


async def test_a_console_attaching_gets_the_desk_as_it_is_then_the_live_stream(served):
    rig, service = served
    e = rig.engine
    e.executor.open(plan(rig, long_btc()))
    await e.run_monitor()
    await e.force_close("BTCUSDT")  # a journalled trade and a cooldown
    rig.decider.push(long_btc(symbol="ETHUSDT"))
    await e.run_decision_cycle()  # a pending decision
    (pending_id,) = e.pending
    client = EngineClient(service.path)
    hello = await client.connect()
    assert hello.protocol == PROTOCOL and hello.role == "engine" and hello.clock.market_at == rig.clock.now()
    got: list = []
    reader = asyncio.create_task(collect(client, got, until=lambda items: not items[-1].replay))
    await asyncio.sleep(0.2)
    e.pause(True)  # something happens: the first live event
    await reader
    replay = [m.event for m in got if m.replay]
    assert "new entries PAUSED" in got[-1].event.message and got[-1].seq > got[0].seq
    assert isinstance(replay[0], EngineState)
    assert any(isinstance(ev, PositionsUpdated) for ev in replay)
    assert [ev.cooldown.symbol for ev in replay if isinstance(ev, CooldownStarted)] == ["BTCUSDT"]
    pending = [ev for ev in replay if isinstance(ev, DecisionEvent) and ev.record.status == "PENDING"]
    assert [p.record.decision.decision_id for p in pending] == [pending_id] and pending[0].expires_at
    assert any(isinstance(ev, LogEvent) and "FORCE CLOSE" in ev.message for ev in replay)
    assert all(m.seq == got[0].seq for m in got if m.replay)
    await client.close()


async def test_what_one_console_does_the_others_see(served):
    rig, service = served
    rig.decider.push(long_btc())
    await rig.engine.run_decision_cycle()
    (did,) = rig.engine.pending
    a, b = EngineClient(service.path), EngineClient(service.path)
    await a.connect()
    await b.connect()
    seen_a: list = []
    seen_b: list = []
    paused = lambda items: "PAUSED" in items[-1].event.message  # noqa: E731
    reader_a = asyncio.create_task(collect(a, seen_a, until=paused))
    reader_b = asyncio.create_task(collect(b, seen_b, until=paused))
    result = await a.send(Approve(decision_id=did))
    assert result.ok and result.intent_id and result.level == "info"
    rig.engine.pause(True)  # a last event, after the answer
    await asyncio.gather(reader_a, reader_b)
    for seen in (seen_a, seen_b):
        executed = [m.event for m in seen if isinstance(m.event, DecisionEvent) and not m.replay
                    and m.event.record.status == "EXECUTED"]
        assert [e.record.intent_id for e in executed] == [result.intent_id]
    assert rig.engine.consoles == 2
    await a.close()
    await b.close()
    await asyncio.sleep(0.1)
    assert service.clients == 0 and rig.engine.consoles == 0


async def test_a_command_answer_is_typed_and_a_refusal_is_a_warning(served):
    rig, service = served
    client = EngineClient(service.path)
    await client.connect()
    reader = asyncio.create_task(collect(client, [], timeout=5))
    nothing = await client.send(ForceClose(symbol="BTCUSDT"))
    assert (nothing.ok, nothing.level, nothing.message) == (False, "warning", "BTCUSDT FORCE CLOSE: nothing to close")
    paused = await client.send(Pause(paused=True))
    assert paused.ok and paused.message == "paused" and rig.engine.paused
    reader.cancel()
    await client.close()


async def test_another_protocol_is_refused_with_both_versions(served):
    _, service = served
    reader, writer = await asyncio.open_unix_connection(str(service.path))
    writer.write(encode(Hello(version="9.9.9", role="console", pid=1, protocol=PROTOCOL + 1)))
    msg = decode(await reader.readline())
    assert msg.type == "error" and "protocol 2" in msg.message and "9.9.9" in msg.message
    assert "run the same version for both" in msg.message
    assert await reader.readline() == b""
    writer.close()


async def test_a_peer_of_another_user_is_refused(tmp_path):
    rig = make_rig(tmp_path / "state")
    await rig.engine.start(schedule=False)
    # The engine accepts only a uid that is not ours: our own connection is "another user".
    service = EngineService(rig.engine, rig.store.state_dir / "engine.sock", allowed_uid=os.getuid() + 4242)
    await service.start()
    try:
        with pytest.raises(Refused, match=f"not uid {os.getuid()}"):
            await EngineClient(service.path).connect()
        assert any("refused a connection from uid" in m for m in rig.lines("ATTACH_REFUSED"))
    finally:
        await service.stop()
        await rig.engine.stop()
        rig.store.close()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another user")
async def test_another_real_user_cannot_even_open_the_socket(served):
    _, service = served
    code = (
        "import os, socket\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try:\n    s.connect({str(service.path)!r}); print('connected')\n"
        "except PermissionError: print('denied')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "denied", out


async def test_a_stale_socket_file_after_a_crash_is_replaced(tmp_path):
    rig = make_rig(tmp_path / "state")
    path = rig.store.state_dir / "engine.sock"
    import socket

    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # a socket file nobody listens on, as a killed engine leaves it
    dead.close()
    with pytest.raises(EngineGone, match="leftover"):
        await EngineClient(path).connect()
    await rig.engine.start(schedule=False)
    service = EngineService(rig.engine, path)
    await service.start()
    try:
        hello = await EngineClient(path).connect()
        assert hello.pid == os.getpid()
    finally:
        await service.stop()
        await rig.engine.stop()
        rig.store.close()
    assert not path.exists()


async def test_a_link_says_when_the_engine_goes_and_reattaches_when_it_is_back(tmp_path):
    rig = make_rig(tmp_path / "state")
    await rig.engine.start(schedule=False)
    path = rig.store.state_dir / "engine.sock"
    status: list[tuple[bool, str]] = []
    events: list = []
    link = EngineLink(path, lambda ev, replayed: events.append((ev, replayed)), lambda a, d: status.append((a, d)))
    task = asyncio.create_task(link.run())
    await asyncio.sleep(0.3)
    assert status and status[-1][0] is False and "no engine is running" in status[-1][1]
    service = EngineService(rig.engine, path)
    await service.start()
    for _ in range(50):
        await asyncio.sleep(0.1)
        if link.attached:
            break
    assert link.attached and any(replayed for _, replayed in events)
    await service.stop("test: the engine stops")
    for _ in range(30):
        await asyncio.sleep(0.1)
        if not link.attached:
            break
    assert not link.attached
    assert any("the engine stopped: test: the engine stops" in detail for attached, detail in status if not attached)
    failed = await link.send(Pause(paused=True))
    assert not failed.ok and "not attached" in failed.message
    events.clear()
    await service.start()  # back: a fresh picture
    for _ in range(50):
        await asyncio.sleep(0.1)
        if link.attached:
            break
    assert link.attached and isinstance(events[0][0], EngineState) and events[0][1]
    await link.close()
    task.cancel()
    await service.stop()
    await rig.engine.stop()
    rig.store.close()


async def test_shutdown_answers_then_asks_the_runner_to_stop(tmp_path):
    rig = make_rig(tmp_path / "state")
    await rig.engine.start(schedule=False)
    stopped = asyncio.Event()
    service = EngineService(rig.engine, rig.store.state_dir / "engine.sock", on_shutdown=stopped.set)
    await service.start()
    client = EngineClient(service.path)
    await client.connect()
    reader = asyncio.create_task(collect(client, [], timeout=5))
    result = await client.send(Shutdown())
    assert result.ok and "stopping" in result.message
    await asyncio.wait_for(stopped.wait(), 2)
    reader.cancel()
    await client.close()
    await service.stop()
    await rig.engine.stop()
    rig.store.close()
