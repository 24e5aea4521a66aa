"""What a console (or any client) may ask of the engine, and the engine's answer: plain
data that goes over the engine's socket as JSON lines."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter


class Approve(BaseModel):
    kind: Literal["approve"] = "approve"
    decision_id: str


class Reject(BaseModel):
    kind: Literal["reject"] = "reject"
    decision_id: str


class ForceClose(BaseModel):
    kind: Literal["force_close"] = "force_close"
    symbol: str


class CloseAll(BaseModel):
    kind: Literal["close_all"] = "close_all"


class SetMode(BaseModel):
    kind: Literal["set_mode"] = "set_mode"
    mode: Literal["auto", "approve"]


class Pause(BaseModel):
    kind: Literal["pause"] = "pause"
    paused: bool


class RunCycle(BaseModel):
    kind: Literal["run_cycle"] = "run_cycle"


class Shutdown(BaseModel):
    """Stop the engine (its service answers, then the process ends)."""

    kind: Literal["shutdown"] = "shutdown"


Command = Annotated[
    Union[Approve, Reject, ForceClose, CloseAll, SetMode, Pause, RunCycle, Shutdown],
    Field(discriminator="kind"),
]


class CommandResult(BaseModel):
    """The engine's answer to a command: did it do it, how to show it, the line to read."""

    ok: bool
    level: Literal["info", "warning", "error"] = "info"
    message: str
    intent_id: str | None = None

    @classmethod
    def done(cls, message: str, intent_id: str | None = None) -> CommandResult:
        return cls(ok=True, message=message, intent_id=intent_id)

    @classmethod
    def refused(cls, message: str, intent_id: str | None = None) -> CommandResult:
        """Not done, and nothing is wrong: not pending any more, nothing to close."""
        return cls(ok=False, level="warning", message=message, intent_id=intent_id)

    @classmethod
    def failed(cls, message: str, intent_id: str | None = None) -> CommandResult:
        return cls(ok=False, level="error", message=message, intent_id=intent_id)

COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
