"""Token use, estimated cost and the daily budget of the AI decider.

Cost is an estimate from the configured prices (USD per million tokens); cached input
tokens are priced as ordinary input (the settings carry one input price), so the
estimate errs high. A UTC day's spend survives a restart: after each request the
decider writes it to ai_usage.json in the state directory (atomically, mode 0600) and
reads it back at start. A usage file that cannot be read is never overwritten: the
decider treats the day's budget as spent and says why, so a damaged file cannot
silently reopen the spending.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.store import atomic_write


def usd(x: float) -> str:
    """Money for a log line: cents when it is dollars, more digits when it is not."""
    return f"{x:.2f}" if abs(x) >= 1 or x == 0 else f"{x:.4f}"


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


@dataclass(frozen=True)
class TokenCount:
    """One answer's token use as the server reported it (or as estimated when it did not)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @classmethod
    def from_usage(cls, usage: Any) -> TokenCount | None:
        """From a chat ("prompt_tokens") or Responses ("input_tokens") usage object or dict."""
        if usage is None:
            return None
        get = usage.get if isinstance(usage, dict) else lambda k, d=None: getattr(usage, k, d)

        def num(v: Any) -> int:
            return int(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else 0

        def sub(name: str, key: str) -> int:
            d = get(name)
            if d is None:
                return 0
            return num(d.get(key) if isinstance(d, dict) else getattr(d, key, 0))

        if get("prompt_tokens") is not None or get("completion_tokens") is not None:
            return cls(
                num(get("prompt_tokens")),
                num(get("completion_tokens")),
                sub("prompt_tokens_details", "cached_tokens"),
                sub("completion_tokens_details", "reasoning_tokens"),
            )
        if get("input_tokens") is not None or get("output_tokens") is not None:
            return cls(
                num(get("input_tokens")),
                num(get("output_tokens")),
                sub("input_tokens_details", "cached_tokens"),
                sub("output_tokens_details", "reasoning_tokens"),
            )
        return None

    @classmethod
    def estimate(cls, prompt_chars: int, answer_chars: int) -> TokenCount:
        """For servers that report no usage: about 4 characters a token."""
        return cls(math.ceil(prompt_chars / 4), math.ceil(answer_chars / 4), estimated=True)

    def __add__(self, other: TokenCount) -> TokenCount:
        return TokenCount(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.estimated or other.estimated,
        )


def cost_usd(tokens: TokenCount, price_in_per_mtok: float, price_out_per_mtok: float) -> float:
    # Reasoning tokens are part of the output count and billed as output.
    return (tokens.input_tokens * price_in_per_mtok + tokens.output_tokens * price_out_per_mtok) / 1e6


class UsageLedger:
    """The day's estimated spend against the daily budget (0: no budget)."""

    def __init__(self, budget_usd: float, price_in: float, price_out: float) -> None:
        self.budget_usd = budget_usd
        self.price_in = price_in
        self.price_out = price_out
        self.day = ""
        self.day_cost_usd = 0.0

    def roll(self, ts: float, seed: float = 0.0) -> bool:
        """Move to ts's UTC day (starting from `seed` USD already spent); True if it changed."""
        day = utc_day(ts)
        if day == self.day:
            return False
        self.day, self.day_cost_usd = day, max(seed, 0.0)
        return True

    def spent(self) -> bool:
        return self.budget_usd > 0 and self.day_cost_usd >= self.budget_usd

    def add(self, tokens: TokenCount) -> float:
        cost = cost_usd(tokens, self.price_in, self.price_out)
        self.day_cost_usd += cost
        return cost

    def event(self, model: str, tokens: TokenCount, cycle_cost: float) -> dict[str, object]:
        """The fields of engine.events.UsageUpdated, with a line for the log."""
        stopped = self.spent()
        budget = f" of {usd(self.budget_usd)}" if self.budget_usd > 0 else ""
        est = " (estimated)" if tokens.estimated else ""
        text = (
            f"AI {model}: {tokens.input_tokens} in / {tokens.output_tokens} out tokens{est}, "
            f"{cycle_cost:.4f} USD this cycle, {self.day_cost_usd:.4f}{budget} USD today"
        )
        if stopped:
            text += "; daily budget spent: no more requests until 00:00 UTC"
        return dict(
            model=model,
            message=text,
            cycle_input_tokens=tokens.input_tokens,
            cycle_output_tokens=tokens.output_tokens,
            cycle_cost_usd=round(cycle_cost, 8),
            day_cost_usd=round(self.day_cost_usd, 8),
            budget_usd=self.budget_usd,
            stopped=stopped,
        )


USAGE_FILE = "ai_usage.json"


class UsageFileError(Exception):
    """The usage file exists but cannot be read; it is left as it is."""


def read_day_cost(path: Path, day: str) -> float:
    """The spend the usage file recorded for `day`: 0 if there is no file or it is of another day."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0.0
    except OSError as e:
        raise UsageFileError(f"{path}: cannot read it ({e.strerror})") from e
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("day") != day:
            return 0.0
        cost = data.get("cost_usd")
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            raise ValueError(f"cost_usd is {cost!r}")
        return float(cost)
    except ValueError as e:
        raise UsageFileError(f"{path}: {e}") from e


def write_day_cost(path: Path, day: str, cost: float) -> None:
    """Replace the usage file atomically (the store's temp file, fsync, rename), mode 0600."""
    payload = json.dumps({"day": day, "cost_usd": round(cost, 8)}, allow_nan=False).encode()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, payload)
