"""The console's side of the engine socket: hello, the replay, the live events, commands
with their results, and reconnecting when the engine goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from engine.commands import Command, CommandResult
from engine.events import BaseEvent
from engine.protocol import (
    Bye,
    ClockInfo,
    CommandMessage,
    Error,
    EventMessage,
    Hello,
    Replayed,
    ResultMessage,
    decode,
    encode,
    scalpdesk_version,
)

CONNECT_TIMEOUT_SEC = 5.0
RECONNECT_SEC = (0.2, 0.5, 1.0, 2.0)  # back-off between attempts, the last one repeated


class EngineGone(Exception):
    """The engine is not there (no socket, refused, closed): try again later."""


class Refused(Exception):
    """The engine will not talk to us (another protocol, another user): trying again will not help."""


class RemoteClock:
    """The engine's market time, followed from its hello (its rate: --speed N)."""

    def __init__(self, info: ClockInfo | None) -> None:
        self.set(info)

    def set(self, info: ClockInfo | None) -> None:
        self.info = info
        self.rate = info.rate if info is not None else 1.0

    def now(self) -> float:
        info = self.info
        wall = time.time()  # wall clock: the console shows the engine's market time
        if info is None:
            return wall
        if info.rate is None:
            return info.market_at
        return info.market_at + (wall - info.wall_at) * info.rate


class EngineClient:
    """One connection to the engine."""

    def __init__(self, path: Path, role: str = "console") -> None:
        self.path = Path(path)
        self.role = role
        self.hello: Hello | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[CommandResult]] = {}

    async def connect(self) -> Hello:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=2**22), CONNECT_TIMEOUT_SEC
            )
        except FileNotFoundError:
            raise EngineGone(f"no engine is running for {self.path.parent} (no {self.path.name})") from None
        except ConnectionRefusedError:
            raise EngineGone(f"no engine answers on {self.path} (a crashed engine's leftover)") from None
        except PermissionError:
            raise Refused(f"{self.path} belongs to another user: attach as the user who runs the engine") from None
        except (OSError, TimeoutError) as e:
            raise EngineGone(f"cannot reach the engine on {self.path}: {e}") from None
        self._writer.write(encode(Hello(version=scalpdesk_version(), role=self.role, pid=os.getpid())))  # type: ignore[arg-type]
        msg = await self._read()
        if isinstance(msg, Error):
            await self.close()
            raise Refused(msg.message)
        if not isinstance(msg, Hello):
            await self.close()
            raise Refused(f"the engine answered with {msg.type!r}, not a hello")
        self.hello = msg
        return msg

    async def _read(self):
        assert self._reader is not None
        try:
            line = await self._reader.readline()
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            raise EngineGone(f"the connection to the engine broke: {e}") from None
        if not line:
            raise EngineGone("the engine closed the connection")
        return decode(line)

    async def messages(self) -> AsyncIterator[EventMessage | Replayed]:
        """Events, replayed then (after Replayed) live, until the engine goes away (EngineGone)."""
        try:
            while True:
                msg = await self._read()
                if isinstance(msg, (EventMessage, Replayed)):
                    yield msg
                elif isinstance(msg, ResultMessage):
                    fut = self._waiting.pop(msg.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg.result)
                elif isinstance(msg, Bye):
                    raise EngineGone(f"the engine stopped: {msg.reason}")
                elif isinstance(msg, Error):
                    raise EngineGone(f"the engine said: {msg.message}")
        except EngineGone:
            # Only a connection that ended fails the commands waiting on it (a reader that
            # merely stopped reading does not: another may read on).
            gone = CommandResult.failed("the engine went away before it answered")
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_result(gone)
            self._waiting.clear()
            raise

    async def send(self, command: Command) -> CommandResult:
        """Send a command; its result arrives through messages(), which must be running."""
        if self._writer is None or self._writer.is_closing():
            return CommandResult.failed("not attached to the engine")
        cid = next(self._ids)
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        try:
            self._writer.write(encode(CommandMessage(id=cid, command=command)))
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as e:
            self._waiting.pop(cid, None)
            return CommandResult.failed(f"the engine did not take the command: {e}")
        return await fut

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
                await self._writer.wait_closed()
        self._writer = None


class EngineLink:
    """Keeps a console attached to its engine: events to `on_event(event, replayed)`, the
    link's state to `on_status(attached, detail)`, and back again after the engine returns."""

    def __init__(self, path: Path, on_event: Callable[[BaseEvent, bool], None],
                 on_status: Callable[[bool, str], None], on_replayed: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.on_event = on_event
        self.on_status = on_status
        self.on_replayed = on_replayed
        self.clock = RemoteClock(None)
        self.attached = False
        self.seq = 0  # the engine's count of events, as far as this console has seen them
        self.refused = ""
        self._client: EngineClient | None = None
        self._stopping = False

    async def run(self) -> None:
        """Attach, stream, and reattach until close() or a refusal."""
        attempt = 0
        while not self._stopping:
            client = EngineClient(self.path)
            try:
                hello = await client.connect()
            except Refused as e:
                self.refused = str(e)
                self._set(False, str(e))
                return
            except EngineGone as e:
                self._set(False, str(e))
                await asyncio.sleep(RECONNECT_SEC[min(attempt, len(RECONNECT_SEC) - 1)])
                attempt += 1
                continue
            attempt = 0
            self.clock.set(hello.clock)
            self._client = client
            self._set(True, f"attached to the engine (pid {hello.pid}, scalpdesk {hello.version})")
            try:
                async for msg in client.messages():
                    self.seq = max(self.seq, msg.seq)
                    if isinstance(msg, EventMessage):
                        self.on_event(msg.event, msg.replay)
                    elif self.on_replayed is not None:
                        self.on_replayed()
            except EngineGone as e:
                self._set(False, str(e))
            finally:
                self._client = None
                await client.close()

    def _set(self, attached: bool, detail: str) -> None:
        changed = attached != self.attached
        self.attached = attached
        if changed or not attached:
            self.on_status(attached, detail)

    async def send(self, command: Command) -> CommandResult:
        client = self._client
        if client is None:
            return CommandResult.failed("not attached to the engine: the command was not sent")
        return await client.send(command)

    async def close(self) -> None:
        self._stopping = True
        if self._client is not None:
            await self._client.close()
