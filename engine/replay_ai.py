"""The AI decider in a replay: what it will cost before the run, and a decider whose
answers are kept by request (a second replay of the same prompts costs nothing and
trades the same)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from engine.config import Settings
from engine.deciders.answer_cache import AnswerCache, default_cache_file
from engine.deciders.openai import OpenAIDecider
from engine.deciders.prompt import render_input, system_prompt
from engine.deciders.usage import TokenCount, cost_usd
from engine.market import LOAD, SymbolMarket
from engine.models import Balance, MarketSnapshot
from engine.replay import ReplayPlan
from engine.venues.candlefeed import CandleFeed

# An answer per symbol (action, the numbers, a one-line rationale) in characters.
ANSWER_CHARS_PER_SYMBOL = 450


@dataclass
class CostEstimate:
    requests: int
    input_tokens: int  # per request
    output_tokens: int  # per request
    cost_usd: float  # all requests


def estimate(settings: Settings, plan: ReplayPlan) -> CostEstimate:
    """One request per decision cycle, each about as long as the first cycle's prompt."""
    feed = CandleFeed(plan.series, plan.start)
    feats = {}
    for sym in plan.symbols:
        m = SymbolMarket.from_klines(sym, *(feed.klines(sym, i, LOAD[i]) for i in (1, 5, 15)))
        feats[sym] = m.features(feed.ticker(sym))
    equity = settings.paper_equity
    snap = MarketSnapshot(ts=plan.start, symbols=feats, balance=Balance(equity=equity, available=equity))
    prompt_chars = len(system_prompt(settings)) + len(render_input(snap))
    tokens = TokenCount.estimate(prompt_chars, ANSWER_CHARS_PER_SYMBOL * len(plan.symbols))
    requests = plan.cycles(settings.decision_interval_sec)
    per = cost_usd(tokens, settings.llm_price_input_per_mtok, settings.llm_price_output_per_mtok)
    return CostEstimate(requests, tokens.input_tokens, tokens.output_tokens, per * requests)


def replay_decider(settings: Settings, cache_file: Path | None) -> tuple[OpenAIDecider, Callable[[], Awaitable[None]]]:
    """The OpenAI decider with the answer cache and no usage file (a replay never
    touches the live state); returns it and what closes it."""
    cache = AnswerCache(cache_file or default_cache_file())
    decider = OpenAIDecider(settings, cache=cache)

    async def close() -> None:
        await decider.aclose()
        cache.close()

    return decider, close
