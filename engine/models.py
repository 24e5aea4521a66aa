"""The engine's data: decisions, verdicts, intents, positions, cooldowns, trades, market data.

Everything here is a pydantic model that round-trips through JSON, because the same
objects are written to the state files, sent as events and shown by the console.
Percent fields are in percent, as the original system wrote them: tp_pct=2.0 is 2 %.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Side = Literal["long", "short"]

# Bybit's orderLinkId: at most 36 characters of [A-Za-z0-9_-] (BYBIT_V5.md §4).
ORDER_LINK_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")


class Model(BaseModel):
    """Base for every engine model: NaN and infinity are never valid money."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


# Where new ids come from: random (uuid4), or a counter in a replay, so that the same
# replay gives the same ids and byte-identical reports.
_ids: ContextVar[Iterator[int] | None] = ContextVar("_ids", default=None)


def new_id(prefix: str) -> str:
    """A fresh id valid as a Bybit orderLinkId: prefix + 32 hex digits (≤ 36 chars)."""
    seq = _ids.get()
    ident = f"{prefix}{next(seq):032x}" if seq is not None else f"{prefix}{uuid.uuid4().hex}"
    assert ORDER_LINK_ID.match(ident), ident
    return ident


def sequential_ids() -> object:
    """Make new_id count 1, 2, 3… in this context (a replay); returns a token for reset_ids."""
    return _ids.set(itertools.count(1))


def reset_ids(token: object) -> None:
    _ids.reset(token)  # type: ignore[arg-type]


def side_of_bybit(side: str) -> Side:
    return "long" if side == "Buy" else "short"


def bybit_side(side: Side, closing: bool = False) -> Literal["Buy", "Sell"]:
    """The order side that opens (or, with closing=True, closes) a position of `side`."""
    buy = (side == "long") != closing
    return "Buy" if buy else "Sell"


# --- decisions and verdicts ---------------------------------------------------------


class Action(StrEnum):
    OPEN_LONG = "OPEN_LONG"
    OPEN_SHORT = "OPEN_SHORT"
    CLOSE = "CLOSE"
    HOLD = "HOLD"
    REVERSE = "REVERSE"

    @property
    def opens(self) -> bool:
        return self in (Action.OPEN_LONG, Action.OPEN_SHORT)

    @property
    def side(self) -> Side | None:
        return {"OPEN_LONG": "long", "OPEN_SHORT": "short"}.get(self.value)  # type: ignore[return-value]


class Decision(Model):
    """A scalping decision for one symbol, as a decider proposes it.

    Numbers are accepted however wild (finite, not negative); the guardrails clamp
    them to the allowed ranges and record each clamp. None means "let the engine
    choose" (sizing from confidence, TP/SL from ATR, limits from the settings).
    """

    decision_id: str = Field(default_factory=lambda: new_id("d-"))
    symbol: str
    action: Action
    confidence: float = Field(ge=0.0, le=1.0)
    leverage: float | None = Field(default=None, gt=0)
    size_pct: float | None = Field(default=None, gt=0)
    tp_pct: float | None = Field(default=None, gt=0)
    sl_pct: float | None = Field(default=None, gt=0)
    time_in_trade_limit_sec: int | None = Field(default=None, gt=0)
    cooldown_sec: int | None = Field(default=None, ge=0)
    trail_activation_roi: float | None = Field(default=None, gt=0)
    rationale: str = ""
    source: str = "rules"
    created_at: float = 0.0
    # Problems a decider noticed but that do not invalidate it, shown to the operator,
    # e.g. RATIONALE_CONTRADICTS_ACTION (the action stays authoritative).
    flags: list[str] = []

    @field_validator("symbol")
    @classmethod
    def _symbol_upper(cls, v: str) -> str:
        v = v.strip().upper()
        if not re.fullmatch(r"[A-Z0-9]{2,20}", v):
            raise ValueError(f"not a symbol: {v!r}")
        return v


class Verdict(StrEnum):
    EXECUTE = "EXECUTE"
    CONVERTED = "CONVERTED"
    BLOCKED = "BLOCKED"
    HOLD = "HOLD"


class Clamp(Model):
    """One parameter the guardrails changed, and why."""

    field: str
    original: float | None
    value: float
    why: str


