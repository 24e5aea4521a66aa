"""The engine socket's protocol: JSON lines of pydantic models, both ways.

    console → engine   Hello, then Command (each with an id)
    engine → console   Hello (or Error and the end), the replay as Event(replay=True),
                       then Event for everything that happens and Result for each Command;
                       Bye when the engine stops.

The protocol is versioned: an engine and a console of different protocols refuse each
other with a line that says which scalpdesk each is.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

from engine.commands import Command, CommandResult
from engine.events import Event

PROTOCOL = 1
SOCKET_FILE = "engine.sock"


def scalpdesk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scalpdesk")
    except PackageNotFoundError:
        return "unknown"


class ClockInfo(BaseModel):
    """The engine's market time against the wall clock, so a console's countdowns agree
    with the engine's (--speed N included): market = market_at + (wall - wall_at) × rate."""

    market_at: float
    wall_at: float
    rate: float | None


class Hello(BaseModel):
    type: Literal["hello"] = "hello"
    protocol: int = PROTOCOL
    version: str
    role: Literal["engine", "console", "status"]
    pid: int
    clock: ClockInfo | None = None  # the engine's
    state_dir: str = ""
    consoles: int = 0  # attached before this one (the engine's hello)


class Replayed(BaseModel):
    """The replay is over: what follows happens now."""

    type: Literal["replayed"] = "replayed"
    seq: int


class Error(BaseModel):
    type: Literal["error"] = "error"
    message: str


class Bye(BaseModel):
    type: Literal["bye"] = "bye"
    reason: str


class EventMessage(BaseModel):
    type: Literal["event"] = "event"
    seq: int  # the engine's count of events; replayed ones carry the seq they were taken at
    replay: bool = False  # part of the picture a console gets when it attaches
    event: Event


class CommandMessage(BaseModel):
    type: Literal["command"] = "command"
    id: int
    command: Command


class ResultMessage(BaseModel):
    type: Literal["result"] = "result"
    id: int
    result: CommandResult


Message = Annotated[
    Union[Hello, Error, Bye, Replayed, EventMessage, CommandMessage, ResultMessage],
    Field(discriminator="type"),
]
MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode() + b"\n"


def decode(line: bytes) -> Message:
    return MESSAGE.validate_json(line)


def mismatch(ours: Hello, theirs: Hello) -> str:
    """The line both sides show when their protocols differ."""
    mine = "engine" if ours.role == "engine" else "console"
    other = "console" if mine == "engine" else "engine"
    return (f"this {mine} is scalpdesk {ours.version} (protocol {ours.protocol}), the {other} is scalpdesk "
            f"{theirs.version} (protocol {theirs.protocol}): run the same version for both "
            f"(stop the engine with `scalpdesk stop` and start it again with this version)")
