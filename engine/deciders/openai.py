"""OpenAIDecider: one structured-output request per cycle to OpenAI or any compatible
server (Ollama, vLLM, llama.cpp, LM Studio, a gateway), checked before the engine sees it.

The parts, each in its own module: llm_client (the server: output levels, bounded retries,
the replay's answer cache), answers (the answer read and checked), screening (the
rationale), usage (tokens, cost and the daily budget), prompt (what the model is told).
This module runs a cycle through them, keeps the day's spend and the refused key, and
says what happened: LLM_TIMEOUT, LLM_UNAVAILABLE, LLM_AUTH (the engine is degraded with
the reason and this key is not tried again until a restart or a new key), BUDGET_SPENT.

Audit and cost: DeciderResult.audit carries model, api, output level, latency, tokens,
prompt hash and version, the raw answer, the parsed decisions and the decider's verdict
per symbol; DeciderResult.usage the UsageUpdated event and .degraded the reason to stop
new entries. The daily budget (llm_daily_budget_usd, 0 for none) stops the asking once
the UTC day's estimated spend reaches it; the day's spend is kept in the state
directory's ai_usage.json (usage.py), so a restart does not reset it.

The API key is never logged, stored or shown: every text that leaves goes through redact.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.deciders.answer_cache import AnswerCache
from engine.deciders.answers import interpret
from engine.deciders.base import (
    BUDGET_SPENT,
    LLM_AUTH,
    LLM_TIMEOUT,
    LLM_UNAVAILABLE,
    DeciderResult,
    InvalidDecision,
)
from engine.deciders.llm_client import Failure, LLMClient, Trace, public_url
from engine.deciders.prompt import PROMPT_VERSION, prompt_hash, render_input, system_prompt
from engine.deciders.usage import (
    USAGE_FILE,
    TokenCount,
    UsageFileError,
    UsageLedger,
    read_day_cost,
    usd,
    utc_day,
    write_day_cost,
)
from engine.events import UsageUpdated
from engine.models import MarketSnapshot

__all__ = ["OpenAIDecider", "build_openai_decider"]


class OpenAIDecider:
    """Decisions from a language model behind the OpenAI API (or a compatible server)."""

    name = "openai"

    def __init__(
        self,
        settings: Settings,
        *,
        api: str = "chat",
        client: Any | None = None,
        usage_file: Path | None = None,
        day_cost_seed: Callable[[float], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        max_output_tokens: int | None = None,
        cache: AnswerCache | None = None,
    ) -> None:
        self.llm = LLMClient(settings, api=api, client=client, sleep=sleep, max_output_tokens=max_output_tokens,
                             cache=cache)
        self.model = self.llm.model
        self.base_url = self.llm.base_url
        self.api = api
        self.ledger = UsageLedger(
            settings.llm_daily_budget_usd, settings.llm_price_input_per_mtok, settings.llm_price_output_per_mtok
        )
        self.usage_file = usage_file
        self._day_cost_seed = day_cost_seed
        self._usage_file_error = ""
        self._refused_fp: str | None = None
        self._refusal_reason = ""
        self._budget_said_day = ""
        self.cache = cache  # a replay's answers by request (a repeat costs nothing)
        self.total_cost_usd = 0.0  # what every answer cost

    def __repr__(self) -> str:  # never the key
        return f"OpenAIDecider(model={self.model!r}, base_url={public_url(self.base_url)!r}, api={self.api!r})"

    @property
    def settings(self) -> Settings:
        return self.llm.settings

    @settings.setter
    def settings(self, value: Settings) -> None:  # a new key is picked up by the client
        self.llm.settings = value

    def _redact(self, text: str) -> str:
        return self.llm.redact(text)

    async def aclose(self) -> None:
        await self.llm.aclose()

    # --- one cycle

    async def decide(self, snapshot: MarketSnapshot) -> DeciderResult:
        """Ask once for all symbols; never raises (a failure is an InvalidDecision and a hold)."""
        try:
            result = await self._decide(snapshot)
        except Exception as e:  # noqa: BLE001 - the engine must get a result, never a crash
            msg = self._redact(f"internal error: {type(e).__name__}: {e}")
            result = DeciderResult(
                decisions=[],
                invalid=[InvalidDecision(LLM_UNAVAILABLE, msg)],
                audit={"model": self.model, "api": self.api, "usage": self.ledger.event(self.model, TokenCount(), 0.0)},
            )
        usage = result.audit.get("usage")
        if isinstance(usage, dict):
            result.usage = UsageUpdated(ts=snapshot.ts, level="debug", code="USAGE", **usage)
        result.degraded = str(result.audit.get("degraded") or "")
        return result

    def _roll_day(self, ts: float) -> None:
        """A new UTC day (or the first cycle): start from what was already spent that day."""
        day = utc_day(ts)
        if self.ledger.day == day:
            return
        seed = 0.0
        self._usage_file_error = ""
        if self._day_cost_seed is not None:
            try:
                seed = float(self._day_cost_seed(ts))
            except Exception as e:  # noqa: BLE001 - unknown spend: treated like an unreadable file
                self._usage_file_error = f"the day's spend could not be read: {type(e).__name__}: {e}"
        elif self.usage_file is not None:
            try:
                seed = read_day_cost(self.usage_file, day)
            except UsageFileError as e:
                self._usage_file_error = str(e)
        self.ledger.roll(ts, seed if math.isfinite(seed) else 0.0)

    async def _save_day_cost(self) -> str:
        """Write the day's spend for the next start; a line for the log if that failed."""
        if self.usage_file is None or self._usage_file_error:
            return ""
        try:
            await asyncio.to_thread(write_day_cost, self.usage_file, self.ledger.day, self.ledger.day_cost_usd)
        except OSError as e:
            return f"could not save the day's AI spend to {self.usage_file}: {e.strerror or e}"
        return ""

    async def _decide(self, snapshot: MarketSnapshot) -> DeciderResult:
        self._roll_day(snapshot.ts)
        base_audit: dict[str, object] = {
            "model": self.model,
            "api": self.api,
            "base_url": public_url(self.base_url),
            "prompt_version": PROMPT_VERSION,
        }
        if not snapshot.symbols:
            return DeciderResult(decisions=[], audit=base_audit)

        try:
            fp = self.llm.key_fp()
            if self._refused_fp is not None and fp == self._refused_fp:
                raise Failure(
                    LLM_AUTH,
                    f"not asking: {self._refusal_reason}; restart or set a new OPENAI_API_KEY",
                    degraded=self._refusal_reason,
                )
            self.llm.key()
        except Failure as f:
            return self._failed(f, base_audit, TokenCount())

        if self.ledger.spent() or (self._usage_file_error and self.ledger.budget_usd > 0):
            usage = self.ledger.event(self.model, TokenCount(), 0.0)
            usage["stopped"] = True
            audit = {**base_audit, "usage": usage}
            if self._budget_said_day == self.ledger.day:
                return DeciderResult(decisions=[], audit=audit)
            self._budget_said_day = self.ledger.day
            if self._usage_file_error:
                msg = (
                    f"today's AI spend cannot be read ({self._usage_file_error}): the daily budget counts as spent "
                    "until the file is repaired or removed; holding"
                )
                usage["message"] = msg
            else:
                msg = (
                    f"daily AI budget of {usd(self.ledger.budget_usd)} USD is spent "
                    f"({self.ledger.day_cost_usd:.4f} USD today): no more requests until 00:00 UTC; holding"
                )
            return DeciderResult(decisions=[], invalid=[InvalidDecision(BUDGET_SPENT, msg)], audit=audit)

        user = render_input(snapshot)
        trace = Trace(level=self.llm.level())
        started = time.perf_counter()
        try:
            answer, system = await asyncio.wait_for(
                self.llm.ask_with_retries(user, trace), timeout=self.settings.llm_timeout_sec
            )
        except (TimeoutError, asyncio.TimeoutError):
            timing = self._trace_audit(trace, started)
            tried = f" ({trace.attempts} attempt{'s' if trace.attempts != 1 else ''})" if trace.attempts > 1 else ""
            failure = Failure(
                LLM_TIMEOUT, f"no answer within {self.settings.llm_timeout_sec:g} s{tried}; holding"
            )
            # The server may bill a request we stopped waiting for: count its prompt, estimated.
            tokens = TokenCount.estimate(len(system_prompt(self.settings, trace.level)) + len(user), 0)
            cost = self.ledger.add(tokens)
            result = self._failed(failure, {**base_audit, **timing}, tokens, cost)
            saved = await self._save_day_cost()
            if saved:
                result.errors.append(saved)
            return result
        except Failure as f:
            if f.code == LLM_AUTH:
                self._refused_fp = self.llm.key_fp()
                self._refusal_reason = f.degraded or f.message
            return self._failed(f, {**base_audit, **self._trace_audit(trace, started)}, TokenCount())

        timing = self._trace_audit(trace, started)
        tokens = answer.tokens or TokenCount.estimate(len(system) + len(user), len(answer.text or answer.refusal))
        if answer.cached:
            tokens = TokenCount()  # answered from the replay's cache: nothing was asked, nothing spent
        cost = self.ledger.add(tokens)
        self.total_cost_usd += cost
        usage = self.ledger.event(self.model, tokens, cost)
        saved = await self._save_day_cost()
        audit: dict[str, object] = {
            **base_audit,
            **timing,
            "input_tokens": tokens.input_tokens,
            "output_tokens": tokens.output_tokens,
            "cached_tokens": tokens.cached_tokens,
            "reasoning_tokens": tokens.reasoning_tokens,
            "tokens_estimated": tokens.estimated,
            "cost_usd": round(cost, 8),
            "prompt_hash": prompt_hash(system, user),
            "finish_reason": answer.finish_reason,
            "usage": usage,
        }
        result = interpret(answer, snapshot, self._redact, self.name)
        result.audit = {**audit, **result.audit}
        result.errors = trace.notes + result.errors
        if saved:
            result.errors.append(saved)
        if usage["stopped"]:
            result.errors.append(str(usage["message"]))
        return result

    def _trace_audit(self, trace: Trace, started: float) -> dict[str, object]:
        return {
            "output": trace.level,
            "attempts": trace.attempts,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "http_ms": round(trace.http_sec * 1000, 1),
        }

    def _failed(self, f: Failure, audit: dict[str, object], tokens: TokenCount, cost: float = 0.0) -> DeciderResult:
        usage = self.ledger.event(self.model, tokens, cost)
        audit = {**audit, "usage": usage, "verdict": f.code}
        if f.degraded:
            audit["degraded"] = self._redact(f.degraded)
        return DeciderResult(decisions=[], invalid=[InvalidDecision(f.code, self._redact(f.message))], audit=audit)


def build_openai_decider(settings: Settings) -> OpenAIDecider:
    """The decider the factory builds: the day's spend kept in the state directory."""
    return OpenAIDecider(settings, usage_file=Path(settings.state_dir) / USAGE_FILE)
