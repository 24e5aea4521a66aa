"""The answer the language model must give, as a strict structured-output schema.

Kept apart from engine.models.Decision on purpose: the model sees only what it may
choose (no ids, timestamps, source or flags, no REVERSE), every field is required
(null where it does not apply) and nothing has a default, as OpenAI's strict mode
wants (OPENAI_COMPAT.md §2). Ranges are not schema keywords (some compatible servers
reject them); the decider and the guardrails check them after parsing.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The actions the model may choose. REVERSE is never offered: the engine would turn it
# into a CLOSE anyway, and a scalper who changes sides closes and waits for the cooldown.
LLMAction = Literal["OPEN_LONG", "OPEN_SHORT", "CLOSE", "HOLD"]


class LLMDecision(BaseModel):
    """One symbol's decision as the model answers it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    symbol: str = Field(description="the symbol exactly as listed in the report, e.g. BTCUSDT")
    action: LLMAction
    confidence: float = Field(description="0 to 1")
    leverage: float | None = Field(description="x; null for HOLD and CLOSE")
    size_pct: float | None = Field(description="margin as % of equity; null for HOLD and CLOSE")
    tp_pct: float | None = Field(description="take profit, % of price; null for HOLD and CLOSE")
    sl_pct: float | None = Field(description="stop loss, % of price; null for HOLD and CLOSE")
    time_in_trade_limit_sec: int | None = Field(description="seconds; null for HOLD and CLOSE")
    cooldown_sec: int | None = Field(description="seconds of cooldown after this position closes; null for HOLD and CLOSE")
    trail_activation_roi: float | None = Field(description="ROI % that arms the trailing stop; null for HOLD and CLOSE")
    rationale: str = Field(description="one or two sentences of facts from the report that support this action")


class LLMAnswer(BaseModel):
    """The whole answer: one decision per symbol of the report."""

    model_config = ConfigDict(extra="forbid")

    decisions: list[LLMDecision]


def strict_schema() -> dict[str, object]:
    """The JSON schema exactly as the SDK sends it with response_format=LLMAnswer."""
    from openai.lib._parsing._completions import type_to_response_format_param

    param = type_to_response_format_param(LLMAnswer)
    return dict(param["json_schema"]["schema"])  # type: ignore[index]


def _untitled(node: object) -> object:
    if isinstance(node, dict):
        return {k: _untitled(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_untitled(v) for v in node]
    return node


def schema_text() -> str:
    """The schema as compact text (titles dropped), for the prompt of servers without
    structured output."""
    return json.dumps(_untitled(strict_schema()), separators=(",", ":"))