class OrderPlan(Model):
    """What will be sent for an open: sized, rounded, with TP/SL prices."""

    symbol: str
    side: Side
    qty: float
    price: float
    leverage: float
    take_profit: float
    stop_loss: float
    margin: float
    notional: float


class Review(Model):
    """The guardrails' answer: verdict, reason codes, and the decision as it will run."""

    verdict: Verdict
    reasons: list[str] = []
    detail: list[str] = []
    clamps: list[Clamp] = []
    decision: Decision
    order: OrderPlan | None = None

    @property
    def actionable(self) -> bool:
        return self.verdict in (Verdict.EXECUTE, Verdict.CONVERTED)

    def summary(self) -> str:
        if self.verdict is Verdict.CONVERTED:
            return f"CONVERTED: {', '.join(self.reasons)}"
        if self.reasons:
            return f"{self.verdict.value}: {', '.join(self.reasons)}"
        return self.verdict.value


# --- intents ------------------------------------------------------------------------


class IntentStatus(StrEnum):
    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"


class CloseReason(StrEnum):
    TAKE_PROFIT = "TAKE_PROFIT"
    STOP_LOSS = "STOP_LOSS"
    TRAILING_STOP = "TRAILING_STOP"
    TIME_EXIT = "TIME_EXIT"
    FORCE_CLOSE = "FORCE_CLOSE"
    AI_CLOSE = "AI_CLOSE"
    LIQUIDATION = "LIQUIDATION"
    END_OF_DATA = "END_OF_DATA"  # a replay's data ended with the position still open
    # Netted by the late fill of an opposite order of ours (an open given up on that
    # landed after all): one-way mode closes or reduces the position with it.
    LATE_FILL = "LATE_FILL"
    UNKNOWN = "UNKNOWN"


class Intent(Model):
    """An order the engine means to send; its intent_id is the order's orderLinkId."""

    intent_id: str
    kind: Literal["OPEN", "CLOSE"]
    symbol: str
    side: Side  # the position's side (a close of a long sells)
    qty: float
    status: IntentStatus = IntentStatus.PENDING
    created_at: float
    updated_at: float
    decision_id: str | None = None
    leverage: float | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    close_reason: CloseReason | None = None
    order_id: str | None = None
    reason: str = ""
    # When the order request (its latest attempt) left: until sent_at + the venue's
    # landing window it may still land, so the intent stays in flight that long.
    sent_at: float | None = None
    # What the position's metadata will hold once the open fills.
    time_in_trade_limit_sec: int | None = None
    cooldown_sec: int | None = None
    trail_activation_roi: float | None = None
    tp_pct: float | None = None
    sl_pct: float | None = None

    @field_validator("intent_id")
    @classmethod
    def _valid_link_id(cls, v: str) -> str:
        if not ORDER_LINK_ID.match(v):
            raise ValueError("intent_id must be 1-36 characters of [A-Za-z0-9_-] (Bybit orderLinkId)")
        return v


# --- positions, cooldowns, journal --------------------------------------------------


class PositionMeta(Model):
    """What the engine knows about an open position beyond what the venue reports."""

    symbol: str
    side: Side
    opened_at: float
    time_in_trade_limit_sec: int
    cooldown_sec: int | None = None
    tp_pct: float | None = None
    sl_pct: float | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    trail_activation_roi: float | None = None
    trailing_armed: bool = False
    entry_price: float = 0.0
    qty: float = 0.0
    leverage: float = 1.0
    intent_id: str | None = None
    adopted: bool = False
    open_fee: float = 0.0  # USDT paid to open (the close's fee is added when it closes)
    decision_id: str | None = None  # the decision that opened it

    @property
    def due_at(self) -> float:
        """When its time exit falls due: the one rule the monitor, the exit timers and
        the console's countdowns share."""
        return self.opened_at + self.time_in_trade_limit_sec

    def is_due(self, now: float) -> bool:
        return now >= self.due_at

    def seconds_left(self, now: float) -> float:
        return self.due_at - now


class Cooldown(Model):
    symbol: str
    side: Side | None = None
    reason: str
    started_at: float
    until: float

    def active(self, now: float) -> bool:
        return now < self.until

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.until - now)


