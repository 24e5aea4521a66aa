"""PaperVenue: simulated fills on a SimFeed, with Bybit's rules and codes.

One-way positions (positionIdx=0), market orders with adverse slippage and the taker
fee, per-symbol leverage, attached and separate TP/SL, trailing stops and a simple
isolated liquidation price. Before answering anything the venue brings the feed to
the clock's time and walks the price path since its last look, so a stop is hit if
the path crossed it, however far the clock jumped.

It also lets the engine's tests inject faults: `fail_next("place_order", exc,
after=True)` raises after the order was filled, as a timeout after the request
landed does on the real venue.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import uuid
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from engine.clock import Clock
from engine.models import (
    Balance,
    ClosedTrade,
    CloseReason,
    Instrument,
    Kline,
    OrderInfo,
    OrderRequest,
    PaperAccount,
    PaperPosition,
    Side,
    Ticker,
    VenuePosition,
)
from engine.units import on_step, round_to_tick
from engine.venues.base import OrderRejected
from engine.venues.feed import Feed
from engine.venues.simfeed import TICK_BUFFER_SEC

MAINTENANCE_MARGIN_RATE = 0.005
DEFAULT_LEVERAGE = 10.0
# The feed keeps TICK_BUFFER_SEC of ticks; advancing in smaller steps and scanning
# after each means no tick is ever missed, however far the clock jumps.
SYNC_STEP_SEC = TICK_BUFFER_SEC // 2
MAX_ORDERS = 10_000  # orderLinkIds remembered (duplicate check, lookups)
MAX_CLOSED = 5_000  # closed trades remembered
KEEP_ORDERS = 200  # orders and closes kept across a restart (look-ups by orderLinkId, recent closes)


class AccountBook(Protocol):
    """Where a paper account is kept between runs (the state store)."""

    def load(self, venue: str) -> PaperAccount | None: ...

    def save(self, account: PaperAccount) -> None: ...

# Bybit-like filters (BYBIT_V5.md §4 lotSizeFilter / priceFilter / leverageFilter).
INSTRUMENTS: dict[str, Instrument] = {
    "BTCUSDT": Instrument(symbol="BTCUSDT", qty_step=0.001, min_qty=0.001, min_notional=5, tick_size=0.1),
    "ETHUSDT": Instrument(symbol="ETHUSDT", qty_step=0.01, min_qty=0.01, min_notional=5, tick_size=0.01),
    "SOLUSDT": Instrument(
        symbol="SOLUSDT", qty_step=0.1, min_qty=0.1, min_notional=5, tick_size=0.01, max_leverage=75
    ),
}


def default_instrument(symbol: str) -> Instrument:
    return Instrument(symbol=symbol, qty_step=0.01, min_qty=0.01, min_notional=5, tick_size=0.01, max_leverage=50)


FAULT_KINDS = frozenset(
    {
        "instruments",
        "klines",
        "ticker",
        "balance",
        "positions",
        "set_leverage",
        "place_order",
        "order_by_link_id",
        "set_trading_stop",
        "closed_trades",
    }
)


@dataclass
class _Fault:
    exc: Exception
    after: bool


@dataclass
class _Position:
    symbol: str
    side: Side
    size: float
    entry: float
    leverage: float
    open_fee: float  # fee paid to open the size still held: Bybit nets it into closedPnl
    since: float = 0.0  # feed time of its fill: the price path before it is not its own
    take_profit: float | None = None
    stop_loss: float | None = None
    trail_dist: float | None = None
    trail_active_price: float | None = None
    trail_armed: bool = False
    trail_best: float = 0.0

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1

    @property
    def liq_price(self) -> float:
        """Isolated-margin liquidation: the margin minus maintenance is lost."""
        return self.entry * (1 - self.sign * (1 / self.leverage - MAINTENANCE_MARGIN_RATE))

    @property
    def margin(self) -> float:
        return self.size * self.entry / self.leverage

    def upnl(self, mark: float) -> float:
        return self.sign * (mark - self.entry) * self.size

    def trail_stop(self) -> float | None:
        if not (self.trail_armed and self.trail_dist):
            return None
        return self.trail_best - self.sign * self.trail_dist

    def arm_trailing(self, dist: float | None, active_price: float | None, last: float) -> None:
        self.trail_dist, self.trail_active_price = dist, active_price
        # Without an activation price Bybit trails from the current price at once.
        self.trail_armed = bool(dist) and active_price is None
        self.trail_best = last

    def scan(self, path: Sequence[tuple[float, ...]]) -> tuple[float, float, CloseReason] | None:
        """The first trigger the path hits: (feed time, fill price before slippage, reason).

        The path is last prices (t, price), or (t, price, jumped) where jumped marks a
        price reached by a jump (a candle's open after the previous close) rather than
        by trading through the prices between. Bybit's TP/SL trigger on LastPrice by
        default; real liquidation watches the mark price (in the sim mark follows last
        closely). A TP fills at its price; a stop at its price, unless the price jumped
        past it, then at the price it jumped to (a stop-market after a gap); a
        liquidation at its price (the margin is gone either way)."""
        s = self.sign
        liq = self.liq_price
        for point in path:
            t, p = point[0], point[1]
            if t < self.since:
                continue
            jumped = len(point) > 2 and point[2]
            if self.trail_dist:
                if not self.trail_armed:
                    if self.trail_active_price is None or s * (p - self.trail_active_price) >= 0:
                        self.trail_armed, self.trail_best = True, p
                elif s * (p - self.trail_best) > 0:
                    self.trail_best = p
            stops: list[tuple[float, CloseReason]] = []
            if self.stop_loss is not None and s * (p - self.stop_loss) <= 0:
                stops.append((self.stop_loss, CloseReason.STOP_LOSS))
            trail = self.trail_stop()
            if trail is not None and s * (p - trail) <= 0:
                stops.append((trail, CloseReason.TRAILING_STOP))
            if s * (p - liq) <= 0:
                stops.append((liq, CloseReason.LIQUIDATION))
            if stops:
                # Within one tick the price moved against us through every level in
                # `stops`; the one nearest the entry side was crossed first.
                level, reason = max(stops, key=lambda x: s * x[0])
                if jumped and reason is not CloseReason.LIQUIDATION:
                    level = min(level, p) if s > 0 else max(level, p)
                return t, level, reason
            if self.take_profit is not None and s * (p - self.take_profit) >= 0:
                return t, self.take_profit, CloseReason.TAKE_PROFIT
        return None


class PaperVenue:
    """A Venue over a SimFeed: name "sim" or "paper"; thread-safe."""

    def __init__(
        self,
        feed: Feed,
        clock: Clock,
        equity: float = 10_000.0,
        taker_fee: float = 0.00055,
        slippage_bps: float = 2.0,
        name: str = "sim",
        instruments: dict[str, Instrument] | None = None,
        account: AccountBook | None = None,
    ) -> None:
        self.name = name
        self.feed = feed
        self.clock = clock
        self.taker_fee = taker_fee
        self.slippage = slippage_bps / 10_000
        self._wallet = float(equity)
        self._instruments = {**INSTRUMENTS, **(instruments or {})}
        self._leverage: dict[str, float] = {}
        self._positions: dict[str, _Position] = {}
        self._orders: OrderedDict[str, OrderInfo] = OrderedDict()  # by orderLinkId
        self._orders_by_id: OrderedDict[str, OrderInfo] = OrderedDict()
        self._closed: deque[ClosedTrade] = deque(maxlen=MAX_CLOSED)
        self._faults: dict[str, deque[_Fault]] = {k: deque() for k in FAULT_KINDS}
        self._order_seq = 0
        self._id_prefix = zlib.crc32(name.encode()) << 96
        self._lock = threading.Lock()
        self._now = clock.now()  # clock time of the current call
        self._seen = feed.now  # feed time up to which triggers were processed
        self._book = account
        self._saved: PaperAccount | None = None
        with self._lock:
            # The saved account first: the market then catches up to now through its
            # positions' stops, so a stop hit while scalpdesk was down is not missed.
            if account is not None:
                self._restore(account.load(name))
            self._sync()
            self._save()

    # --- the account across restarts --------------------------------------------------

    def _state(self) -> PaperAccount:
        return PaperAccount(
            venue=self.name,
            wallet=self._wallet,
            leverage=dict(self._leverage),
            positions=[PaperPosition(**dataclasses.asdict(p)) for p in self._positions.values()],
            orders=list(self._orders.values())[-KEEP_ORDERS:],
            closed=list(self._closed)[-KEEP_ORDERS:],
            order_seq=self._order_seq,
        )

    def _restore(self, acct: PaperAccount | None) -> None:
        if acct is None:
            return
        self._wallet = acct.wallet
        self._leverage = dict(acct.leverage)
        self._positions = {p.symbol: _Position(**p.model_dump()) for p in acct.positions}
        for info in acct.orders:
            self._store(info)
        self._closed.extend(acct.closed)
        self._order_seq = acct.order_seq
        self._saved = self._state()

    def _save(self) -> None:
        """Write the account when a call changed it (balance, positions and their stops,
        leverage, orders): the next start goes on from here."""
        if self._book is None:
            return
        state = self._state()
        if state != self._saved:
            self._book.save(state.model_copy(update={"saved_at": self._now}))
            self._saved = state

    # --- plumbing -----------------------------------------------------------------

    def fail_next(self, kind: str, exc: Exception, after: bool = False) -> None:
        """Make the next `kind` call raise `exc`: before doing anything, or with
        after=True once the call has taken effect (a timeout after the request landed)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown call {kind!r}; one of {sorted(FAULT_KINDS)}")
        with self._lock:
            self._faults[kind].append(_Fault(exc, after))

    @contextmanager
    def _call(self, kind: str) -> Iterator[None]:
        """Lock, play a queued fault, sync the market; raise an after-fault on success."""
        with self._lock:
            fault = self._faults[kind].popleft() if self._faults[kind] else None
            if fault is not None and not fault.after:
                raise fault.exc
            self._sync()
            try:
                yield
            finally:
                self._save()
            if fault is not None:
                raise fault.exc

    def _sync(self) -> None:
        self._now = self.clock.now()
        target = self.feed.feed_time_at(self._now)
        while self.feed.now < target:
            self.feed.advance_to(min(target, self.feed.now + SYNC_STEP_SEC))
            self._process_triggers()
        self._process_triggers()  # the feed may have been moved by someone else

    def _process_triggers(self) -> None:
        for symbol, pos in list(self._positions.items()):
            hit = pos.scan(self.feed.path_since(symbol, self._seen, side=pos.side))
            if hit is None:
                continue
            t, level, reason = hit
            # TP is a limit-like fill at its price; stops and liquidation slip.
            price = level if reason is CloseReason.TAKE_PROFIT else self._slipped(level, pos.side, closing=True)
            price = self._round_tick(symbol, price)
            info = self._new_order(symbol, pos.side, pos.size, price, closing=True, link_id="")
            net, fee = self._fill_close(pos, pos.size, price, info.order_id, reason, self.feed.clock_time_at(t))
            self._store(info.model_copy(update={"realised_pnl": net, "fee": fee}))
        self._seen = self.feed.now

    def _new_order(
        self, symbol: str, side: Side, qty: float, price: float, *, closing: bool, link_id: str
    ) -> OrderInfo:
        self._order_seq += 1
        buy = (side == "long") != closing
        return OrderInfo(
            order_link_id=link_id,
            order_id=str(uuid.UUID(int=self._id_prefix | self._order_seq)),
            symbol=symbol,
            side="Buy" if buy else "Sell",
            status="Filled",
            qty=qty,
            filled_qty=qty,
            avg_price=price,
            reduce_only=closing,
        )

    def _store(self, info: OrderInfo) -> None:
        if info.order_link_id:
            self._orders[info.order_link_id] = info
            if len(self._orders) > MAX_ORDERS:
                self._orders.popitem(last=False)
        self._orders_by_id[info.order_id] = info
        if len(self._orders_by_id) > MAX_ORDERS:
            self._orders_by_id.popitem(last=False)

    def _fill_close(
        self, pos: _Position, qty: float, price: float, order_id: str, reason: CloseReason, at: float
    ) -> tuple[float, float]:
        """Close `qty` of `pos` at `price`: realise PnL, pay the fee, record it. Returns
        the closed PnL net of the open and close fees, as Bybit's closedPnl, and the close's fee."""
        step = self._instrument(pos.symbol).qty_step
        gross = pos.sign * (price - pos.entry) * qty
        fee = qty * price * self.taker_fee
        open_fee = pos.open_fee * qty / pos.size
        self._wallet += gross - fee
        net = gross - fee - open_fee
        pos.open_fee -= open_fee
        pos.size = round_to_tick(pos.size - qty, step)
        if pos.size <= 0:
            del self._positions[pos.symbol]
        self._closed.append(
            ClosedTrade(
                symbol=pos.symbol,
                side=pos.side,
                qty=qty,
                entry_price=pos.entry,
                exit_price=price,
                pnl=net,
                reason=reason,
                closed_at=at,
                order_id=order_id,
                fees=fee + open_fee,
            )
        )
        return net, fee

    # --- market helpers -------------------------------------------------------------

    def _check_symbol(self, symbol: str) -> None:
        if symbol not in self.feed.symbols:
            raise OrderRejected(f"params error: symbol invalid: {symbol}", code=10001)

    def _instrument(self, symbol: str) -> Instrument:
        return self._instruments.get(symbol) or default_instrument(symbol)

    def _round_tick(self, symbol: str, price: float) -> float:
        return round_to_tick(price, self._instrument(symbol).tick_size)

    def _slipped(self, price: float, side: Side, *, closing: bool) -> float:
        """Adverse slippage: buys fill higher, sells lower."""
        buy = (side == "long") != closing
        return price * (1 + self.slippage) if buy else price * (1 - self.slippage)

    def _mark(self, symbol: str) -> float:
        return self.feed.ticker(symbol).mark

    def _available(self, *, without: str | None = None, wallet_delta: float = 0.0) -> float:
        """Equity minus used margin, optionally as if `without`'s position were closed."""
        equity = self._wallet + wallet_delta
        used = 0.0
        for sym, p in self._positions.items():
            if sym != without:
                equity += p.upnl(self._mark(sym))
                used += p.margin
        return max(0.0, equity - used)

    # --- the Venue protocol ---------------------------------------------------------

    def instruments(self, symbols: list[str]) -> dict[str, Instrument]:
        """Filters of the symbols the feed has (Bybit leaves unknown symbols out)."""
        with self._call("instruments"):
            known = set(self.feed.symbols)
            return {s: self._instrument(s) for s in symbols if s in known}

    def klines(self, symbol: str, interval_min: int, limit: int) -> list[Kline]:
        with self._call("klines"):
            self._check_symbol(symbol)
            return self.feed.klines(symbol, interval_min, limit)

    def ticker(self, symbol: str) -> Ticker:
        with self._call("ticker"):
            self._check_symbol(symbol)
            return self.feed.ticker(symbol)

    def balance(self) -> Balance:
        with self._call("balance"):
            equity = self._wallet + sum(p.upnl(self._mark(s)) for s, p in self._positions.items())
            return Balance(equity=equity, available=self._available())

    def positions(self) -> list[VenuePosition]:
        with self._call("positions"):
            out = []
            for sym in sorted(self._positions):
                p = self._positions[sym]
                mark = self._mark(sym)
                out.append(
                    VenuePosition(
                        symbol=sym,
                        side=p.side,
                        size=p.size,
                        entry_price=p.entry,
                        mark_price=mark,
                        leverage=p.leverage,
                        unrealised_pnl=p.upnl(mark),
                        liq_price=self._round_tick(sym, p.liq_price),
                        take_profit=p.take_profit,
                        stop_loss=p.stop_loss,
                        trailing_stop=p.trail_dist,
                    )
                )
            return out

    def set_leverage(self, symbol: str, leverage: float) -> None:
        """Per symbol, as Bybit's buyLeverage = sellLeverage; an open position takes it too."""
        with self._call("set_leverage"):
            self._check_symbol(symbol)
            max_lev = self._instrument(symbol).max_leverage
            if not 1 <= leverage <= max_lev:
                raise OrderRejected(f"leverage {leverage} out of range [1, {max_lev}]", code=10001)
            self._leverage[symbol] = float(leverage)
            if symbol in self._positions:
                self._positions[symbol].leverage = float(leverage)

    def place_order(self, order: OrderRequest) -> OrderInfo:
        """A market order, filled at once or rejected with Bybit's retCode."""
        with self._call("place_order"):
            return self._place(order)

    def _place(self, order: OrderRequest) -> OrderInfo:
        sym = order.symbol
        self._check_symbol(sym)
        if order.order_link_id in self._orders:
            raise OrderRejected("OrderLinkedID is duplicate", code=110072)
        inst = self._instrument(sym)
        qty = order.qty
        if qty <= 0 or not on_step(qty, inst.qty_step):
            raise OrderRejected(f"Qty invalid: {qty} is not a multiple of qtyStep {inst.qty_step}", code=10001)
        if qty < inst.min_qty - 1e-12:
            raise OrderRejected(f"Qty invalid: {qty} below minOrderQty {inst.min_qty}", code=10001)
        qty = round_to_tick(qty, inst.qty_step)
        side: Side = "long" if order.side == "Buy" else "short"
        pos = self._positions.get(sym)
        last = self.feed.price(sym)
        if order.reduce_only:
            if order.take_profit is not None or order.stop_loss is not None:
                raise OrderRejected("TP/SL cannot be attached to a reduce-only order", code=10001)
            if pos is None:
                raise OrderRejected("reduce-only order rejected: current position is zero", code=110017)
            if pos.side == side:
                raise OrderRejected("reduce-only order has same side with current position", code=110017)
            qty = min(qty, pos.size)  # Bybit trims a reduce-only order to the position
        elif qty * last < inst.min_notional:
            raise OrderRejected(
                f"order value {qty * last:.2f} below minNotionalValue {inst.min_notional}", code=110094
            )

        # The next available price: now on a tick feed, the next candle's open on candles.
        price = self._round_tick(sym, self._slipped(self.feed.fill_price(sym), side, closing=False))
        close_qty = min(qty, pos.size) if pos is not None and pos.side != side else 0.0
        open_qty = round_to_tick(qty - close_qty, inst.qty_step)
        leverage = self._leverage.get(sym, DEFAULT_LEVERAGE)
        if open_qty > 0:
            self._check_tpsl(side, price, order.take_profit, order.stop_loss)
            if pos is not None and close_qty > 0:  # a flip: the close frees its margin first
                freed = pos.sign * (price - pos.entry) * close_qty - close_qty * price * self.taker_fee
                available = self._available(without=sym, wallet_delta=freed)
            else:
                available = self._available()
            cost = open_qty * price / leverage + open_qty * price * self.taker_fee
            if cost > available + 1e-9:
                raise OrderRejected("ab not enough for new order", code=110007)

        # Validated: from here on the order fills.
        info = self._new_order(sym, side, qty, price, closing=False, link_id=order.order_link_id)
        info = info.model_copy(update={"reduce_only": order.reduce_only})
        realised: float | None = None
        fees = 0.0
        if close_qty > 0 and pos is not None:
            # The engine knows why it closed; the venue does not.
            realised, fees = self._fill_close(pos, close_qty, price, info.order_id, CloseReason.UNKNOWN, self._now)
        if open_qty > 0:
            fee = open_qty * price * self.taker_fee
            fees += fee
            self._wallet -= fee
            cur = self._positions.get(sym)
            if cur is None:
                cur = _Position(sym, side, open_qty, price, leverage, fee, since=self.feed.now)
                self._positions[sym] = cur
            else:  # same direction: add at the average entry
                size = round_to_tick(cur.size + open_qty, inst.qty_step)
                cur.entry = (cur.entry * cur.size + price * open_qty) / size
                cur.size = size
                cur.open_fee += fee
            if order.take_profit is not None:
                cur.take_profit = order.take_profit
            if order.stop_loss is not None:
                cur.stop_loss = order.stop_loss
        info = info.model_copy(update={"realised_pnl": realised, "fee": fees})
        self._store(info)
        return info

    @staticmethod
    def _check_tpsl(side: Side, base: float, tp: float | None, sl: float | None) -> None:
        """Bybit refuses a TP or SL on the wrong side of the price (10001)."""
        s = 1 if side == "long" else -1
        if tp is not None and s * (tp - base) <= 0:
            word = "higher" if s > 0 else "lower"
            msg = f"TakeProfit:{tp} set for {side} position should be {word} than base_price:{base}"
            raise OrderRejected(msg, code=10001)
        if sl is not None and s * (sl - base) >= 0:
            word = "lower" if s > 0 else "higher"
            msg = f"StopLoss:{sl} set for {side} position should be {word} than base_price:{base}"
            raise OrderRejected(msg, code=10001)

    def order_by_link_id(self, symbol: str, order_link_id: str) -> OrderInfo | None:
        with self._call("order_by_link_id"):
            info = self._orders.get(order_link_id)
            return info if info is not None and info.symbol == symbol else None

    def order_by_id(self, symbol: str, order_id: str) -> OrderInfo | None:
        """An order by the venue's orderId (also the system orders of TP/SL/liquidation)."""
        with self._lock:
            info = self._orders_by_id.get(order_id)
            return info if info is not None and info.symbol == symbol else None

    def set_trading_stop(
        self,
        symbol: str,
        *,
        trailing_stop: float | None = None,
        active_price: float | None = None,
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> None:
        """Full-position TP/SL/trailing as Bybit: None leaves a value, 0 cancels it;
        trailing_stop is a price distance, armed at active_price (or at once)."""
        with self._call("set_trading_stop"):
            self._check_symbol(symbol)
            pos = self._positions.get(symbol)
            if pos is None:
                raise OrderRejected("can not set tp/sl/ts for zero position", code=10001)
            last = self.feed.price(symbol)
            # float(x) or None: 0 and "0" cancel, as on Bybit.
            tp = pos.take_profit if take_profit is None else float(take_profit) or None
            sl = pos.stop_loss if stop_loss is None else float(stop_loss) or None
            self._check_tpsl(
                pos.side,
                last,
                tp if take_profit is not None else None,
                sl if stop_loss is not None else None,
            )
            if trailing_stop is not None:
                dist = float(trailing_stop) or None
                if dist is not None and (not math.isfinite(dist) or dist < 0):
                    raise OrderRejected(f"trailing stop {trailing_stop} must be a positive distance", code=10001)
                active = float(active_price) or None if active_price is not None else None
                pos.arm_trailing(dist, active, last)
            pos.take_profit, pos.stop_loss = tp, sl

    def closed_trades(self, symbol: str, since: float) -> list[ClosedTrade]:
        """Closes of `symbol` at or after clock time `since`, newest first."""
        with self._call("closed_trades"):
            return [c for c in reversed(self._closed) if c.symbol == symbol and c.closed_at >= since]

    def close(self) -> None:
        """Save the account with the time it was last seen (the engine is stopping)."""
        with self._lock:
            if self._book is not None:
                self._sync()
                state = self._state()
                self._book.save(state.model_copy(update={"saved_at": self._now}))
                self._saved = state

    # --- for demos and tests -------------------------------------------------------

    @property
    def wallet(self) -> float:
        """Wallet balance: deposits + realised PnL − fees (equity without unrealised PnL)."""
        with self._lock:
            return self._wallet
