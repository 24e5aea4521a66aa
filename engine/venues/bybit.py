"""BybitVenue: the Venue protocol on Bybit V5 (linear USDT perpetuals) through pybit.

Orders are market orders whose orderLinkId is the intent id. The rules that keep an
order from being placed twice:

- A refusal (retCode) means nothing happened: OrderRejected with Bybit's code.
- 10006 and 5xx: back off (the rate-limit reset header when there is one) and send
  again with the same orderLinkId, for at most venue_retry_giveup_sec; a 5xx may have
  reached the matching engine, so the order is looked up before each resend.
- No answer (timeout, connection error): the outcome is unknown. The order is looked
  up by orderLinkId until it is found, or until it is certainly absent: Bybit refuses
  a request whose timestamp is older than recv_window, so once our (server-synced)
  clock is past the send time + recv_window + a settle margin and the lookups still
  miss, the first request can no longer land. Only then is it sent again, with the
  same orderLinkId (a late twin would get 110072). After order_unknown_timeout_sec it
  gives up with OutcomeUnknown; the engine keeps the intent EXECUTING, then FAILED.
- 110072 (duplicate orderLinkId): it was placed; the lookup returns it.
- 10002: resync with /v5/market/time once, then send again (it was refused).
- 10003/10004/10005: AuthError, remembered: no further private call is made.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from engine.models import (
    Balance,
    ClosedTrade,
    Instrument,
    Kline,
    OrderInfo,
    OrderRequest,
    Ticker,
    VenuePosition,
)
from engine.venues import bybit_closes
from engine.venues import bybit_parse as parse
from engine.venues.base import AuthError, OrderRejected, OutcomeUnknown, VenueError
from engine.venues.bybit_http import (
    TIME_WINDOW,
    ApiKeys,
    BybitClient,
    Busy,
    NoAnswer,
    Refused,
    backoff,
)

log = logging.getLogger(__name__)

CATEGORY = "linear"
SETTLE_MS = 1500  # after send + recv_window: a landed order shows in the lookups by then
CONFIRM_SEC = 3.0  # how long an acknowledged market order may take to show as filled
INSTRUMENT_TTL_SEC = 600.0
NOT_MODIFIED = {110025, 110043, 34040}  # mode / leverage / TP-SL already so: success
DUPLICATE = 110072


class BybitVenue:
    """Bybit testnet, demo trading or mainnet ("live"); thread-safe, blocking."""

    def __init__(
        self,
        name: str,
        keys: ApiKeys | None,
        *,
        base_url: str | None = None,
        timeout_sec: float = 10.0,
        recv_window_ms: int = 5000,
        unknown_timeout_sec: float = 60.0,
        giveup_sec: float = 30.0,
        hedge_mode: bool = False,
    ) -> None:
        if name not in ("testnet", "demo", "live"):
            raise ValueError(f"BybitVenue is testnet, demo or live, not {name!r}")
        self.name = name
        self.client = BybitClient(name, keys, base_url=base_url, timeout_sec=timeout_sec, recv_window_ms=recv_window_ms)
        self.unknown_timeout_sec = unknown_timeout_sec
        self.giveup_sec = giveup_sec
        self.hedge_mode = hedge_mode
        self._instruments: dict[str, tuple[float, Instrument]] = {}
        self._lock = threading.Lock()
        self._mode_checked = False
        self._hedge_account = hedge_mode
        self.refusal = ""  # why opens are refused (hedge account without BYBIT_HEDGE_MODE), empty if fine

    @classmethod
    def from_settings(cls, settings: Any, keys: ApiKeys | None) -> "BybitVenue":
        return cls(
            settings.venue,
            keys,
            base_url=settings.bybit_base_url,
            timeout_sec=settings.bybit_timeout_sec,
            recv_window_ms=settings.bybit_recv_window_ms,
            unknown_timeout_sec=settings.order_unknown_timeout_sec,
            giveup_sec=settings.venue_retry_giveup_sec,
            hedge_mode=settings.hedge_mode,
        )

    def __repr__(self) -> str:
        return f"BybitVenue({self.name}, {self.client.endpoint})"

    # --- requests -------------------------------------------------------------------

    def _req(self, method: str, *, private: bool = True, write: bool = False, ok: frozenset[int] = frozenset(),
             **params: Any) -> dict[str, Any]:
        """A call with the backoff (10006/5xx, bounded) and the 10002 resync; a refusal
        is OrderRejected for a write, VenueError for a read; codes in `ok` are success."""
        deadline = time.monotonic() + self.giveup_sec
        resynced = False
        attempt = 0
        while True:
            try:
                return self.client.call(method, private=private, **params)
            except Refused as e:
                if e.code in ok:
                    return {}
                if e.code == TIME_WINDOW and not resynced:
                    resynced = True
                    self._resync(e.message)
                    continue
                raise (OrderRejected if write else VenueError)(e.message, code=e.code) from None
            except Busy as e:
                wait = max(e.wait, backoff(attempt)) if e.maybe_seen else e.wait
                attempt += 1
                if time.monotonic() + wait > deadline:
                    raise VenueError(f"Bybit busy for {self.giveup_sec:g}s, gave up: {e.message}", code=e.code) from None
                log.warning("Bybit %s: %s; retrying in %.2fs", method, e, wait)
                time.sleep(wait)
            except NoAnswer as e:
                raise VenueError(f"no answer from Bybit ({method}): {e}") from None

    def _resync(self, why: str) -> None:
        try:
            offset = self.client.sync_time()
        except (Refused, Busy, NoAnswer) as e:
            raise VenueError(f"clock out of Bybit's window ({why}) and /v5/market/time failed: {e}") from None
        log.warning("Bybit refused our timestamp (%s); clock resynced, offset %+d ms", why, offset)

    # --- account setup --------------------------------------------------------------

    def ensure_position_mode(self) -> str:
        """Make sure of one-way mode (switch-mode; "not modified" is success). Returns
        the refusal to trade, empty when trading may go on."""
        with self._lock:
            if self._mode_checked:
                return self.refusal
            if self.hedge_mode:
                self._mode_checked, self._hedge_account = True, True
                log.warning("BYBIT_HEDGE_MODE=true: orders use positionIdx 1 (long) / 2 (short)")
                return ""
            try:
                self.client.call("switch_position_mode", category=CATEGORY, coin="USDT", mode=0)
                log.warning("Bybit USDT perpetuals switched to one-way mode")
            except Refused as e:
                if e.code not in NOT_MODIFIED:
                    self._hedge_account = True
                    self.refusal = (
                        f"the Bybit account is in hedge mode and could not be switched to one-way ({e.message}, "
                        f"code {e.code}) while BYBIT_HEDGE_MODE=false: scalpdesk will not open positions. Fix: "
                        "close the USDT perpetual positions and orders, then set Position Mode to One-Way "
                        "(Bybit: Derivatives > Preferences > Position Mode) and restart scalpdesk, or set "
                        "BYBIT_HEDGE_MODE=true to trade the hedge account with positionIdx 1/2"
                    )
                    log.error(self.refusal)
            except (Busy, NoAnswer) as e:
                raise VenueError(f"could not make sure of one-way mode: {e}") from None
            self._mode_checked = True
            return self.refusal

    def _idx(self, buy: bool, reduce: bool) -> int:
        """positionIdx: 0 in one-way mode; in a hedge account 1 holds longs, 2 shorts."""
        if not self._hedge_account:
            return 0
        long_side = buy != reduce
        return 1 if long_side else 2

    # --- market data ----------------------------------------------------------------

    def instruments(self, symbols: list[str]) -> dict[str, Instrument]:
        """Filters of the symbols that trade (unknown or halted ones are left out);
        cached for INSTRUMENT_TTL_SEC. Also makes sure of the position mode at start."""
        self.ensure_position_mode()
        out = {}
        now = time.monotonic()
        for sym in symbols:
            cached = self._instruments.get(sym)
            if cached is None or now - cached[0] > INSTRUMENT_TTL_SEC:
                rows = self._req("get_instruments_info", private=False, category=CATEGORY, symbol=sym).get("list", [])
                row = next((r for r in rows if r.get("symbol") == sym and r.get("status") == "Trading"), None)
                if row is None:
                    self._instruments.pop(sym, None)
                    log.warning("%s does not trade on Bybit %s (unknown or not in Trading status)", sym, self.name)
                    continue
                cached = (now, parse.instrument(row))
                self._instruments[sym] = cached
            out[sym] = cached[1]
        return out

    def _instrument(self, symbol: str) -> Instrument:
        inst = self.instruments([symbol]).get(symbol)
        if inst is None:
            raise OrderRejected(f"{symbol} does not trade on Bybit {self.name}", code=10001)
        return inst

    def klines(self, symbol: str, interval_min: int, limit: int) -> list[Kline]:
        rows = self._req("get_kline", private=False, category=CATEGORY, symbol=symbol, interval=str(interval_min),
                         limit=max(1, min(limit, 1000))).get("list", [])
        return [parse.kline(r) for r in reversed(rows)]  # Bybit: newest first

    def ticker(self, symbol: str) -> Ticker:
        rows = self._req("get_tickers", private=False, category=CATEGORY, symbol=symbol).get("list", [])
        if not rows:
            raise VenueError(f"no ticker for {symbol} on Bybit {self.name}")
        return parse.ticker(rows[0])

    # --- account --------------------------------------------------------------------

    def balance(self) -> Balance:
        rows = self._req("get_wallet_balance", accountType="UNIFIED").get("list", [])
        if not rows:
            raise VenueError("Bybit returned no UNIFIED wallet (is this a Unified Trading Account?)")
        w = rows[0]
        return Balance(equity=parse.f(w.get("totalEquity")), available=parse.f(w.get("totalAvailableBalance")))

    def positions(self) -> list[VenuePosition]:
        out: list[VenuePosition] = []
        cursor = ""
        for _ in range(20):  # 200 a page
            params: dict[str, Any] = dict(category=CATEGORY, settleCoin="USDT", limit=200)
            if cursor:
                params["cursor"] = cursor
            result = self._req("get_positions", **params)
            for row in result.get("list", []):
                pos = parse.position(row)
                if pos is not None:
                    out.append(pos)
                if int(row.get("positionIdx") or 0) in (1, 2):
                    self._hedge_account = True
            cursor = result.get("nextPageCursor") or ""
            if not cursor:
                break
        return sorted(out, key=lambda p: p.symbol)

    def set_leverage(self, symbol: str, leverage: float) -> None:
        if self.ensure_position_mode():
            raise OrderRejected(self.refusal)
        lev = parse.number(leverage)
        self._req("set_leverage", write=True, ok=frozenset({110043}), category=CATEGORY, symbol=symbol,
                  buyLeverage=lev, sellLeverage=lev)

    def set_trading_stop(
        self,
        symbol: str,
        *,
        trailing_stop: float | None = None,
        active_price: float | None = None,
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> None:
        """Full-position TP/SL/trailing; None leaves a value alone, 0 cancels it."""
        tick = self._instrument(symbol).tick_size
        idx = 0
        if self._hedge_account:
            pos = next((p for p in self.positions() if p.symbol == symbol), None)
            idx = self._idx(pos is not None and pos.side == "long", reduce=False) if pos else 0
        params: dict[str, Any] = dict(category=CATEGORY, symbol=symbol, tpslMode="Full", positionIdx=idx)
        for name, value in (("trailingStop", trailing_stop), ("activePrice", active_price),
                            ("takeProfit", take_profit), ("stopLoss", stop_loss)):
            if value is not None:
                params[name] = parse.round_tick(value, tick) if value else "0"
        self._req("set_trading_stop", write=True, ok=frozenset({34040}), **params)

    # --- orders ---------------------------------------------------------------------

    def place_order(self, order: OrderRequest) -> OrderInfo:
        """A market order (opens carry full-position TP/SL); see the module doc for retries."""
        if not order.reduce_only and self.ensure_position_mode():
            raise OrderRejected(self.refusal)
        inst = self._instrument(order.symbol)
        qty = parse.floor_step(order.qty, inst.qty_step)
        if float(qty) < inst.min_qty:
            raise OrderRejected(
                f"qty {order.qty:g} is {qty} at qtyStep {inst.qty_step:g}, below minOrderQty {inst.min_qty:g}",
                code=10001,
            )
        params: dict[str, Any] = dict(
            category=CATEGORY,
            symbol=order.symbol,
            side=order.side,
            orderType="Market",
            qty=qty,
            positionIdx=self._idx(order.side == "Buy", order.reduce_only),
            orderLinkId=order.order_link_id,
        )
        if order.reduce_only:
            params["reduceOnly"] = True
        elif order.take_profit is not None or order.stop_loss is not None:
            params["tpslMode"] = "Full"
            if order.take_profit is not None:
                params["takeProfit"] = parse.round_tick(order.take_profit, inst.tick_size)
            if order.stop_loss is not None:
                params["stopLoss"] = parse.round_tick(order.stop_loss, inst.tick_size)
        return self._create(order, params)

    def _create(self, order: OrderRequest, params: dict[str, Any]) -> OrderInfo:
        link, sym = order.order_link_id, order.symbol
        start = time.monotonic()
        unknown_deadline = start + self.unknown_timeout_sec
        giveup = start + self.giveup_sec
        resynced = False
        attempt = 0
        while True:
            sent_ms = self.client.now_ms()
            try:
                ack = self.client.call("place_order", **params)
            except Refused as e:
                if e.code == DUPLICATE:
                    log.warning("order %s: duplicate orderLinkId (110072): it was placed; looking it up", link)
                    found, _ = self._settle(sym, link, sent_ms, unknown_deadline)
                    if found is None:
                        raise OutcomeUnknown(f"order {link}: Bybit has it (110072) but the lookup does not show it yet")
                    return self._confirm(order, found)
                if e.code == TIME_WINDOW and not resynced:
                    resynced = True
                    self._resync(e.message)
                    continue
                raise OrderRejected(e.message, code=e.code) from None
            except Busy as e:
                if e.maybe_seen and (found := self._lookup_quietly(sym, link)) is not None:
                    return self._confirm(order, found)
                wait = max(e.wait, backoff(attempt)) if e.maybe_seen else e.wait
                attempt += 1
                if time.monotonic() + wait > giveup:
                    if (found := self._lookup_quietly(sym, link)) is not None:
                        return self._confirm(order, found)
                    raise OrderRejected(
                        f"Bybit busy for {self.giveup_sec:g}s ({e.message}); gave up, order {link} not placed",
                        code=e.code,
                    ) from None
                log.warning("order %s: %s; sending again with the same orderLinkId in %.2fs", link, e, wait)
                time.sleep(wait)
                continue
            except NoAnswer as e:
                log.warning("order %s: no answer (%s): outcome unknown, looking it up by orderLinkId", link, e)
                found, certain = self._settle(sym, link, sent_ms, unknown_deadline)
                if found is not None:
                    return self._confirm(order, found)
                if not certain or time.monotonic() >= unknown_deadline:
                    raise OutcomeUnknown(
                        f"no answer to order {link} ({e}); not found by orderLinkId within "
                        f"{self.unknown_timeout_sec:g}s"
                    ) from None
                log.warning("order %s is certainly not on Bybit; sending it again with the same orderLinkId", link)
                continue
            return self._confirm(order, None, ack.get("orderId") or "")

    def _lookup(self, symbol: str, link: str) -> OrderInfo | None:
        """The order by orderLinkId: realtime (open and recent), then history."""
        for method in ("get_open_orders", "get_order_history"):
            rows = self._req(method, category=CATEGORY, symbol=symbol, orderLinkId=link).get("list", [])
            row = next((r for r in rows if r.get("orderLinkId") == link), None)
            if row is not None:
                return parse.order(row)
        return None

    def _lookup_quietly(self, symbol: str, link: str) -> OrderInfo | None:
        try:
            return self._lookup(symbol, link)
        except VenueError as e:
            if isinstance(e, AuthError):
                raise
            log.warning("lookup of %s failed: %s", link, e)
            return None

    def _settle(self, symbol: str, link: str, sent_ms: int, deadline: float) -> tuple[OrderInfo | None, bool]:
        """Look the order up until found, or certainly absent (past send + recv_window +
        settle margin, with a lookup that worked), or the deadline. (order, certain)."""
        horizon_ms = sent_ms + self.client.recv_window_ms + SETTLE_MS
        while True:
            worked = True
            try:
                found = self._lookup(symbol, link)
            except VenueError as e:
                if isinstance(e, AuthError):
                    raise
                worked, found = False, None
                log.warning("lookup of %s failed: %s", link, e)
            if found is not None:
                return found, True
            past = self.client.now_ms() >= horizon_ms
            if past and worked:
                return None, True
            if time.monotonic() >= deadline:
                return None, False
            left_ms = horizon_ms - self.client.now_ms()
            time.sleep(min(max(left_ms / 1000, 0.05), 0.25, max(deadline - time.monotonic(), 0.0)))

    def _confirm(self, order: OrderRequest, info: OrderInfo | None, order_id: str = "") -> OrderInfo:
        """Wait (briefly) until an acknowledged order is filled or finished; the ack alone
        says nothing about a fill."""
        until = time.monotonic() + CONFIRM_SEC
        delay = 0.0
        while info is None or info.status not in parse.TERMINAL:
            if time.monotonic() >= until:
                state = f"still {info.status}" if info else "not visible yet"
                raise OutcomeUnknown(f"order {order.order_link_id} accepted (orderId {order_id or '?'}) but {state}")
            time.sleep(delay)
            delay = min(max(delay * 2, 0.02), 0.25)
            info = self._lookup_quietly(order.symbol, order.order_link_id) or info
        if order.reduce_only and info.filled:
            info = info.model_copy(update={"realised_pnl": self._closed_pnl_of(order.symbol, info.order_id)})
        return info

    def _closed_pnl_of(self, symbol: str, order_id: str) -> float | None:
        try:
            rows = self._req("get_closed_pnl", category=CATEGORY, symbol=symbol, limit=20).get("list", [])
        except VenueError:
            return None
        row = next((r for r in rows if r.get("orderId") == order_id), None)
        return parse.f(row.get("closedPnl")) if row else None

    def order_by_link_id(self, symbol: str, order_link_id: str) -> OrderInfo | None:
        return self._lookup(symbol, order_link_id)

    # --- closes ---------------------------------------------------------------------

    def closed_trades(self, symbol: str, since: float) -> list[ClosedTrade]:
        """Closes since `since` (newest first), the reason from the closing order's
        createType; waits briefly for closed-pnl, which lags the close."""
        return bybit_closes.closed_trades(self._req, self.client.now_ms(), symbol, since)