class Trade(Model):
    """A closed position, as the journal records it."""

    symbol: str
    side: Side
    qty: float
    entry_price: float
    exit_price: float
    opened_at: float
    closed_at: float
    pnl: float
    roi_pct: float
    duration_sec: float
    reason: CloseReason
    leverage: float = 1.0
    intent_id: str | None = None
    adopted: bool = False
    # pnl is net of fees (as Bybit's closedPnl); fees are the open's and the close's, in USDT.
    fees: float = 0.0
    cooldown_sec: int | None = None  # the cooldown this close started
    cooldown_why: str = ""  # why it differs from the decision's (the adaptive cooldown), if it does
    decision_id: str | None = None  # the decision that opened the trade
    close_decision_id: str | None = None  # the decision that closed it (AI_CLOSE), if any


class EntryBlock(Model):
    """What would block an entry of a symbol now: a guardrail's reason code and its line
    (engine.guardrails.entry_blocks). `until`: when it lifts by itself (a cooldown's end)."""

    code: str
    text: str
    until: float | None = None


class DecisionStatus(StrEnum):
    """What became of a decision. The LLM_* and BUDGET_SPENT ones are answers the engine
    would not trade on (the AI decider's InvalidDecision codes), kept as a HOLD."""

    PROPOSED = "PROPOSED"  # APPROVE mode with nobody attached to approve it: logged only
    PENDING = "PENDING"  # waiting for the operator
    EXECUTING = "EXECUTING"  # sent, its outcome being looked up
    EXECUTED = "EXECUTED"
    BLOCKED = "BLOCKED"  # by a guardrail
    HOLD = "HOLD"
    REJECTED = "REJECTED"  # by the operator
    EXPIRED = "EXPIRED"  # not approved in time, replaced, or left by a restart
    FAILED = "FAILED"
    LLM_INVALID = "LLM_INVALID"
    LLM_REFUSAL = "LLM_REFUSAL"
    LLM_TIMEOUT = "LLM_TIMEOUT"
    LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
    LLM_AUTH = "LLM_AUTH"
    BUDGET_SPENT = "BUDGET_SPENT"

    @property
    def unusable(self) -> bool:
        """An answer the engine would not trade on."""
        return self.startswith("LLM_") or self is DecisionStatus.BUDGET_SPENT


class DecisionRecord(Model):
    """A decision and what became of it: the history the console and the audit show."""

    decision: Decision
    review: Review | None = None
    status: DecisionStatus
    message: str = ""
    recorded_at: float
    intent_id: str | None = None
    audit: dict[str, object] = {}
    inputs: SymbolFeatures | None = None  # the market the decider saw for this symbol


# --- venue data ---------------------------------------------------------------------


class Instrument(Model):
    symbol: str
    qty_step: float
    min_qty: float
    min_notional: float
    tick_size: float
    max_leverage: float = 100.0


class Kline(Model):
    start: float  # epoch seconds of the candle's open
    open: float
    high: float
    low: float
    close: float
    volume: float


class Ticker(Model):
    symbol: str
    last: float
    mark: float
    bid: float
    ask: float
    funding_rate: float = 0.0


class Balance(Model):
    equity: float
    available: float


class VenuePosition(Model):
    symbol: str
    side: Side
    size: float
    entry_price: float
    mark_price: float
    leverage: float
    unrealised_pnl: float
    liq_price: float | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    trailing_stop: float | None = None
    position_idx: int = 0  # Bybit positionIdx: 0 one-way, 1 hedge long, 2 hedge short

    @property
    def margin(self) -> float:
        return self.size * self.entry_price / self.leverage if self.leverage else 0.0

    @property
    def roi_pct(self) -> float:
        m = self.margin
        return self.unrealised_pnl / m * 100 if m else 0.0


class OrderRequest(Model):
    symbol: str
    side: Literal["Buy", "Sell"]
    qty: float
    order_link_id: str
    reduce_only: bool = False
    take_profit: float | None = None
    stop_loss: float | None = None
    position_idx: int | None = None  # a close: the position's own positionIdx (None: the venue decides)


class OrderInfo(Model):
    """An order as the venue knows it (after placing, or looked up by orderLinkId)."""

    order_link_id: str
    order_id: str
    symbol: str
    side: Literal["Buy", "Sell"]
    status: str  # Bybit orderStatus: New, Filled, PartiallyFilled, Cancelled, Rejected, ...
    qty: float
    filled_qty: float = 0.0
    avg_price: float = 0.0
    reduce_only: bool = False
    realised_pnl: float | None = None
    fee: float = 0.0  # USDT paid for this order's fills (Bybit cumExecFee)
    reject_reason: str = ""

    @property
    def filled(self) -> bool:
        return self.status == "Filled" or (self.filled_qty > 0 and self.status != "Rejected")


