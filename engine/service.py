"""The engine's Unix socket: any number of consoles attach, see the desk as it is, then
everything that happens, and send commands.

The socket lives in the state directory (mode 0600; the engine holds the directory's
lock, so a socket file found at start is a leftover of a crash and is replaced). A peer
of another user is refused (its credentials, SO_PEERCRED). Each client gets its own
queue, fed from whatever thread the engine emits in; a client that cannot keep up is
dropped (it reconnects and gets a fresh picture) rather than slowing the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from engine.commands import CommandResult, Shutdown
from engine.engine import Engine
from engine.events import BaseEvent
from engine.protocol import (
    PROTOCOL,
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
    mismatch,
    scalpdesk_version,
)

log = logging.getLogger(__name__)

HELLO_TIMEOUT_SEC = 10.0
MAX_QUEUE = 20_000  # messages waiting for one client before it is dropped
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid


class EngineService:
    """Serves one engine on a Unix socket."""

    def __init__(self, engine: Engine, path: Path, *, on_shutdown: Callable[[], None] | None = None,
                 allowed_uid: int | None = None) -> None:
        self.engine = engine
        self.path = Path(path)
        self.on_shutdown = on_shutdown
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self.clients = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._queues: set[asyncio.Queue[bytes | None]] = set()
        self._senders: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._line_seq, self._line = -1, b""

    def hello(self) -> Hello:
        clock = self.engine.clock
        return Hello(version=scalpdesk_version(), role="engine", pid=os.getpid(), state_dir=str(self.path.parent),
                     clock=ClockInfo(market_at=clock.now(), wall_at=time.time(), rate=clock.rate))  # wall clock: for the console's countdowns

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Holding the state directory's lock, no other engine serves here: an old socket
        # file is a crash's leftover.
        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the socket is born 0600: no moment where another user could connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=2**22)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self, reason: str = "the engine is stopping") -> None:
        """Say goodbye to every client, close the socket and remove its file."""
        for q in list(self._queues):
            q.put_nowait(encode(Bye(reason=reason)))
            q.put_nowait(None)
        if self._server is not None:
            self._server.close()
        if self._senders:  # what is queued (a last result, the goodbye) goes out first
            await asyncio.wait(list(self._senders), timeout=2.0)
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.drain(), 1.0)
                w.close()
        self._writers.clear()
        self.path.unlink(missing_ok=True)
        self._server = None

    # --- one client ---------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _refuse(self, writer: asyncio.StreamWriter, message: str) -> None:
        writer.write(encode(Error(message=message)))
        with contextlib.suppress(Exception):
            await writer.drain()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = peer_uid(writer.get_extra_info("socket"))
        if uid != self.allowed_uid:
            self.engine.log_line("warning", f"refused a connection from uid {uid}: only uid {self.allowed_uid} "
                                            "may attach to this engine", "ATTACH_REFUSED")
            await self._refuse(writer, f"refused: this engine runs for uid {self.allowed_uid}, not uid {uid}")
            return
        try:
            theirs = decode(await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT_SEC))
        except (TimeoutError, ValidationError, ValueError):
            await self._refuse(writer, f"expected a hello (scalpdesk protocol {PROTOCOL}) first")
            return
        ours = self.hello()
        if not isinstance(theirs, Hello):
            await self._refuse(writer, f"expected a hello (scalpdesk protocol {PROTOCOL}) first")
            return
        if theirs.protocol != PROTOCOL:
            await self._refuse(writer, mismatch(ours, theirs))
            return
        writer.write(encode(ours.model_copy(update={"consoles": self.engine.consoles})))
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        dropped = False

        def on_event(event: BaseEvent) -> None:  # any thread, under the engine's emit lock
            nonlocal dropped
            if dropped:
                return
            if queue.qsize() > MAX_QUEUE:
                dropped = True
                loop.call_soon_threadsafe(queue.put_nowait, None)
                return
            loop.call_soon_threadsafe(queue.put_nowait, self._encoded(event))

        seq, replay = self.engine.attach(on_event)
        self._queues.add(queue)
        self.clients += 1
        console = theirs.role == "console"
        if console:
            self.engine.consoles += 1
        try:
            for event in replay:
                writer.write(encode(EventMessage(seq=seq, replay=True, event=event)))  # type: ignore[arg-type]
            writer.write(encode(Replayed(seq=seq)))
            await writer.drain()
            sender = asyncio.create_task(self._send(queue, writer))
            self._senders.add(sender)
            try:
                await self._commands(reader, queue)
            finally:
                queue.put_nowait(None)
                await sender
                self._senders.discard(sender)
        finally:
            self.engine.unsubscribe(on_event)
            self._queues.discard(queue)
            self.clients -= 1
            if console:
                self.engine.consoles -= 1
            if dropped:
                self.engine.log_line("warning", "a console could not keep up with the events and was dropped; "
                                                "it reconnects with a fresh picture", "ATTACH")

    def _encoded(self, event: BaseEvent) -> bytes:
        """The event's line, made once for all clients (called under the engine's emit lock,
        for one event at a time)."""
        seq = self.engine.seq
        if self._line_seq != seq:
            self._line = encode(EventMessage(seq=seq, event=event))  # type: ignore[arg-type]
            self._line_seq = seq
        return self._line

    async def _send(self, queue: asyncio.Queue[bytes | None], writer: asyncio.StreamWriter) -> None:
        while True:
            line = await queue.get()
            if line is None:
                return
            writer.write(line)
            # Coalesce: write what is queued already, then wait for the socket once.
            while not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    await writer.drain()
                    return
                writer.write(more)
            await writer.drain()

    async def _commands(self, reader: asyncio.StreamReader, queue: asyncio.Queue[bytes | None]) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                msg = decode(line)
            except (ValidationError, ValueError) as e:
                queue.put_nowait(encode(Error(message=f"not a message of protocol {PROTOCOL}: {e}")))
                continue
            if isinstance(msg, CommandMessage):
                asyncio.create_task(self._run(msg, queue))

    async def _run(self, msg: CommandMessage, queue: asyncio.Queue[bytes | None]) -> None:
        if isinstance(msg.command, Shutdown):
            result = CommandResult.done("the engine is stopping")
            queue.put_nowait(encode(ResultMessage(id=msg.id, result=result)))
            if self.on_shutdown is not None:
                self.on_shutdown()
            return
        try:
            result = await self.engine.handle(msg.command)
        except Exception as e:  # noqa: BLE001 - a bad command must not take the service down
            log.exception("command %s failed", msg.command.kind)
            result = CommandResult.failed(f"{msg.command.kind} failed: {type(e).__name__}: {e}")
        queue.put_nowait(encode(ResultMessage(id=msg.id, result=result)))
