"""Asking the model: the AsyncOpenAI client, the output level that works, bounded
retries inside one time budget, and the answer as the server gave it.

- Chat completions by default (api="responses" uses the Responses API), the answer
  parsed by the SDK's parse helper into llm_schema.LLMAnswer (strict JSON schema).
  llm_output=auto falls back to JSON mode plus validation when a server's 400 says it
  lacks json_schema, then to plain text when it lacks JSON mode too; the level that
  works is remembered per server and model.
- The client's own retries are off (max_retries=0) and its timeout is the setting:
  retries happen here, inside the decider's asyncio.wait_for(llm_timeout_sec) around
  the whole ask (the SDK's defaults would allow 600 s per try and obey a 120 s
  Retry-After). 429, 408, 409, 5xx and connection errors are retried llm_max_retries
  times with backoff (or the server's Retry-After when it fits in the time left).
- A replay's AnswerCache answers a request it has seen without asking.

The API key never leaves here unredacted: every text goes through redact().
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic import ValidationError

from engine.config import Settings
from engine.deciders.answer_cache import AnswerCache, request_key
from engine.deciders.base import LLM_AUTH, LLM_UNAVAILABLE
from engine.deciders.llm_schema import LLMAnswer
from engine.deciders.prompt import system_prompt
from engine.deciders.usage import TokenCount

OPENAI_URL = "https://api.openai.com/v1"
# Local servers ignore the key but the SDK refuses an empty one (OPENAI_COMPAT.md §1).
PLACEHOLDER_KEY = "sk-no-key-needed"
LEVELS = ("json_schema", "json_object", "text")
BACKOFF_BASE_SEC = 0.5
BACKOFF_MAX_SEC = 8.0


# --- failures of the asking -------------------------------------------------------------


class Failure(Exception):
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
            return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)  # wall clock: an HTTP date is wall time
    return None


# --- what came back ---------------------------------------------------------------------


@dataclass
class Answer:
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
    def from_cache(cls, kept: dict[str, Any]) -> Answer:
        answer = cls(text=kept["text"], refusal=kept["refusal"], sdk_error=kept["sdk_error"],
                     finish_reason=kept["finish_reason"], level=kept["level"], cached=True)
        if answer.level == "json_schema" and answer.text and not answer.refusal and not answer.sdk_error:
            try:
                answer.parsed = LLMAnswer.model_validate_json(answer.text)
            except ValidationError:
                answer.parsed = None
        return answer


@dataclass
class Trace:
    attempts: int = 0
    notes: list[str] = field(default_factory=list)
    level: str = "json_schema"
    http_sec: float = 0.0  # time inside the SDK's HTTP calls: the server's share of the latency

class LLMClient:
    """The model's server, asked once per cycle with bounded retries."""

    def __init__(self, settings: Settings, *, api: str = "chat", client: Any | None = None,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep, max_output_tokens: int | None = None,
                 cache: AnswerCache | None = None) -> None:
        if api not in ("chat", "responses"):
            raise ValueError(f"api must be chat or responses, not {api!r}")
        self.settings = settings
        self.model = settings.openai_model
        self.base_url = settings.openai_base_url or OPENAI_URL
        self.api = api
        self.max_output_tokens = max_output_tokens
        self.cache = cache
        self._sleep = sleep
        self._client = client
        self._client_fp: str | None = None if client is None else self.key_fp()
        # The output level that works, per server and model (auto mode finds it once).
        self._levels: dict[tuple[str, str], str] = {}

    def key(self) -> str:
        secret = self.settings.openai_api_key
        key = secret.get_secret_value().strip() if secret is not None else ""
        if key:
            return key
        if self.settings.openai_base_url:
            return PLACEHOLDER_KEY
        raise Failure(LLM_AUTH, "OPENAI_API_KEY is not set", degraded="OPENAI_API_KEY is not set")

    def key_fp(self) -> str:
        try:
            key = self.key()
        except Failure:
            key = ""
        return hashlib.sha256(key.encode()).hexdigest()

    def redact(self, text: str) -> str:
        secret = self.settings.openai_api_key
        key = secret.get_secret_value() if secret is not None else ""
        if key and len(key) >= 4:
            text = text.replace(key, "***")
            # Servers echo a key masked as its head and tail (OpenAI: "sk-abc***wxyz").
            text = re.sub(r"[A-Za-z0-9_\-]*\*{2,}" + re.escape(key[-4:]), "***", text)
        return re.sub(r"\bsk-[A-Za-z0-9_\-*]{4,}", "sk-***", text)

    def client(self) -> Any:
        """The AsyncOpenAI client, made anew when the key changed."""
        fp = self.key_fp()
        if self._client is None or fp != self._client_fp:
            t = self.settings.llm_timeout_sec
            self._client = openai.AsyncOpenAI(
                api_key=self.key(),
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

    def level(self) -> str:
        mode = self.settings.llm_output
        if mode != "auto":
            return mode
        return self._levels.get((self.base_url, self.model), "json_schema")

    # --- one cycle

    # --- asking, with retries and the output-level fallback

    async def ask_with_retries(self, user: str, trace: Trace) -> tuple[Answer, str]:
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
                    f"the AI server does not support {trace.level} output ({self.redact(e.detail)[:200]}); "
                    f"using {nxt} from now on"
                )
                trace.level = nxt
                continue
            except openai.APITimeoutError:
                # The time budget is spent: waiting again would only overrun the cycle.
                raise TimeoutError from None
            except openai.AuthenticationError as e:
                why = f"the AI server refused the API key (401): {self.redact(_error_text(e))[:300]}"
                raise Failure(LLM_AUTH, why, degraded=why) from None
            except openai.PermissionDeniedError as e:
                why = f"the AI server denied access (403): {self.redact(_error_text(e))[:300]}"
                raise Failure(LLM_AUTH, why, degraded=why) from None
            except (openai.APIStatusError, openai.APIConnectionError) as e:
                failures += 1
                what, retry, wait = self._classify(e, failures)
                if not retry or retries_left <= 0:
                    tried = f" after {trace.attempts} attempts" if trace.attempts > 1 else ""
                    raise Failure(LLM_UNAVAILABLE, f"{what}{tried}; holding") from None
                left = deadline - asyncio.get_running_loop().time()
                if wait >= left:
                    raise Failure(
                        LLM_UNAVAILABLE, f"{what}; the next try ({wait:.1f} s) is beyond the time left; holding"
                    ) from None
                retries_left -= 1
                trace.notes.append(f"{what}; retrying in {wait:.2f} s")
                await self._sleep(wait)

    def _fallback(self, level: str, detail: str) -> str:
        """The next output level after a server refused `level` (auto mode only)."""
        if self.settings.llm_output != "auto" or level == "text":
            hint = " (set SCALPDESK_LLM_OUTPUT=auto to fall back)" if self.settings.llm_output != "auto" else ""
            raise Failure(LLM_UNAVAILABLE, f"the AI server rejected {level} output: {self.redact(detail)[:300]}{hint}")
        nxt = LEVELS[LEVELS.index(level) + 1]
        self._levels[(self.base_url, self.model)] = nxt
        return nxt

    def _classify(self, e: Exception, failures: int) -> tuple[str, bool, float]:
        """(a line for the operator, retry?, seconds to wait first)."""
        backoff = min(BACKOFF_BASE_SEC * 2 ** (failures - 1), BACKOFF_MAX_SEC)
        if isinstance(e, openai.APIConnectionError):
            return f"the AI server is unreachable ({self.redact(str(e))})", True, backoff
        assert isinstance(e, openai.APIStatusError)
        status = e.status_code
        text = self.redact(_error_text(e))[:300]
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

    async def _ask(self, system: str, user: str, trace: Trace) -> Answer:
        if self.cache is None:
            return await self._ask_server(system, user, trace)
        key = request_key(base_url=self.base_url, model=self.model, api=self.api, level=trace.level,
                          max_output_tokens=self.max_output_tokens, system=system, user=user)
        kept = self.cache.get(key)
        if kept is not None:
            return Answer.from_cache(kept)
        answer = await self._ask_server(system, user, trace)
        if answer.text or answer.refusal:
            self.cache.put(key, answer.for_cache())
        return answer

    async def _ask_server(self, system: str, user: str, trace: Trace) -> Answer:
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

    async def _ask_chat(self, client: Any, system: str, user: str, trace: Trace) -> Answer:
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
        answer = Answer(level=level)
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
                answer.sdk_error = f"the answer does not fit the schema: {describe(e)}"
            except openai.LengthFinishReasonError:
                answer.sdk_error = "the answer was cut off at the token limit (finish_reason length)"
            except openai.ContentFilterFinishReasonError:
                answer.refusal = answer.refusal or "the server's content filter stopped the answer"
            except (openai.APIError, ValueError, TypeError, IndexError, AttributeError, KeyError) as e:
                answer.sdk_error = f"the answer could not be parsed: {type(e).__name__}"
        return answer

    async def _ask_responses(self, client: Any, system: str, user: str, trace: Trace) -> Answer:
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
        answer = Answer(level=level)
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
                answer.sdk_error = f"the answer does not fit the schema: {describe(e)}"
            except (openai.APIError, ValueError, TypeError, IndexError, AttributeError, KeyError) as e:
                answer.sdk_error = f"the answer could not be parsed: {type(e).__name__}"
        return answer



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


def public_url(url: str) -> str:
    """The server's address without user info, query or fragment (they may hold secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "?"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe(err: ValidationError) -> str:
    """A validation error in a line: the first problems, and how many more."""
    parts = []
    for e in err.errors()[:4]:
        loc = ".".join(str(p) for p in e.get("loc", ())) or "answer"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(err.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")