class ClosedTrade(Model):
    """A close the venue reports: how, at what price, for what PnL."""

    symbol: str
    side: Side  # the side of the position that closed
    qty: float
    entry_price: float
    exit_price: float
    pnl: float
    reason: CloseReason
    closed_at: float
    order_id: str = ""
    fees: float = 0.0  # open and close fees of the closed size (Bybit openFee + closeFee)
    order_link_id: str = ""  # the closing order's orderLinkId, when the venue tells it


# --- what deciders and guardrails see -------------------------------------------------


class SymbolFeatures(Model):
    """One symbol's market, summarised from 1m/5m/15m klines and the ticker."""

    symbol: str
    price: float
    bid: float
    ask: float
    spread_pct: float
    funding_rate: float = 0.0
    atr_pct_1m: float  # ATR(14) on 1m candles, in percent of price
    atr_pct_1m_median: float = 0.0  # median of ATR(14, 1m) % over the last 24 h of 1m candles (0: unknown)
    atr_pct_5m: float
    ret_1m_pct: float
    ret_5m_pct: float
    ret_15m_pct: float
    ret_1h_pct: float
    last_range_1m_pct: float  # the last closed 1m candle's high-low, in percent
    rsi_1m: float
    rsi_5m: float
    ema_slope_1m: float  # fast EMA's change per bar, in percent
    ema_slope_5m: float
    ema_slope_15m: float
    trend_1m: int  # +1 fast EMA above slow, -1 below, 0 flat
    trend_5m: int
    trend_15m: int
    volume_change_pct: float  # last 5 closed 1m candles against the 20 before
    # The price against the EMA(60) of 1m closes, in percent: how far it ran from its
    # 1-hour EMA (+ above, − below). 0 where not computed (older records).
    stretch_pct: float = 0.0


class MarketSnapshot(Model):
    """Everything a decider sees in one cycle; built by the engine, the same for every decider."""

    ts: float
    symbols: dict[str, SymbolFeatures]
    balance: Balance
    positions: list[VenuePosition] = []
    metas: list[PositionMeta] = []
    cooldowns: list[Cooldown] = []
    recent_trades: list[Trade] = []
    streamed: bool = False  # the prices and the account from the live streams, not a REST read


# --- the paper venue's account (kept in the state store so it survives restarts) ----------


class PaperPosition(Model):
    symbol: str
    side: Side
    size: float
    entry: float
    leverage: float
    open_fee: float
    since: float = 0.0
    take_profit: float | None = None
    stop_loss: float | None = None
    trail_dist: float | None = None
    trail_active_price: float | None = None
    trail_armed: bool = False
    trail_best: float = 0.0


class PaperAccount(Model):
    """A paper venue's whole account: wallet, leverage, positions with their TP/SL and
    trailing state, the newest orders (look-ups by orderLinkId after a restart) and closes."""

    venue: str  # sim or paper: each keeps its own account
    wallet: float
    leverage: dict[str, float] = {}
    positions: list[PaperPosition] = []
    orders: list[OrderInfo] = []
    closed: list[ClosedTrade] = []
    order_seq: int = 0
    saved_at: float = 0.0


# --- what the account-wide risk limits remember (engine.risk) ------------------------------


class RiskState(Model):
    """The risk limits' memory, kept in the state store: a restart neither forgets a limit
    that tripped nor starts the day or the equity peak again."""

    account: str = "main"  # one record per state directory
    day: float = 0.0  # 00:00 UTC of the day the day's figures belong to
    day_start_equity: float = 0.0  # equity at the engine's first look that day (0: not seen yet)
    opens_today: int = 0  # positions opened that day (MAX_TRADES_PER_DAY)
    daily_loss_hit: bool = False  # DAILY_LOSS_LIMIT tripped that day: it holds until the next day
    peak_equity: float = 0.0  # the highest equity seen since the start or the last resume
    drawdown_pause: str = ""  # MAX_DRAWDOWN paused entries, and why ("": not paused)
    drawdown_paused_at: float | None = None


DecisionRecord.model_rebuild()  # its inputs are SymbolFeatures, defined below it
