"""Screening a model's rationale: instructions hidden in it (prompt injection, or a model
confused about its role) are refused; one that argues the other side of its action is
flagged (the action stays authoritative). English keyword heuristics: a flag, not proof."""

from __future__ import annotations

import re

from engine.models import Action

RATIONALE_CONTRADICTS_ACTION = "RATIONALE_CONTRADICTS_ACTION"
RATIONALE_TRUNCATED = "RATIONALE_TRUNCATED"
MAX_RATIONALE = 600


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


def clean_rationale(text: str) -> tuple[str, list[str]]:
    """The rationale on one line, control and invisible characters out, cut to
    MAX_RATIONALE; with the flags that says what was done."""
    flags: list[str] = []
    rationale = " ".join(_CONTROL.sub(" ", text).split())
    if len(rationale) > MAX_RATIONALE:
        rationale = rationale[: MAX_RATIONALE - 1] + "…"
        flags.append(RATIONALE_TRUNCATED)
    return rationale, flags
