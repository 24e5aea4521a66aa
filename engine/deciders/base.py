"""The Decider protocol: a market snapshot in, one decision per symbol out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from engine.models import Decision, MarketSnapshot

if TYPE_CHECKING:
    from engine.events import UsageUpdated

# Why an answer is not traded on (InvalidDecision.code; the decision record's status).
LLM_INVALID = "LLM_INVALID"
LLM_REFUSAL = "LLM_REFUSAL"
LLM_TIMEOUT = "LLM_TIMEOUT"
LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
LLM_AUTH = "LLM_AUTH"
BUDGET_SPENT = "BUDGET_SPENT"


@dataclass
class InvalidDecision:
    """An answer the engine will not trade on, kept for the record and the detail screen.

    code: LLM_INVALID, LLM_REFUSAL, LLM_TIMEOUT, LLM_UNAVAILABLE, LLM_AUTH, BUDGET_SPENT, ...
    symbol None when the whole answer was unusable."""

    code: str
    message: str
    symbol: str | None = None
    raw: str = ""


@dataclass
class DeciderResult:
    """A cycle's decisions, the problems met (one line each), and audit data
    (model, latency, tokens, prompt hash, raw answer) for the detail screen: everything
    in audit is stored with each decision of the cycle.

    What the engine acts on: `usage` (the AI's token use and cost, emitted as is) and
    `degraded` (a reason: the engine stops new entries and shows it, e.g. the AI key
    refused)."""

    decisions: list[Decision]
    errors: list[str] = field(default_factory=list)
    invalid: list[InvalidDecision] = field(default_factory=list)
    audit: dict[str, object] = field(default_factory=dict)
    usage: UsageUpdated | None = None
    degraded: str = ""


class Decider(Protocol):
    name: str

    async def decide(self, snapshot: MarketSnapshot) -> DeciderResult: ...
