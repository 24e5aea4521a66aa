"""RuleDecider: the offline default. Deterministic, no network, no keys.

It fades stretched moves. On the calibrated market (and in real 1-minute data) returns
barely follow through, but a price that ran far from its 1-hour EMA tends to come
part of the way back: trades overshoot and the overshoot fades, jumps partly retrace.
Measured on the simulated market (bench/bench_decider.py): after the price ran ≥ 1 %
from its EMA(60) of 1m closes, the next hour brought it back by about a third of the
stretch on average; a trend follower there pays the round trip for a coin toss.

So it trades only when the snap-back it expects (a share of the stretch) clears the
round trip (taker fee and slippage, both sides) by a margin, and stands aside:
- in chop or quiet markets, where the price sits near its mean (nothing to fade);
- when the spread is too wide for the edge;
- in a regime too wild for the largest stop the guardrails allow (ATR-based stop
  beyond it), where noise alone would stop the trade out;
- while the move is still running (the last minute pushed further away).
Its TP is the way back to the mean, its SL a multiple of ATR(5m), its time limit an hour
(the snap-back takes that long); low fixed leverage and size keep a losing run small.
"""

from __future__ import annotations

from engine.deciders.base import DeciderResult
from engine.models import Action, Decision, MarketSnapshot, SymbolFeatures


class RuleDecider:
    """Fade a price stretched from its 1-hour EMA when the expected snap-back clears
    the fees; close when it is back at the mean; otherwise stand aside and say why."""

    name = "rules"

    def __init__(
        self,
        *,
        taker_fee_pct: float = 0.055,  # per side (the paper venue's and Bybit's taker fee)
        slippage_pct: float = 0.02,  # per side (the paper venue's 2 bps)
        reversion_share: float = 0.3,  # share of the stretch expected back within the hour
        edge_mult: float = 2.0,  # the expected snap-back must clear the round trip this many times
        max_spread_pct: float = 0.05,
        sl_atr_mult: float = 2.0,
        sl_pct_max: float = 2.0,  # the guardrails' largest stop (Settings.sl_pct_max)
        wild_atr_mult: float = 1.5,  # the largest stop within this many ATR(5m): too wild to trade
        close_at_mean: bool = False,  # True: close once the price is back at its EMA (measured: worse)
        trail: bool = False,  # False: trailing arms only at the TP's ROI, i.e. never before it fills (measured: better)
        chase_share: float = 0.25,  # the last 1m return beyond this share of the stretch, same way: still running
        time_limit_sec: int = 3600,
        leverage: float = 3.0,
        size_pct: float = 10.0,
    ) -> None:
        self.round_trip_pct = 2 * (taker_fee_pct + slippage_pct)
        self.reversion_share = reversion_share
        self.edge_mult = edge_mult
        self.max_spread_pct = max_spread_pct
        self.sl_atr_mult = sl_atr_mult
        self.sl_pct_max = sl_pct_max
        self.wild_atr_mult = wild_atr_mult
        self.close_at_mean = bool(close_at_mean)
        self.trail = bool(trail)
        self.chase_share = chase_share
        self.time_limit_sec = time_limit_sec
        self.leverage = leverage
        self.size_pct = size_pct

    @property
    def min_stretch_pct(self) -> float:
        """The smallest stretch worth fading: its expected snap-back clears the round trip edge_mult times."""
        return self.edge_mult * self.round_trip_pct / self.reversion_share

    async def decide(self, snapshot: MarketSnapshot) -> DeciderResult:
        return DeciderResult(decisions=self.decide_now(snapshot), audit={"model": "rules"})

    def decide_now(self, snapshot: MarketSnapshot) -> list[Decision]:
        held = {p.symbol: p.side for p in snapshot.positions}
        return [self._one(f, held.get(sym), snapshot.ts) for sym, f in sorted(snapshot.symbols.items())]

    def _one(self, f: SymbolFeatures, held: str | None, ts: float) -> Decision:
        def hold(confidence: float, why: str) -> Decision:
            return Decision(symbol=f.symbol, action=Action.HOLD, confidence=confidence, rationale=why,
                            source=self.name, created_at=ts)

        s = f.stretch_pct
        if held is not None:
            # A long faded a drop (stretch < 0): its case is spent once the price is back at the mean.
            if self.close_at_mean and ((s >= 0) if held == "long" else (s <= 0)):
                return Decision(symbol=f.symbol, action=Action.CLOSE, confidence=0.7, source=self.name, created_at=ts,
                                rationale=f"back at its 1-h EMA (stretch {s:+.2f}%): the snap-back is spent")
            return hold(0.5, f"{held} open, price still {abs(s):.2f}% from its 1-h EMA")

        floor = self.min_stretch_pct
        if f.spread_pct > self.max_spread_pct:
            return hold(0.2, f"stand aside: spread {f.spread_pct:.3f}% over {self.max_spread_pct:g}%")
        if abs(s) < floor:
            return hold(0.3, f"stand aside: {s:+.2f}% from its 1-h EMA, under the {floor:.2f}% worth fading "
                             f"(round trip {self.round_trip_pct:.2f}%)")
        if f.atr_pct_5m <= 0:
            return hold(0.2, "stand aside: no ATR yet")
        if self.wild_atr_mult * f.atr_pct_5m > self.sl_pct_max:
            return hold(0.2, f"stand aside: too wild, ATR(5m) {f.atr_pct_5m:.2f}%: the largest stop "
                             f"({self.sl_pct_max:g}%) is within {self.wild_atr_mult:g}×ATR")
        sl = min(self.sl_atr_mult * f.atr_pct_5m, self.sl_pct_max)
        if f.ret_1m_pct * s > 0 and abs(f.ret_1m_pct) > self.chase_share * abs(s):
            return hold(0.3, f"stand aside: still running ({f.ret_1m_pct:+.2f}% in the last minute)")

        expected = self.reversion_share * abs(s)
        ratio = expected / (self.edge_mult * self.round_trip_pct)
        confidence = min(0.6 + 0.1 * (ratio - 1.0), 0.9)
        action = Action.OPEN_SHORT if s > 0 else Action.OPEN_LONG
        where = "above" if s > 0 else "below"
        return Decision(
            symbol=f.symbol,
            action=action,
            confidence=round(confidence, 3),
            leverage=self.leverage,
            size_pct=self.size_pct,
            tp_pct=round(abs(s), 3),
            sl_pct=round(sl, 3),
            time_in_trade_limit_sec=self.time_limit_sec,
            trail_activation_roi=None if self.trail else round(abs(s) * self.leverage, 2),
            rationale=(f"fade: {abs(s):.2f}% {where} its 1-h EMA; expect ~{expected:.2f}% back vs "
                       f"{self.round_trip_pct:.2f}% round trip; TP at the mean, SL {self.sl_atr_mult:g}×ATR(5m)"),
            source=self.name,
            created_at=ts,
        )
