"""OpenAIDecider: one structured-output request per cycle to OpenAI or any compatible
server (Ollama, vLLM, llama.cpp, LM Studio, a gateway), checked before the engine sees it.

How it asks
- AsyncOpenAI, chat completions by default (api="responses" uses the Responses API),
  the answer parsed by the SDK's parse helper into llm_schema.LLMAnswer (strict JSON
  schema). llm_output=auto falls back to JSON mode plus validation when a server's 400
  says it lacks json_schema, then to plain text (fences and <think> stripped) when it
  lacks JSON mode too; the level that works is remembered per server and model.
- The client's own retries are off (max_retries=0) and its timeout is the setting:
  retries happen here, inside one asyncio.wait_for(llm_timeout_sec) around the whole
  ask, so a cycle never waits longer than the setting (the SDK's defaults would allow
  600 s per try and obey a 120 s Retry-After). 429, 408, 409, 5xx and connection
  errors are retried llm_max_retries times with backoff (or the server's Retry-After
  when it fits in the time left), then LLM_UNAVAILABLE. Timeout: LLM_TIMEOUT. 401/403:
  the engine is degraded with the reason and this key is not tried again until a
  restart or a new key.

What it checks (nothing unchecked reaches the guardrails)
- A refusal, an empty or cut-off answer, text that is not the JSON object asked for,
  extra top-level fields: the whole answer is LLM_INVALID, the raw text kept.
- Each decision on its own: missing or extra fields, wrong types, NaN, numbers the
  Decision model refuses (confidence outside 0-1, non-positive sizes), an unknown or
  repeated symbol, a rationale that gives instructions: LLM_INVALID for that symbol,
  its raw JSON kept; a symbol without a decision is LLM_INVALID too (it holds).
  Numbers merely outside the trading ranges (leverage 50) pass: the guardrails clamp
  them and record each clamp.
- A rationale that argues for the other side of the action it comes with keeps the
  action (it is authoritative) and gets the flag RATIONALE_CONTRADICTS_ACTION; a
  line in the log shows both.

Audit and cost: DeciderResult.audit carries model, api, output level, latency,
tokens, prompt hash and version, the raw answer, the parsed decisions and the
decider's verdict per symbol, and "usage" (engine.events.UsageUpdated's fields). The
daily budget (llm_daily_budget_usd, 0 for none) stops the asking once the UTC day's
estimated spend reaches it; the day's spend is kept in the state directory's
ai_usage.json (usage.py), so a restart does not reset it.

The API key is never logged, stored or shown: every text that leaves this module
goes through _redact.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic import ValidationError

from engine.config import Settings
from engine.deciders.answer_cache import AnswerCache, request_key
from engine.deciders.base import DeciderResult, InvalidDecision
from engine.deciders.llm_schema import LLMAnswer, LLMDecision
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
from engine.models import Action, Decision, MarketSnapshot

OPENAI_URL = "https://api.openai.com/v1"
# Local servers ignore the key but the SDK refuses an empty one (OPENAI_COMPAT.md §1).
PLACEHOLDER_KEY = "sk-no-key-needed"

LLM_INVALID = "LLM_INVALID"
LLM_TIMEOUT = "LLM_TIMEOUT"
LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
LLM_AUTH = "LLM_AUTH"
BUDGET_SPENT = "BUDGET_SPENT"
RATIONALE_CONTRADICTS_ACTION = "RATIONALE_CONTRADICTS_ACTION"
RATIONALE_TRUNCATED = "RATIONALE_TRUNCATED"

LEVELS = ("json_schema", "json_object", "text")
MAX_RATIONALE = 600
MAX_RAW = 20_000
BACKOFF_BASE_SEC = 0.5
BACKOFF_MAX_SEC = 8.0


# --- failures of the asking -------------------------------------------------------------


class _Failure(Exception):
    """The cycle gets no answer: a code, a line for the operator, maybe a degradation."""

    def __init__(self, code: str, message: str, degraded: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.degraded = degraded


class _FormatRejected(Exception):
    """The server answered 400 because it lacks the output format we asked for."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _error_text(e: openai.APIStatusError) -> str:
    """The server's own words: e.message alone hides LM Studio's {"error": "text"} body."""
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            body = err.get("message") or json.dumps(err)[:500]
        else:
            body = err
    text = str(body) if body is not None else ""
    return text if text and text in e.message else f"{e.message} {text}".strip()


_FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object|structured|schema|text\.format", re.I)


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asks us to wait (retry-after-ms, retry-after seconds or date)."""
    if headers is None:
        return None
    for name, div in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        v = headers.get(name)
        if v is None:
            continue
        try:
            return max(float(v) / div, 0.0)
        except ValueError:
            pass
    v = headers.get("retry-after")
    if v:
        parsed = email.utils.parsedate_tz(v)
        if parsed is not None:
            return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)
    return None


# --- what came back ---------------------------------------------------------------------


@dataclass
class _Answer:
    text: str = ""
    refusal: str = ""
    parsed: LLMAnswer | None = None
    sdk_error: str = ""  # why the SDK's parse did not give an answer
    tokens: TokenCount | None = None
    finish_reason: str = ""
    level: str = "json_schema"
    cached: bool = False

    def for_cache(self) -> dict[str, Any]:
        t = self.tokens
        return {"text": self.text, "refusal": self.refusal, "sdk_error": self.sdk_error,
                "finish_reason": self.finish_reason, "level": self.level,
                "tokens": None if t is None else [t.input_tokens, t.output_tokens, t.cached_tokens, t.reasoning_tokens]}

    @classmethod
    def from_cache(cls, kept: dict[str, Any]) -> _Answer:
        answer = cls(text=kept["text"], refusal=kept["refusal"], sdk_error=kept["sdk_error"],
                     finish_reason=kept["finish_reason"], level=kept["level"], cached=True)
        if answer.level == "json_schema" and answer.text and not answer.refusal and not answer.sdk_error:
            try:
                answer.parsed = LLMAnswer.model_validate_json(answer.text)
            except ValidationError:
                answer.parsed = None
        return answer


@dataclass
class _Trace:
    attempts: int = 0
    notes: list[str] = field(default_factory=list)
    level: str = "json_schema"
    http_sec: float = 0.0  # time inside the SDK's HTTP calls: the server's share of the latency


# --- the rationale ---------------------------------------------------------------------

# Control characters (terminal escapes) and the invisible ones that reorder or hide text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
# A rationale describes the market. These read as orders to the engine, the operator or
# a model further down the line: prompt injection, or a model confused about its role.
_INSTRUCTION = [
    re.compile(p, re.I)
    for p in (
        r"\b(ignore|disregard|forget)\b[^.]{0,60}\b(instructions?|rules?|guardrails?|limits?|prompt|previous|above)\b",
        r"\b(override|bypass|disable|turn off|switch off|skip|circumvent)\b[^.]{0,40}"
        r"\b(guardrails?|rules?|limits?|checks?|risk|safety|stop[- ]?loss|cooldowns?|approval|confirmation)\b",
        r"\b(system prompt|developer message|new instructions?|jailbreak)\b",
        r"\byou (must|should|are now|will now|have to)\b",
        r"\b(operator|engine|executor|user|trader|admin)\b[^.]{0,30}\b(must|should|needs? to|has to)\b",
        r"\b(approve|execute|confirm)\b[^.]{0,20}\b(immediately|without|automatically|now)\b",
        r"<\|[a-z_]+\|>|\[/?INST\]|^\s*(system|assistant|user)\s*:",
        r"\b(set|raise|increase|max(imi[sz]e)?)\b[^.]{0,20}\bleverage\b[^.]{0,20}\b(max|maximum|100|[2-9]\d)\s*x?\b",
    )
]

_BULL = re.compile(
    r"\b(bullish|uptrend|up-trend|upward|upside|higher highs?|higher lows?|rally|rallying|breakout|"
    r"trends? (?:is |are )?(?:up|higher|rising)|rising|strength|go(?:ing)? long|open(?:ing)? (?:a )?long|"
    r"enter(?:ing)? (?:a )?long|long entry|buy(?:ing)?|buyers)\b",
    re.I,
)
_BEAR = re.compile(
    r"\b(bearish|downtrend|down-trend|downward|downside|lower highs?|lower lows?|sell-?off|dump(?:ing)?|"
    r"breakdown|trends? (?:is |are )?(?:down|lower|falling)|falling|weakness|go(?:ing)? short|"
    r"open(?:ing)? (?:a )?short|enter(?:ing)? (?:a )?short|short entry|sell(?:ing)?|sellers)\b",
    re.I,
)
# Cues in a negated or conceded clause do not count: "no downtrend", "despite bearish funding".
_NEGATION = re.compile(
    r"\b(not|no|never|without|lack(?:s|ing)?|isn'?t|aren'?t|wasn'?t|nor|despite|although|though|"
    r"even if|except|against|avoid|would|could|might|if)\b[^.;,]*$",
    re.I,
)


def _stance(text: str) -> tuple[int, int]:
    """(bullish cues, bearish cues) of a text, ignoring negated or conceded ones."""
    counts = [0, 0]
    for i, rx in enumerate((_BULL, _BEAR)):
        for m in rx.finditer(text):
            if not _NEGATION.search(text[: m.start()]):
                counts[i] += 1
    return counts[0], counts[1]


def rationale_contradicts(action: Action, rationale: str) -> str:
    """Which side the rationale argues when it is the opposite of an open's side ('' if not)."""
    if not action.opens:
        return ""
    bull, bear = _stance(rationale)
    if action is Action.OPEN_LONG and bear > 0 and bull == 0:
        return "short"
    if action is Action.OPEN_SHORT and bull > 0 and bear == 0:
        return "long"
    return ""


