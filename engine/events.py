"""What the engine tells the world. The console renders these, the headless run
writes them as JSON lines; every event carries the line an operator reads."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

from engine.models import (
    Balance,
    Cooldown,
    DecisionRecord,
    EntryBlock,
    PositionMeta,
    SymbolFeatures,
    Trade,
    VenuePosition,
)

Level = Literal["debug", "info", "warning", "error"]


class BaseEvent(BaseModel):
    ts: float
    level: Level = "info"
    message: str = ""
    code: str = ""  # a stable tag: TIME_EXIT, IDEMPOTENT, ONE_WAY, ...


class LogEvent(BaseEvent):
    kind: Literal["log"] = "log"


class DecisionEvent(BaseEvent):
    """A decision was proposed, queued, executed, blocked, rejected, expired or failed."""

    kind: Literal["decision"] = "decision"
    record: DecisionRecord
    expires_at: float | None = None


class PositionOpened(BaseEvent):
    kind: Literal["position_opened"] = "position_opened"
    meta: PositionMeta


class PositionClosed(BaseEvent):
    kind: Literal["position_closed"] = "position_closed"
    trade: Trade


class PositionsUpdated(BaseEvent):
    """The venue's positions with the engine's metadata, after every monitor pass."""

    kind: Literal["positions"] = "positions"
    positions: list[VenuePosition]
    metas: list[PositionMeta]
    closing: list[str] = []  # symbols whose time exit is due and not done yet (tried every pass)


class CooldownStarted(BaseEvent):
    kind: Literal["cooldown"] = "cooldown"
    cooldown: Cooldown


class AccountUpdated(BaseEvent):
    kind: Literal["account"] = "account"
    balance: Balance
    realised_today: float
    trades_today: int = 0


class MarketUpdated(BaseEvent):
    """What the deciders saw this cycle, per symbol, and the last hour of 1m closes;
    what would block an entry of each symbol now (guardrails.entry_blocks; empty: nothing)."""

    kind: Literal["market"] = "market"
    features: dict[str, SymbolFeatures]
    closes: dict[str, list[float]] = {}
    blocks: dict[str, list[EntryBlock]] = {}


class BlocksUpdated(BaseEvent):
    """What would block an entry of each symbol, when that changed between decision
    cycles (a position opened or closed, a cooldown, a pause, the margin)."""

    kind: Literal["blocks"] = "blocks"
    blocks: dict[str, list[EntryBlock]]


class EngineState(BaseEvent):
    kind: Literal["state"] = "state"
    mode: Literal["auto", "approve"]
    venue: str
    paused: bool
    degraded: str = ""  # the reason, empty when healthy
    pause_reason: str = ""  # why entries are paused when a risk limit paused them (MAX_DRAWDOWN)
    next_cycle_at: float | None = None
    ticks: dict[str, float] = {}  # each symbol's price tick: prices are written to it
    feed: str = ""  # where marks come from: live, polling, stale ("": no ticking marks, e.g. a replay)


class UsageUpdated(BaseEvent):
    """The AI decider's token use and estimated cost (per cycle, per UTC day)."""

    kind: Literal["usage"] = "usage"
    model: str
    cycle_input_tokens: int = 0
    cycle_output_tokens: int = 0
    cycle_cost_usd: float = 0.0
    day_cost_usd: float = 0.0
    budget_usd: float = 0.0  # 0: no budget
    stopped: bool = False  # the budget is spent: the decider no longer asks


Event = Annotated[
    Union[
        LogEvent,
        DecisionEvent,
        PositionOpened,
        PositionClosed,
        PositionsUpdated,
        CooldownStarted,
        AccountUpdated,
        MarketUpdated,
        BlocksUpdated,
        EngineState,
        UsageUpdated,
    ],
    Field(discriminator="kind"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def to_json(event: BaseEvent) -> str:
    return event.model_dump_json()


def from_json(line: str) -> BaseEvent:
    return EVENT_ADAPTER.validate_json(line)
