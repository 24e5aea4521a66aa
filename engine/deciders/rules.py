"""RuleDecider: the offline default. Deterministic scalps from EMA trend alignment,
RSI and ATR; no network, no keys."""

from __future__ import annotations

from engine.deciders.base import DeciderResult
from engine.models import Action, Decision, MarketSnapshot, SymbolFeatures


class RuleDecider:
    """Trade with the trend when 1m, 5m and 15m agree and RSI is not stretched;
    close when both short timeframes turn against the position."""

    name = "rules"

    def __init__(self, tp_atr_mult: float = 2.0, sl_atr_mult: float = 1.5, time_limit_sec: int = 2400) -> None:
        self.tp_atr_mult = tp_atr_mult
        self.sl_atr_mult = sl_atr_mult
        self.time_limit_sec = time_limit_sec

    async def decide(self, snapshot: MarketSnapshot) -> DeciderResult:
        return DeciderResult(decisions=self.decide_now(snapshot), audit={"model": "rules"})

    def decide_now(self, snapshot: MarketSnapshot) -> list[Decision]:
        held = {p.symbol: p.side for p in snapshot.positions}
        return [self._one(f, held.get(sym), snapshot.ts) for sym, f in sorted(snapshot.symbols.items())]

    def _one(self, f: SymbolFeatures, held: str | None, ts: float) -> Decision:
        def make(action: Action, confidence: float, why: str) -> Decision:
            opens = action.opens
            return Decision(
                symbol=f.symbol,
                action=action,
                confidence=round(confidence, 3),
                tp_pct=round(self.tp_atr_mult * f.atr_pct_5m, 3) if opens and f.atr_pct_5m > 0 else None,
                sl_pct=round(self.sl_atr_mult * f.atr_pct_5m, 3) if opens and f.atr_pct_5m > 0 else None,
                time_in_trade_limit_sec=self.time_limit_sec if opens else None,
                rationale=why,
                source=self.name,
                created_at=ts,
            )

        if held is not None:
            against = -1 if held == "long" else 1
            if f.trend_1m == against and f.trend_5m == against:
                return make(Action.CLOSE, 0.7, f"1m and 5m trends turned against the {held}: the case is gone")
            return make(Action.HOLD, 0.5, f"{held} open and its trend holds")

        trends = (f.trend_1m, f.trend_5m, f.trend_15m)
        if trends == (1, 1, 1) and 45 <= f.rsi_1m <= 70:
            return make(Action.OPEN_LONG, self._confidence(f, 1), f"1m/5m/15m trends up, RSI(1m) {f.rsi_1m:.0f}")
        if trends == (-1, -1, -1) and 30 <= f.rsi_1m <= 55:
            return make(Action.OPEN_SHORT, self._confidence(f, -1), f"1m/5m/15m trends down, RSI(1m) {f.rsi_1m:.0f}")
        return make(Action.HOLD, 0.3, f"no aligned trend (1m {f.trend_1m:+d}, 5m {f.trend_5m:+d}, 15m {f.trend_15m:+d})")

    @staticmethod
    def _confidence(f: SymbolFeatures, sign: int) -> float:
        # Stronger 5m slope relative to the 5m ATR means a cleaner trend.
        strength = abs(f.ema_slope_5m) / f.atr_pct_5m if f.atr_pct_5m > 0 else 0.0
        aligned = 1.0 if f.ema_slope_5m * sign > 0 else 0.0
        return min(0.55 + 0.25 * aligned + min(strength, 1.0) * 0.2, 0.95)