def rationale_instructs(rationale: str) -> str:
    """The part of a rationale that reads as an instruction ('' if none)."""
    for rx in _INSTRUCTION:
        m = rx.search(rationale)
        if m:
            return m.group(0).strip()
    return ""


# --- reading the answer's text ------------------------------------------------------------

_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def _first_object(text: str) -> str | None:
    """The first balanced {...} of a text, braces inside JSON strings ignored."""
    start = text.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            c = text[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find("{", start + 1)
    return None


def extract_json(text: str) -> object:
    """The JSON value of a model's answer, tolerating <think> blocks, code fences and prose
    around it (servers without structured output). Raises ValueError."""
    t = _THINK.sub("", text).strip()
    fenced = _FENCE.search(t)
    if fenced:
        t = fenced.group(1).strip()
    try:
        return json.loads(t)
    except ValueError:
        pass
    obj = _first_object(t)
    if obj is None:
        raise ValueError("no JSON object in the answer")
    return json.loads(obj)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:4]:
        loc = ".".join(str(p) for p in e.get("loc", ())) or "answer"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(err.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _short(value: object, limit: int = MAX_RAW) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


# --- the decider ---------------------------------------------------------------------------


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
        if api not in ("chat", "responses"):
            raise ValueError(f"api must be chat or responses, not {api!r}")
        self.settings = settings
        self.model = settings.openai_model
        self.base_url = settings.openai_base_url or OPENAI_URL
        self.api = api
        self.max_output_tokens = max_output_tokens
        self.ledger = UsageLedger(
            settings.llm_daily_budget_usd, settings.llm_price_input_per_mtok, settings.llm_price_output_per_mtok
        )
        self.usage_file = usage_file
        self._day_cost_seed = day_cost_seed
        self._usage_file_error = ""
        self._sleep = sleep
        self._client = client
        self._client_fp: str | None = None if client is None else self._key_fp()
        self._refused_fp: str | None = None
        self._refusal_reason = ""
        self._budget_said_day = ""
        # The output level that works, per server and model (auto mode finds it once).
        self._levels: dict[tuple[str, str], str] = {}
        # A replay's answers by request (a repeat costs nothing), and what all answers cost.
        self.cache = cache
        self.total_cost_usd = 0.0

    def __repr__(self) -> str:  # never the key
        return f"OpenAIDecider(model={self.model!r}, base_url={_public_url(self.base_url)!r}, api={self.api!r})"

    # --- the key and the client

    def _key(self) -> str:
        secret = self.settings.openai_api_key
        key = secret.get_secret_value().strip() if secret is not None else ""
        if key:
            return key
        if self.settings.openai_base_url:
            return PLACEHOLDER_KEY
        raise _Failure(LLM_AUTH, "OPENAI_API_KEY is not set", degraded="OPENAI_API_KEY is not set")

    def _key_fp(self) -> str:
        try:
            key = self._key()
        except _Failure:
            key = ""
        return hashlib.sha256(key.encode()).hexdigest()

    def _redact(self, text: str) -> str:
        secret = self.settings.openai_api_key
        key = secret.get_secret_value() if secret is not None else ""
        if key and len(key) >= 4:
            text = text.replace(key, "***")
            # Servers echo a key masked as its head and tail (OpenAI: "sk-abc***wxyz").
            text = re.sub(r"[A-Za-z0-9_\-]*\*{2,}" + re.escape(key[-4:]), "***", text)
        return re.sub(r"\bsk-[A-Za-z0-9_\-*]{4,}", "sk-***", text)

    def client(self) -> Any:
        """The AsyncOpenAI client, made anew when the key changed."""
        fp = self._key_fp()
        if self._client is None or fp != self._client_fp:
            t = self.settings.llm_timeout_sec
            self._client = openai.AsyncOpenAI(
                api_key=self._key(),
                base_url=self.base_url,
                # Per phase, bounded again as a whole by asyncio.wait_for in decide().
                timeout=openai.Timeout(t, connect=min(5.0, t)),
                # Retries happen in _ask_with_retries, inside the cycle's time budget.
                max_retries=0,
            )
            self._client_fp = fp
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            await self._client.close()

    # --- the output level

    def _level(self) -> str:
        mode = self.settings.llm_output
        if mode != "auto":
            return mode
        return self._levels.get((self.base_url, self.model), "json_schema")

    # --- one cycle

    async def decide(self, snapshot: MarketSnapshot) -> DeciderResult:
        """Ask once for all symbols; never raises (a failure is an InvalidDecision and a hold)."""
        try:
            return await self._decide(snapshot)
        except Exception as e:  # noqa: BLE001 - the engine must get a result, never a crash
            msg = self._redact(f"internal error: {type(e).__name__}: {e}")
            return DeciderResult(
                decisions=[],
                invalid=[InvalidDecision(LLM_UNAVAILABLE, msg)],
                audit={"model": self.model, "api": self.api, "usage": self.ledger.event(self.model, TokenCount(), 0.0)},
            )

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
            "base_url": _public_url(self.base_url),
            "prompt_version": PROMPT_VERSION,
        }
        if not snapshot.symbols:
            return DeciderResult(decisions=[], audit=base_audit)

        try:
            fp = self._key_fp()
            if self._refused_fp is not None and fp == self._refused_fp:
                raise _Failure(
                    LLM_AUTH,
                    f"not asking: {self._refusal_reason}; restart or set a new OPENAI_API_KEY",
                    degraded=self._refusal_reason,
                )
            self._key()
        except _Failure as f:
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
        trace = _Trace(level=self._level())
        started = time.perf_counter()
        try:
            answer, system = await asyncio.wait_for(
                self._ask_with_retries(user, trace), timeout=self.settings.llm_timeout_sec
            )
        except (TimeoutError, asyncio.TimeoutError):
            timing = self._trace_audit(trace, started)
            tried = f" ({trace.attempts} attempt{'s' if trace.attempts != 1 else ''})" if trace.attempts > 1 else ""
            failure = _Failure(
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
        except _Failure as f:
            if f.code == LLM_AUTH:
                self._refused_fp = self._key_fp()
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
        result = self._interpret(answer, snapshot)
        result.audit = {**audit, **result.audit}
        result.errors = trace.notes + result.errors
        if saved:
            result.errors.append(saved)
        if usage["stopped"]:
            result.errors.append(str(usage["message"]))
        return result

    def _trace_audit(self, trace: _Trace, started: float) -> dict[str, object]:
        return {
            "output": trace.level,
            "attempts": trace.attempts,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "http_ms": round(trace.http_sec * 1000, 1),
        }

    def _failed(self, f: _Failure, audit: dict[str, object], tokens: TokenCount, cost: float = 0.0) -> DeciderResult:
        usage = self.ledger.event(self.model, tokens, cost)
        audit = {**audit, "usage": usage, "verdict": f.code}
        if f.degraded:
            audit["degraded"] = self._redact(f.degraded)
        return DeciderResult(decisions=[], invalid=[InvalidDecision(f.code, self._redact(f.message))], audit=audit)

    # --- asking, with retries and the output-level fallback

    async def _ask_with_retries(self, user: str, trace: _Trace) -> tuple[_Answer, str]:
        retries_left = self.settings.llm_max_retries
        deadline = asyncio.get_running_loop().time() + self.settings.llm_timeout_sec
        failures = 0
        while True:
            system = system_prompt(self.settings, trace.level)
            trace.attempts += 1
            try:
                answer = await self._ask(system, user, trace)
                return answer, system
            except _FormatRejected as e:
                nxt = self._fallback(trace.level, e.detail)
                trace.notes.append(
                    f"the AI server does not support {trace.level} output ({self._redact(e.detail)[:200]}); "
                    f"using {nxt} from now on"
                )
                trace.level = nxt
                continue
            except openai.APITimeoutError:
                # The time budget is spent: waiting again would only overrun the cycle.
                raise TimeoutError from None
            except openai.AuthenticationError as e:
                why = f"the AI server refused the API key (401): {self._redact(_error_text(e))[:300]}"
                raise _Failure(LLM_AUTH, why, degraded=why) from None
            except openai.PermissionDeniedError as e:
                why = f"the AI server denied access (403): {self._redact(_error_text(e))[:300]}"
                raise _Failure(LLM_AUTH, why, degraded=why) from None
            except (openai.APIStatusError, openai.APIConnectionError) as e:
                failures += 1
                what, retry, wait = self._classify(e, failures)
                if not retry or retries_left <= 0:
                    tried = f" after {trace.attempts} attempts" if trace.attempts > 1 else ""
                    raise _Failure(LLM_UNAVAILABLE, f"{what}{tried}; holding") from None
                left = deadline - asyncio.get_running_loop().time()
                if wait >= left:
                    raise _Failure(
                        LLM_UNAVAILABLE, f"{what}; the next try ({wait:.1f} s) is beyond the time left; holding"
                    ) from None
                retries_left -= 1
                trace.notes.append(f"{what}; retrying in {wait:.2f} s")
                await self._sleep(wait)

    def _fallback(self, level: str, detail: str) -> str:
        """The next output level after a server refused `level` (auto mode only)."""
        if self.settings.llm_output != "auto" or level == "text":
            hint = " (set SCALPDESK_LLM_OUTPUT=auto to fall back)" if self.settings.llm_output != "auto" else ""
            raise _Failure(LLM_UNAVAILABLE, f"the AI server rejected {level} output: {self._redact(detail)[:300]}{hint}")
        nxt = LEVELS[LEVELS.index(level) + 1]
        self._levels[(self.base_url, self.model)] = nxt
        return nxt

    def _classify(self, e: Exception, failures: int) -> tuple[str, bool, float]:
        """(a line for the operator, retry?, seconds to wait first)."""
        backoff = min(BACKOFF_BASE_SEC * 2 ** (failures - 1), BACKOFF_MAX_SEC)
        if isinstance(e, openai.APIConnectionError):
            return f"the AI server is unreachable ({self._redact(str(e))})", True, backoff
        assert isinstance(e, openai.APIStatusError)
        status = e.status_code
        text = self._redact(_error_text(e))[:300]
        headers = e.response.headers if e.response is not None else None
        should = headers.get("x-should-retry") if headers is not None else None
        retry = status in (408, 409, 429) or status >= 500
        if should in ("true", "false"):
            retry = should == "true"
        if status == 429 and isinstance(e.body, dict) and "insufficient_quota" in json.dumps(e.body):
            retry = False  # billing, not load: retrying cannot help
        after = _retry_after(headers)
        wait = after if after is not None else backoff
        label = {429: "rate limited"}.get(status, "server error" if status >= 500 else "request rejected")
        return f"AI server {label} ({status}): {text}", retry, wait

    async def _ask(self, system: str, user: str, trace: _Trace) -> _Answer:
        if self.cache is None:
            return await self._ask_server(system, user, trace)
        key = request_key(base_url=self.base_url, model=self.model, api=self.api, level=trace.level,
                          max_output_tokens=self.max_output_tokens, system=system, user=user)
        kept = self.cache.get(key)
        if kept is not None:
            return _Answer.from_cache(kept)
        answer = await self._ask_server(system, user, trace)
        if answer.text or answer.refusal:
            self.cache.put(key, answer.for_cache())
        return answer

    async def _ask_server(self, system: str, user: str, trace: _Trace) -> _Answer:
        client = self.client()
        level = trace.level
        try:
            if self.api == "responses":
                return await self._ask_responses(client, system, user, trace)
            return await self._ask_chat(client, system, user, trace)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
            text = _error_text(e)
            if level != "text" and _FORMAT_WORDS.search(text):
                raise _FormatRejected(text) from None
            raise

    async def _ask_chat(self, client: Any, system: str, user: str, trace: _Trace) -> _Answer:
        level = trace.level
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        extra: dict[str, Any] = {}
        if self.max_output_tokens:
            extra["max_completion_tokens"] = self.max_output_tokens
        api = client.chat.completions.with_raw_response
        t0 = time.perf_counter()
        try:
            if level == "json_schema":
                raw = await api.parse(model=self.model, messages=messages, response_format=LLMAnswer, **extra)
            elif level == "json_object":
                raw = await api.create(
                    model=self.model, messages=messages, response_format={"type": "json_object"}, **extra
                )
            else:
                raw = await api.create(model=self.model, messages=messages, **extra)
        finally:
            trace.http_sec += time.perf_counter() - t0
        answer = _Answer(level=level)
        body = _body(raw)
        if body is None:  # a gateway's HTML page, a proxy's text: kept as the raw answer
            answer.text = raw.http_response.text
            return answer
        choices = body.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        answer.text = str(message.get("content") or "")
        answer.refusal = str(message.get("refusal") or "")
        answer.finish_reason = str(choice.get("finish_reason") or "")
        answer.tokens = TokenCount.from_usage(body.get("usage"))
        if level == "json_schema" and not answer.refusal and answer.text:
            try:
                parsed = raw.parse().choices[0].message.parsed
                answer.parsed = parsed if isinstance(parsed, LLMAnswer) else None
            except ValidationError as e:
                answer.sdk_error = f"the answer does not fit the schema: {_describe(e)}"
            except openai.LengthFinishReasonError:
                answer.sdk_error = "the answer was cut off at the token limit (finish_reason length)"
            except openai.ContentFilterFinishReasonError:
                answer.refusal = answer.refusal or "the server's content filter stopped the answer"
            except (openai.APIError, ValueError, TypeError, IndexError, AttributeError, KeyError) as e:
                answer.sdk_error = f"the answer could not be parsed: {type(e).__name__}"
        return answer

    async def _ask_responses(self, client: Any, system: str, user: str, trace: _Trace) -> _Answer:
        level = trace.level
        extra: dict[str, Any] = {}
        if self.max_output_tokens:
            extra["max_output_tokens"] = self.max_output_tokens
        api = client.responses.with_raw_response
        t0 = time.perf_counter()
        try:
            if level == "json_schema":
                raw = await api.parse(model=self.model, instructions=system, input=user, text_format=LLMAnswer, **extra)
            elif level == "json_object":
                raw = await api.create(
                    model=self.model, instructions=system, input=user, text={"format": {"type": "json_object"}}, **extra
                )
            else:
                raw = await api.create(model=self.model, instructions=system, input=user, **extra)
        finally:
            trace.http_sec += time.perf_counter() - t0
        answer = _Answer(level=level)
        body = _body(raw)
        if body is None:
            answer.text = raw.http_response.text
            return answer
        texts, refusals = [], []
        for item in body.get("output") or []:
            if not isinstance(item, dict) or item.get("type") != "message":
                continue
            for c in item.get("content") or []:
                if not isinstance(c, dict):
                    continue
                if c.get("type") == "output_text":
                    texts.append(str(c.get("text") or ""))
                elif c.get("type") == "refusal":
                    refusals.append(str(c.get("refusal") or ""))
        answer.text = "".join(texts)
        answer.refusal = " ".join(r for r in refusals if r)
        status = str(body.get("status") or "")
        reason = ((body.get("incomplete_details") or {}) or {}).get("reason") if status == "incomplete" else None
        answer.finish_reason = f"incomplete: {reason}" if reason else status
        answer.tokens = TokenCount.from_usage(body.get("usage"))
        if level == "json_schema" and not answer.refusal and answer.text:
            try:
                parsed = raw.parse().output_parsed
                answer.parsed = parsed if isinstance(parsed, LLMAnswer) else None
            except ValidationError as e:
                answer.sdk_error = f"the answer does not fit the schema: {_describe(e)}"
            except (openai.APIError, ValueError, TypeError, IndexError, AttributeError, KeyError) as e:
                answer.sdk_error = f"the answer could not be parsed: {type(e).__name__}"
        return answer

    # --- checking the answer

    def _interpret(self, answer: _Answer, snapshot: MarketSnapshot) -> DeciderResult:
        symbols = sorted(snapshot.symbols)
        whole_raw = self._redact(_short(answer.text or answer.refusal))

        def reject(message: str) -> DeciderResult:
            return DeciderResult(
                decisions=[],
                invalid=[InvalidDecision(LLM_INVALID, self._redact(message), raw=whole_raw)],
                audit={"verdict": LLM_INVALID, "verdicts": {s: f"invalid: {message}"[:300] for s in symbols}},
            )

        if answer.refusal:
            return reject(f"the model refused: {answer.refusal[:300]}; holding")
        if not answer.text.strip():
            why = f" (finish_reason {answer.finish_reason})" if answer.finish_reason else ""
            return reject(f"empty answer{why}; holding")
        if answer.finish_reason in ("length",) or answer.finish_reason.startswith("incomplete"):
            return reject(f"the answer was cut off ({answer.finish_reason}); holding")

        items: list[object]
        if answer.parsed is not None:
            items = list(answer.parsed.decisions)
        else:
            try:
                doc = extract_json(answer.text)
            except ValueError as e:
                return reject(f"the answer is not JSON ({e}); holding")
            if not isinstance(doc, dict) or not isinstance(doc.get("decisions"), list):
                return reject("the answer is not an object with a `decisions` list; holding")
            extra = sorted(set(doc) - {"decisions"})
            if extra:
                return reject(f"the answer has fields the schema does not allow: {', '.join(map(str, extra))[:200]}; holding")
            items = doc["decisions"]

        decisions: list[Decision] = []
        invalid: list[InvalidDecision] = []
        errors: list[str] = []
        verdicts: dict[str, str] = {}
        # What the model said per symbol, compactly (the same audit is stored with every
        # decision of the cycle): numbers as given, before the guardrails' clamps; the
        # rationale is on the decision itself. Unusable parts keep their raw text in the
        # InvalidDecision, which the engine stores as the record's "raw".
        parsed_out: dict[str, dict[str, object]] = {}
        seen: set[str] = set()

        def bad(symbol: str | None, message: str, raw: object) -> None:
            message = self._redact(message)
            invalid.append(InvalidDecision(LLM_INVALID, message, symbol=symbol, raw=self._redact(_short(raw, 4000))))
            if symbol:
                verdicts.setdefault(symbol, f"invalid: {message}"[:300])

        for item in items:
            if isinstance(item, LLMDecision):
                d, raw = item, item.model_dump(mode="json")
            else:
                raw = item
                guess = _symbol_of(item)
                try:
                    d = LLMDecision.model_validate(item)
                except ValidationError as e:
                    where = guess or "a decision"
                    bad(guess if guess in snapshot.symbols else None, f"{where}: {_describe(e)}; holding", item)
                    continue
            sym = d.symbol.strip().upper()
            if sym not in snapshot.symbols:
                bad(None, f"decision for unknown symbol {sym[:30]!r} (not in the report); ignored", raw)
                continue
            if sym in seen:
                bad(sym, f"{sym}: a second decision for the same symbol; the first one stands", raw)
                continue
            seen.add(sym)
            checked = self._check(d, sym, snapshot.ts, raw)
            if isinstance(checked, InvalidDecision):
                invalid.append(checked)
                verdicts[sym] = f"invalid: {checked.message}"[:300]
                continue
            decision, note = checked
            decisions.append(decision)
            parsed_out[sym] = {
                k: v for k, v in d.model_dump(mode="json").items() if v is not None and k not in ("symbol", "rationale")
            }
            if note:
                errors.append(note)
                verdicts[sym] = "flagged: " + ", ".join(decision.flags)
            else:
                verdicts[sym] = "ok" if not decision.flags else "flagged: " + ", ".join(decision.flags)

        for sym in symbols:
            if sym not in seen and sym not in verdicts:
                bad(sym, f"{sym}: no decision in the answer; holding", "")

        audit: dict[str, object] = {
            "verdict": "ok" if not invalid else ("partial" if decisions else LLM_INVALID),
            "verdicts": verdicts,
            "parsed": parsed_out,
        }
        if answer.sdk_error and answer.parsed is None:
            audit["sdk_parse"] = answer.sdk_error
        return DeciderResult(decisions=decisions, errors=errors, invalid=invalid, audit=audit)

    def _check(self, d: LLMDecision, sym: str, ts: float, raw: object) -> tuple[Decision, str] | InvalidDecision:
        """One parsed decision against what the engine accepts; (decision, a log line) or why not."""
        flags: list[str] = []
        rationale = " ".join(_CONTROL.sub(" ", d.rationale).split())
        if len(rationale) > MAX_RATIONALE:
            rationale = rationale[: MAX_RATIONALE - 1] + "…"
            flags.append(RATIONALE_TRUNCATED)
        order = rationale_instructs(rationale)
        if order:
            return InvalidDecision(
                LLM_INVALID,
                self._redact(f"{sym}: the rationale gives instructions ({order[:80]!r}); rejected"),
                symbol=sym,
                raw=self._redact(_short(raw, 4000)),
            )
        action = Action(d.action)
        opens = action.opens
        try:
            decision = Decision(
                symbol=sym,
                action=action,
                confidence=d.confidence,
                leverage=d.leverage if opens else None,
                size_pct=d.size_pct if opens else None,
                tp_pct=d.tp_pct if opens else None,
                sl_pct=d.sl_pct if opens else None,
                time_in_trade_limit_sec=d.time_in_trade_limit_sec if opens else None,
                cooldown_sec=d.cooldown_sec if opens else None,
                trail_activation_roi=d.trail_activation_roi if opens else None,
                rationale=rationale,
                source=self.name,
                created_at=ts,
                flags=flags,
            )
        except ValidationError as e:
            return InvalidDecision(
                LLM_INVALID, f"{sym}: {_describe(e)}; holding", symbol=sym, raw=self._redact(_short(raw, 4000))
            )
        note = ""
        argued = rationale_contradicts(action, rationale)
        if argued:
            decision.flags.append(RATIONALE_CONTRADICTS_ACTION)
            note = (
                f"{sym}: {RATIONALE_CONTRADICTS_ACTION}: the action {action.value} is kept, but the rationale "
                f"argues {argued}: {rationale[:200]!r}"
            )
        return decision, note


def _body(raw: Any) -> dict[str, Any] | None:
    """The answer's JSON body; None when it is not a JSON object."""
    try:
        body = raw.http_response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _symbol_of(item: object) -> str | None:
    if isinstance(item, dict) and isinstance(item.get("symbol"), str):
        s = item["symbol"].strip().upper()
        return s if re.fullmatch(r"[A-Z0-9]{2,20}", s) else None
    return None


def _public_url(url: str) -> str:
    """The server's address without user info, query or fragment (they may hold secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "?"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def build_openai_decider(settings: Settings) -> OpenAIDecider:
    """The decider the factory builds: the day's spend kept in the state directory."""
    return OpenAIDecider(settings, usage_file=Path(settings.state_dir) / USAGE_FILE)
