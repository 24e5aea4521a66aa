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
- 10001 "position idx not match position mode": the account's mode changed under us;
  the mode is read again and the order sent once more with the right positionIdx (the
  refused one never became an order).

Leverage is kept per symbol as the venue last said it (set-leverage answered, 110043
"not modified" included, or a position list showed it): set_leverage sends nothing when
it is already right, so an open pays no round trip for it. A set-leverage that fails, or
an open Bybit refuses, forgets the symbol's entry: the next open asks again.

Look-ups by orderLinkId ask realtime, then history, then the executions (a fill shows
there even when the order caches miss it). The position mode is read, never guessed:
switch-mode to one-way ("not modified", 110025, means it already is), else the position
list's positionIdx, through the same request path as every call (resync, back-off); a
refusal for any other reason is reported as that reason. Closes use the positionIdx of
the position they close, as the position list reports it.

stop() makes every back-off, look-up loop and confirmation give up at once: an order
refused all along is certainly not placed (OrderRejected); one that may have reached
Bybit is OutcomeUnknown, left for the next start to look up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
MODE_NOT_MODIFIED = 110025
CANNOT_SWITCH = {110024, 110028}  # positions or open orders: the account stays in hedge mode
IDX_MISMATCH = "position idx not match position mode"  # Bybit's 10001 text
ONE_WAY, HEDGE = 0, 3  # Bybit's switch-mode values


def _mode_name(mode: int | None) -> str:
    return {ONE_WAY: "one-way", HEDGE: "hedge"}.get(mode, "unknown") if mode is not None else "unknown"


