"""Reading and checking the model's answer: nothing unchecked reaches the guardrails.

- A refusal, an empty or cut-off answer, text that is not the JSON object asked for,
  extra top-level fields: the whole answer is LLM_INVALID, the raw text kept.
- Each decision on its own: missing or extra fields, wrong types, NaN, numbers the
  Decision model refuses (confidence outside 0-1, non-positive sizes), an unknown or
  repeated symbol, a rationale that gives instructions: LLM_INVALID for that symbol,
  its raw JSON kept; a symbol without a decision is LLM_INVALID too (it holds).
  Numbers merely outside the trading ranges (leverage 50) pass: the guardrails clamp
  them and record each clamp.
- A rationale that argues for the other side of the action it comes with keeps the
  action (it is authoritative) and gets the flag RATIONALE_CONTRADICTS_ACTION; a line
  in the log shows both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from pydantic import ValidationError

from engine.deciders.base import LLM_INVALID, DeciderResult, InvalidDecision
from engine.deciders.llm_client import Answer, describe
from engine.deciders.llm_schema import LLMDecision
from engine.deciders.screening import RATIONALE_CONTRADICTS_ACTION, clean_rationale, rationale_contradicts, rationale_instructs
from engine.models import Action, Decision, MarketSnapshot

MAX_RAW = 20_000

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


def _short(value: object, limit: int = MAX_RAW) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def _symbol_of(item: object) -> str | None:
    if isinstance(item, dict) and isinstance(item.get("symbol"), str):
        s = item["symbol"].strip().upper()
        return s if re.fullmatch(r"[A-Z0-9]{2,20}", s) else None
    return None


def interpret(answer: Answer, snapshot: MarketSnapshot, redact: Callable[[str], str], source: str) -> DeciderResult:
    """The answer as decisions the engine can review, and what it will not trade on."""
    symbols = sorted(snapshot.symbols)
    whole_raw = redact(_short(answer.text or answer.refusal))

    def reject(message: str) -> DeciderResult:
        return DeciderResult(
            decisions=[],
            invalid=[InvalidDecision(LLM_INVALID, redact(message), raw=whole_raw)],
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
        message = redact(message)
        invalid.append(InvalidDecision(LLM_INVALID, message, symbol=symbol, raw=redact(_short(raw, 4000))))
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
                bad(guess if guess in snapshot.symbols else None, f"{where}: {describe(e)}; holding", item)
                continue
        sym = d.symbol.strip().upper()
        if sym not in snapshot.symbols:
            bad(None, f"decision for unknown symbol {sym[:30]!r} (not in the report); ignored", raw)
            continue
        if sym in seen:
            bad(sym, f"{sym}: a second decision for the same symbol; the first one stands", raw)
            continue
        seen.add(sym)
        checked = _check(d, sym, snapshot.ts, raw, redact, source)
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

def _check(d: LLMDecision, sym: str, ts: float, raw: object, redact: Callable[[str], str],
           source: str) -> tuple[Decision, str] | InvalidDecision:
    """One parsed decision against what the engine accepts; (decision, a log line) or why not."""
    rationale, flags = clean_rationale(d.rationale)
    order = rationale_instructs(rationale)
    if order:
        return InvalidDecision(
            LLM_INVALID,
            redact(f"{sym}: the rationale gives instructions ({order[:80]!r}); rejected"),
            symbol=sym,
            raw=redact(_short(raw, 4000)),
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
            source=source,
            created_at=ts,
            flags=flags,
        )
    except ValidationError as e:
        return InvalidDecision(
            LLM_INVALID, f"{sym}: {describe(e)}; holding", symbol=sym, raw=redact(_short(raw, 4000))
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
