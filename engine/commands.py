"""What the console (or any client) may ask of the engine: plain data, so a console
can later attach to a headless engine over a socket."""

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


Command = Annotated[
    Union[Approve, Reject, ForceClose, CloseAll, SetMode, Pause, RunCycle],
    Field(discriminator="kind"),
]

COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