class AcceptedNotVisible(OutcomeUnknown):
    """Bybit acknowledged the order (it has an orderId) but no look-up shows it yet."""

    def __init__(self, message: str, order_id: str) -> None:
        super().__init__(message)
        self.order_id = order_id


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
        rate_reserve: int = 1,
    ) -> None:
        if name not in ("testnet", "demo", "live"):
            raise ValueError(f"BybitVenue is testnet, demo or live, not {name!r}")
        self.name = name
        self.client = BybitClient(name, keys, base_url=base_url, timeout_sec=timeout_sec, recv_window_ms=recv_window_ms,
                                  rate_reserve=rate_reserve)
        self.unknown_timeout_sec = unknown_timeout_sec
        self.giveup_sec = giveup_sec
        self.hedge_mode = hedge_mode
        self._instruments: dict[str, tuple[float, Instrument]] = {}
        self._lock = threading.Lock()  # one position-mode check at a time
        self._leverage: dict[str, float] = {}  # per symbol, as the venue last said it
        self._mode: int | None = None  # the account's position mode as last read; None: not known
        self._mode_problem = ""  # why a hedge account could not be made one-way
        self._mode_symbol = "BTCUSDT"  # the position list is read for this symbol (every slot is listed)
        self._halt = threading.Event()
        self.client.pacer.halt = self._halt  # a stop ends a wait for the next rate-limit window
        # Called with the orderLinkId right before every create request leaves (the
        # executor records the send time durably: an order may land until send time +
        # landing_window_sec, whatever happens to this process).
        self.on_send: Callable[[str], None] | None = None

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
            rate_reserve=settings.bybit_rate_reserve,
        )

    def __repr__(self) -> str:
        return f"BybitVenue({self.name}, {self.client.endpoint})"

    @property
    def landing_window_sec(self) -> float:
        """How long after its request left an order may still land: Bybit refuses a request
        older than recv_window, plus the margin for the look-ups to show one that did."""
        return (self.client.recv_window_ms + SETTLE_MS) / 1000

    @property
    def refusal(self) -> str:
        """Why opens are refused (a hedge account without BYBIT_HEDGE_MODE), empty if fine."""
        if self._mode == HEDGE and not self.hedge_mode:
            return self._mode_problem or (
                "the Bybit account is in hedge mode while BYBIT_HEDGE_MODE=false: scalpdesk will not open positions"
            )
        return ""

    @property
    def position_mode(self) -> str:
        return _mode_name(self._mode)

    def stop(self) -> None:
        """scalpdesk is stopping: back-offs, look-up loops and confirmations give up now."""
        self._halt.set()

    def _wait(self, seconds: float) -> bool:
        """Sleep, unless stopping; True when stopping."""
        return self._halt.wait(max(seconds, 0.0))

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
                if self._halt.is_set():
                    raise VenueError(f"Bybit busy ({e.message}); not retried: scalpdesk is stopping", code=e.code) from None
                if time.monotonic() + wait > deadline:
                    raise VenueError(f"Bybit busy for {self.giveup_sec:g}s, gave up: {e.message}", code=e.code) from None
                log.warning("Bybit %s: %s; retrying in %.2fs", method, e, wait)
                if self._wait(wait):
                    raise VenueError(f"Bybit busy ({e.message}); not retried: scalpdesk is stopping", code=e.code) from None
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
        """Know the account's position mode, making it one-way unless BYBIT_HEDGE_MODE.
        Returns the refusal to open (a hedge account that cannot be switched), empty when
        opens may go on. VenueError when the mode cannot be known now (asked again next
        time); a refused key raises AuthError."""
        with self._lock:
            if self._mode is None:
                self._mode = self._find_mode()
            return self.refusal

    def forget_position_mode(self) -> None:
        """Read the mode again at the next open (an order was refused for a mode mismatch)."""
        self._mode, self._mode_problem = None, ""

    def _find_mode(self) -> int:
        if self.hedge_mode:
            mode = self._read_mode()
            idx = "positionIdx 1 (long) / 2 (short)" if mode == HEDGE else "positionIdx 0"
            log.warning("BYBIT_HEDGE_MODE=true: the account is in %s mode; orders use %s", _mode_name(mode), idx)
            return mode
        try:
            self._req("switch_position_mode", write=True, category=CATEGORY, coin="USDT", mode=ONE_WAY)
        except OrderRejected as e:
            if e.code == MODE_NOT_MODIFIED:
                return ONE_WAY  # "not modified": it is one-way already
            if e.code in CANNOT_SWITCH:
                self._mode_problem = self._hedge_text(f"{e.message}, code {e.code}")
                log.error(self._mode_problem)
                return HEDGE
            # Refused for another reason: that reason, and the mode from the position list.
            try:
                mode = self._read_mode()
            except AuthError:
                raise
            except VenueError as e2:
                raise VenueError(
                    f"Bybit position mode not known: switch-mode refused ({e}) and the position list failed ({e2})",
                    code=e.code,
                ) from None
            log.warning("Bybit refused switch-mode (%s); the position list says %s mode", e, _mode_name(mode))
            if mode == HEDGE:
                self._mode_problem = self._hedge_text(f"switch-mode refused: {e}")
                log.error(self._mode_problem)
            return mode
        log.warning("Bybit USDT perpetuals switched to one-way mode")
        return ONE_WAY

    @staticmethod
    def _hedge_text(why: str) -> str:
        return (
            f"the Bybit account is in hedge mode and could not be switched to one-way ({why}) while "
            "BYBIT_HEDGE_MODE=false: scalpdesk will not open positions. Fix: close the USDT perpetual "
            "positions and orders, then set Position Mode to One-Way (Bybit: Derivatives > Preferences > "
            "Position Mode) and restart scalpdesk, or set BYBIT_HEDGE_MODE=true to trade the hedge account "
            "with positionIdx 1/2"
        )

    def _read_mode(self) -> int:
        """The mode as the position list shows it: a symbol's slots are 0 (one-way) or 1 and 2."""
        rows = self._req("get_positions", category=CATEGORY, symbol=self._mode_symbol).get("list", [])
        idxs = {int(r.get("positionIdx") or 0) for r in rows}
        if not idxs:
            raise VenueError(f"the position list shows no slot for {self._mode_symbol}: position mode not known")
        return HEDGE if idxs & {1, 2} else ONE_WAY

    def _learn_mode(self, idxs: set[int]) -> None:
        """The position list showed these slots: a mode other than the one we know means the
        account was switched; it is checked again before the next open."""
        if not idxs or self._mode is None:
            return
        seen = HEDGE if idxs & {1, 2} else ONE_WAY
        if seen != self._mode:
            log.warning("Bybit position list shows %s-mode slots, not %s: the position mode is read again "
                        "before the next open", _mode_name(seen), _mode_name(self._mode))
            self.forget_position_mode()

    def _open_idx(self, buy: bool) -> int:
        """positionIdx of an open: 0 in one-way mode; in a hedge account 1 holds longs, 2 shorts."""
        return (1 if buy else 2) if self._mode == HEDGE else 0

    def _close_idx(self, order: OrderRequest) -> int:
        """positionIdx of a close: the position's own, as the venue reported it."""
        if order.position_idx is not None:
            return order.position_idx
        if self._mode == HEDGE:
            return 1 if order.side == "Sell" else 2  # selling closes the long slot
        if self._mode is None:
            return self._position_idx(order)
        return 0

    def _position_idx(self, order: OrderRequest) -> int:
        """The positionIdx of the position a close trades against (0 if none is listed:
        Bybit then says why the close cannot be)."""
        held = "long" if order.side == "Sell" else "short"
        pos = next((p for p in self.positions() if p.symbol == order.symbol and p.side == held), None)
        return pos.position_idx if pos is not None else 0

    # --- market data ----------------------------------------------------------------

    def instruments(self, symbols: list[str]) -> dict[str, Instrument]:
        """Filters of the symbols that trade (unknown or halted ones are left out);
        cached for INSTRUMENT_TTL_SEC."""
        if symbols and self._mode is None:
            self._mode_symbol = symbols[0]
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
            rows = result.get("list", [])
            for row in rows:
                pos = parse.position(row)
                if pos is not None:
                    out.append(pos)
                self._learn_leverage(row)
            self._learn_mode({int(r.get("positionIdx") or 0) for r in rows})
            cursor = result.get("nextPageCursor") or ""
            if not cursor:
                break
        return sorted(out, key=lambda p: p.symbol)

    def set_leverage(self, symbol: str, leverage: float) -> None:
        """The symbol's leverage (buy = sell); no request when the venue already has it."""
        if self._ensure_mode_for_open():
            raise OrderRejected(self.refusal)
        lev = parse.number(leverage)
        if self._leverage.get(symbol) == float(lev):
            return
        try:
            # 110043 "not modified": it is that already.
            self._req("set_leverage", write=True, ok=frozenset({110043}), category=CATEGORY, symbol=symbol,
                      buyLeverage=lev, sellLeverage=lev)
        except VenueError:
            self.forget_leverage(symbol)
            raise
        self._leverage[symbol] = float(lev)

    def forget_leverage(self, symbol: str) -> None:
        """The venue may not have the leverage we think: set it again at the next open."""
        self._leverage.pop(symbol, None)

    def _learn_leverage(self, row: dict[str, Any]) -> None:
        symbol, lev = row.get("symbol"), parse.f(row.get("leverage"))
        if symbol and lev:
            self._leverage[symbol] = lev

    def set_trading_stop(
        self,
        symbol: str,
        *,
        trailing_stop: float | None = None,
        active_price: float | None = None,
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> None:
        """Full-position TP/SL/trailing on the position's own positionIdx; None leaves a
        value alone, 0 cancels it."""
        tick = self._instrument(symbol).tick_size

        def idx() -> int:
            if self._mode == ONE_WAY:
                return 0
            pos = next((p for p in self.positions() if p.symbol == symbol), None)
            return pos.position_idx if pos is not None else 0

        params: dict[str, Any] = dict(category=CATEGORY, symbol=symbol, tpslMode="Full", positionIdx=idx())
        for name, value in (("trailingStop", trailing_stop), ("activePrice", active_price),
                            ("takeProfit", take_profit), ("stopLoss", stop_loss)):
            if value is not None:
                params[name] = parse.round_tick(value, tick) if value else "0"
        try:
            self._req("set_trading_stop", write=True, ok=frozenset({34040}), **params)
        except OrderRejected as e:
            if e.code != 10001 or IDX_MISMATCH not in e.message.lower():
                raise
            log.warning("trading-stop %s: %s: reading the position mode again", symbol, e.message)
            self.forget_position_mode()
            params["positionIdx"] = idx()
            self._req("set_trading_stop", write=True, ok=frozenset({34040}), **params)

    # --- orders ---------------------------------------------------------------------

    def _ensure_mode_for_open(self) -> str:
        """The refusal to open; a mode that cannot be read now refuses this open (nothing
        was sent) with the reason, and is asked again at the next one."""
        try:
            return self.ensure_position_mode()
        except AuthError:
            raise
        except VenueError as e:
            raise OrderRejected(f"not sent: {e}", code=e.code) from None

    def place_order(self, order: OrderRequest) -> OrderInfo:
        """A market order (opens carry full-position TP/SL); see the module doc for retries."""
        if not order.reduce_only and self._ensure_mode_for_open():
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
            positionIdx=self._close_idx(order) if order.reduce_only else self._open_idx(order.side == "Buy"),
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
        if order.reduce_only:
            return self._create(order, params)
        try:
            return self._create(order, params)
        except OrderRejected:
            # Refused: perhaps for its leverage (risk limit, margin); cheap to set it again.
            self.forget_leverage(order.symbol)
            raise

    def _create(self, order: OrderRequest, params: dict[str, Any]) -> OrderInfo:
        link, sym = order.order_link_id, order.symbol
        start = time.monotonic()
        unknown_deadline = start + self.unknown_timeout_sec
        giveup = start + self.giveup_sec
        resynced = rechecked = False
        maybe_placed = False  # an attempt may have reached the matching engine (5xx, no answer)
        attempt = 0
        while True:
            if self._halt.is_set():
                return self._confirm(order, self._stopped(order, maybe_placed, "before sending it again"))
            sent_ms = self.client.now_ms()
            if self.on_send is not None:
                self.on_send(link)
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
                if e.code == 10001 and IDX_MISMATCH in e.message.lower() and not rechecked:
                    rechecked = True
                    params["positionIdx"] = self._recheck_idx(order, e)
                    continue
                raise OrderRejected(e.message, code=e.code) from None
            except Busy as e:
                maybe_placed |= e.maybe_seen
                if e.maybe_seen and (found := self._lookup_quietly(sym, link)) is not None:
                    return self._confirm(order, found)
                wait = max(e.wait, backoff(attempt)) if e.maybe_seen else e.wait
                attempt += 1
                if time.monotonic() + wait > giveup:
                    if maybe_placed:
                        # An attempt may still land until its send + recv_window: wait that
                        # out, so "not placed" is certain.
                        found, certain = self._settle(sym, link, sent_ms, unknown_deadline)
                        if found is not None:
                            return self._confirm(order, found)
                        if not certain:
                            raise OutcomeUnknown(
                                f"Bybit busy for {self.giveup_sec:g}s ({e.message}); gave up sending order {link}, "
                                "which an earlier attempt may have placed"
                            ) from None
                    raise OrderRejected(
                        f"Bybit busy for {self.giveup_sec:g}s ({e.message}); gave up, order {link} not placed",
                        code=e.code,
                    ) from None
                log.warning("order %s: %s; sending again with the same orderLinkId in %.2fs", link, e, wait)
                if self._wait(wait):
                    return self._confirm(order, self._stopped(order, maybe_placed, f"while Bybit was busy ({e.message})"))
                continue
            except NoAnswer as e:
                maybe_placed = True
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
                maybe_placed = False  # the earlier attempts can no longer land
                continue
            return self._confirm(order, None, ack.get("orderId") or "")

    def _stopped(self, order: OrderRequest, maybe_placed: bool, when: str) -> OrderInfo:
        """Stopping mid-retry: the order if a look-up finds it; else certainly not placed
        (OrderRejected), or OutcomeUnknown, left for the next start to look up."""
        link = order.order_link_id
        if maybe_placed:
            if (found := self._lookup_quietly(order.symbol, link)) is not None:
                return found
            raise OutcomeUnknown(
                f"scalpdesk is stopping {when}: order {link} may have reached Bybit; the next start looks it up"
            )
        raise OrderRejected(f"scalpdesk is stopping {when}: order {link} not placed (every attempt was refused)")

    def _recheck_idx(self, order: OrderRequest, e: Refused) -> int:
        """positionIdx after Bybit refused the order for a mode mismatch: the mode read again."""
        log.warning("order %s: %s: reading the account's position mode again", order.order_link_id, e.message)
        self.forget_position_mode()
        try:
            if order.reduce_only:
                return self._position_idx(order.model_copy(update={"position_idx": None}))
            if self.ensure_position_mode():
                raise OrderRejected(self.refusal)
        except AuthError:
            raise
        except OrderRejected:
            raise
        except VenueError as e2:
            raise OrderRejected(f"{e.message} (code {e.code}); reading the position mode again failed: {e2}",
                                code=e.code) from None
        return self._open_idx(order.side == "Buy")

    def _lookup(self, symbol: str, link: str) -> OrderInfo | None:
        """The order by orderLinkId: realtime (open and recent), history, then its fills
        in the executions (which show an order the order caches have lost or not shown yet)."""
        for method in ("get_open_orders", "get_order_history"):
            rows = self._req(method, category=CATEGORY, symbol=symbol, orderLinkId=link).get("list", [])
            row = next((r for r in rows if r.get("orderLinkId") == link), None)
            if row is not None:
                return parse.order(row)
        rows = self._req("get_executions", category=CATEGORY, symbol=symbol, orderLinkId=link).get("list", [])
        fills = [r for r in rows if r.get("orderLinkId") == link]
        return parse.order_from_executions(fills) if fills else None

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
            if time.monotonic() >= deadline or self._halt.is_set():
                return None, False
            left_ms = horizon_ms - self.client.now_ms()
            if self._wait(min(max(left_ms / 1000, 0.05), 0.25, max(deadline - time.monotonic(), 0.0))):
                return None, False

    def _confirm(self, order: OrderRequest, info: OrderInfo | None, order_id: str = "") -> OrderInfo:
        """Wait (briefly) until an acknowledged order is filled or finished; the ack alone
        says nothing about a fill."""
        until = time.monotonic() + CONFIRM_SEC
        delay = 0.0
        while info is None or info.status not in parse.TERMINAL:
            if time.monotonic() >= until or (delay and self._halt.is_set()):
                state = f"still {info.status}" if info else "not visible yet"
                oid = order_id or (info.order_id if info else "")
                raise AcceptedNotVisible(
                    f"order {order.order_link_id} accepted (orderId {oid or '?'}) but {state}", oid
                )
            self._wait(delay)
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
