"""Exchange arithmetic and durations, in one place: quantities and prices on an
instrument's step (exact decimals, never 0.30000000000000004), and how long things took.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal


def _steps(value: float, step: float, rounding: str) -> Decimal:
    s = Decimal(str(step))
    return (Decimal(str(value)) / s).to_integral_value(rounding) * s


def floor_to_step(value: float, step: float) -> float:
    """Round down to a multiple of step (a quantity never exceeds its budget)."""
    return value if step <= 0 else float(_steps(value, step, ROUND_FLOOR))


def round_to_tick(value: float, tick: float) -> float:
    """Round to the nearest multiple of tick (a price, or a quantity back on its step)."""
    return value if tick <= 0 else float(_steps(value, tick, ROUND_HALF_UP))


def on_step(value: float, step: float) -> bool:
    """Is value a multiple of step (within float noise)?"""
    n = value / step
    return abs(n - round(n)) < 1e-6


def floor_step_text(value: float, step: float) -> str:
    """floor_to_step as the exact decimal string an exchange wants."""
    return plain(_steps(value, step, ROUND_FLOOR))


def round_tick_text(value: float, tick: float) -> str:
    """round_to_tick as the exact decimal string an exchange wants."""
    return plain(_steps(value, tick, ROUND_HALF_UP))


def plain(d: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 0.001, 97012.5, 3."""
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def same_qty(a: float, b: float) -> bool:
    """Two sizes equal but for float noise."""
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def duration(sec: float, seconds_past_an_hour: bool = True) -> str:
    """How long something took: 45s, 3m20s, 1h02m03s (1h02m without the seconds past an
    hour: the AI's prompt, where every character is a token)."""
    sec = max(0, int(round(sec)))
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s" if seconds_past_an_hour else f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"
