"""The state behind the loopback Bybit V5 server: instruments, prices, wallet,
positions, orders, closed PnL, executions, and the faults and hooks tests use.

Shapes follow the Bybit V5 docs (BYBIT_V5.md §4): numbers are strings, orders carry
orderStatus/createType/stopOrderType, positions list flat slots with size "0",
closed-pnl rows carry the closing order's side and orderId. Market orders fill at
once at the current price; TP/SL/trailing/liquidation trigger when a test moves
the price with set_price(). Everything is guarded by one lock: the HTTP server
answers from many threads.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Callable

FAKE_KEY = "FAKEKEYnotReal0001"
FAKE_SECRET = "FAKESECRETnotReal0000000000000001"


@dataclass
class FakeInstrument:
    symbol: str
    qty_step: str
    min_qty: str
    max_qty: str
    min_notional: str
    tick: str
    max_leverage: str
    status: str = "Trading"


INSTRUMENTS = {
    "BTCUSDT": FakeInstrument("BTCUSDT", "0.001", "0.001", "1190", "5", "0.10", "100.00"),
    "ETHUSDT": FakeInstrument("ETHUSDT", "0.01", "0.01", "7240", "5", "0.01", "100.00"),
    "SOLUSDT": FakeInstrument("SOLUSDT", "0.1", "0.1", "79770", "5", "0.010", "75.00"),
}
PRICES = {"BTCUSDT": 100_000.0, "ETHUSDT": 3_500.0, "SOLUSDT": 200.0}


class BybitError(Exception):
    """A refusal, answered as {retCode, retMsg}."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass
class Fault:
    """One injected failure of the next request(s) to `path`.

    kind: delay_before (sleep, then process: lands late, or 10002 if the sleep outlasts
    recv_window, as a request stuck on its way), delay_after (process, then sleep before
    answering: landed, answer late), hold (signature and timestamp checked, then held
    `seconds` before the matching engine: it lands late however long the hold), drop
    (sleep, then close without processing: never landed), reset (close at once, not
    processed), http (answer HTTP `status`, not processed), http_after (processed, then
    HTTP `status`: landed), retcode (answer retCode, not processed).

    `when`, if given, picks the requests the fault applies to (by their parameters),
    e.g. only the opens: lambda p: not p.get("reduceOnly").
    """

    path: str
    kind: str
    times: int = 1
    seconds: float = 0.0
    status: int = 503
    ret_code: int = 0
    ret_msg: str = ""
    reset_in_ms: int | None = None  # 10006: X-Bapi-Limit-Reset-Timestamp = now + this
    when: Callable[[dict[str, Any]], bool] | None = None


@dataclass
class Gate:
    """Holds requests to `path` at `phase` until released: "received" (before any
    check: a request held longer than recv_window is then refused with 10002, as a
    request stuck on its way to Bybit), "accepted" (signature and timestamp checked,
    held before the matching engine: it lands when released), "answered" (after the
    answer was written). then="drop" makes a held request vanish unprocessed."""

    path: str
    phase: str = "received"
    then: str = "process"
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    hits: int = 0

    def release(self) -> None:
        self.released.set()


@dataclass
class Pos:
    symbol: str
    idx: int
    side: str  # Buy / Sell
    size: float
    entry: float
    leverage: float
    tp: float = 0.0
    sl: float = 0.0
    trail: float = 0.0
    active_price: float = 0.0
    trail_armed: bool = False
    trail_best: float = 0.0
    open_fee: float = 0.0
    created: float = 0.0

    @property
    def sign(self) -> int:
        return 1 if self.side == "Buy" else -1

    @property
    def liq(self) -> float:
        return self.entry * (1 - self.sign * (1 / self.leverage - 0.005))


def num(x: float, step: str | None = None) -> str:
    """A Bybit-style number string."""
    if step is not None:
        q = Decimal(step)
        return str((Decimal(repr(x)) / q).to_integral_value(ROUND_FLOOR) * q)
    s = f"{x:.8f}".rstrip("0").rstrip(".")
    return s or "0"


def _mix(x: int) -> float:
    """splitmix64 of x as a float in [0, 1): the fake's seeded noise, a function of x alone."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return ((x ^ (x >> 31)) >> 11) / float(1 << 53)


def history_price(symbol: str, t_ms: int) -> float:
    """The fake's price history at a minute boundary: slow waves plus seeded noise."""
    k = t_ms // 60_000
    seed = sum(symbol.encode()) << 40
    base = PRICES.get(symbol, 100.0)
    return base * (1 + 0.03 * math.sin(k / 997) + 0.006 * math.sin(k / 53) + 0.002 * (_mix(seed + k) - 0.5))


def history_candle(symbol: str, t_ms: int, span_ms: int = 60_000) -> list[str]:
    """One candle of the history as Bybit lists it: [start, open, high, low, close, volume, turnover]."""
    seed = sum(symbol.encode()) << 40
    o, c = history_price(symbol, t_ms), history_price(symbol, t_ms + span_ms)
    hi = max(o, c) * (1 + 0.0005 * _mix(seed + t_ms + 1))
    lo = min(o, c) * (1 - 0.0005 * _mix(seed + t_ms + 2))
    vol = 1 + 99 * _mix(seed + t_ms + 3)
    return [str(t_ms), num(o), num(hi), num(lo), num(c), num(vol), num(vol * c)]


def _on_step(x: float, step: str) -> bool:
    n = Decimal(repr(x)) / Decimal(step)
    return n == n.to_integral_value()


class FakeBybit:
    """The exchange: call handle(method, path, params, api_key) for a result dict."""

    def __init__(self, equity: float = 10_000.0, taker_fee: float = 0.00055) -> None:
        self.lock = threading.RLock()
        self.keys: dict[str, str] = {FAKE_KEY: FAKE_SECRET}
        self.read_only: set[str] = set()
        self.instruments = {k: replace(v) for k, v in INSTRUMENTS.items()}
        self.prices = dict(PRICES)
        # klines: +1 a market the default RuleDecider opens a long on (it fell steadily and
        # sits over 1 % under its hour's EMA, calmly: no guardrail in the way), -1 a short, 0 flat
        self.trend = {s: 0 for s in PRICES}
        self.wallet = equity
        self.taker_fee = taker_fee
        self.position_mode = 0  # 0 one-way, 3 hedge
        self.unified = True
        self.leverage: dict[str, float] = {s: 10.0 for s in PRICES}
        self.positions: dict[tuple[str, int], Pos] = {}
        self.touched: set[str] = set()  # symbols that had a position (flat slots listed)
        self.orders: list[dict[str, Any]] = []
        self.by_link: dict[str, dict[str, Any]] = {}
        self.closed_pnl: list[dict[str, Any]] = []
        self.executions: list[dict[str, Any]] = []
        self.skew_ms = 0  # server clock minus the real clock
        self.lookup_lag_sec = 0.0  # a new order is invisible to realtime/history this long
        self.history_lag_sec = 0.0  # closed-pnl, executions and system orders lag this long
        self.faults: list[Fault] = []
        # Fractions of the next opening orders that fill (an IOC market order the book
        # cannot fill whole ends PartiallyFilledCanceled); empty: everything fills.
        self.partial_fills: list[float] = []
        self.gates: list[Gate] = []
        self.requests: list[tuple[float, str, str, dict[str, Any]]] = []  # (perf_counter, method, path, params)
        self.observers: list[Callable[[str, str, dict[str, Any]], None]] = []  # (phase, path, params)
        self._seq = 0
        self.kline_holes: list[tuple[int, int]] = []  # [start_ms, end_ms): history with no candles (an outage)
        # What the WebSocket fake pushes: (kind, payload) for "ticker" (symbol), "order" (row),
        # "execution" (row), "position" (symbol), "wallet" (None); called under the lock.
        self.listeners: list[Callable[[str, Any], None]] = []
        # Per-path request limits per 1-second window (X-Bapi-Limit headers, 10006 past them);
        # empty: no limit, the headers say 9 left of 10 as before.
        self.rate_limits: dict[str, int] = {}
        self._windows: dict[str, tuple[int, int]] = {}  # path -> (window end ms, requests in it)
        self.rate_refused = 0  # requests answered 10006 by rate_limits

    # --- test controls ------------------------------------------------------------

    def server_ms(self) -> int:
        return int(time.time() * 1000) + self.skew_ms

    def fail(self, path: str, kind: str, **kw: Any) -> Fault:
        f = Fault(path, kind, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def take_fault(self, path: str, params: dict[str, Any] | None = None) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.path == path and f.times > 0 and (f.when is None or f.when(params or {})):
                    f.times -= 1
                    if f.times == 0:
                        self.faults.remove(f)
                    return f
        return None

    def gate(self, path: str, phase: str = "received", then: str = "process") -> Gate:
        g = Gate(path, phase, then)
        with self.lock:
            self.gates.append(g)
        return g

    def gate_for(self, path: str, phase: str) -> Gate | None:
        with self.lock:
            for g in self.gates:
                if g.path == path and g.phase == phase and not g.released.is_set():
                    return g
        return None

    def release_all(self) -> None:
        with self.lock:
            for g in self.gates:
                g.release()

    def set_price(self, symbol: str, price: float) -> None:
        """Move the last price; fills whatever TP/SL/trailing/liquidation it crosses."""
        with self.lock:
            self.prices[symbol] = price
            self._push("ticker", symbol)
            for key, p in list(self.positions.items()):
                if p.symbol == symbol:
                    self._check_triggers(key, p, price)

    def _push(self, kind: str, payload: Any) -> None:
        for fn in list(self.listeners):
            fn(kind, payload)

    def limit_headers(self, path: str) -> tuple[dict[str, str], bool]:
        """The rate-limit headers of a request to `path` now, and whether it is over the
        limit (counted per 1-second window, as Bybit's per-UID limits)."""
        now = int(time.time() * 1000)
        with self.lock:
            limit = self.rate_limits.get(path)
            if limit is None:
                return {"X-Bapi-Limit": "10", "X-Bapi-Limit-Status": "9",
                        "X-Bapi-Limit-Reset-Timestamp": str(now + 1000)}, False
            end, used = self._windows.get(path, (0, 0))
            if now >= end:
                end, used = now + 1000, 0
            used += 1
            self._windows[path] = (end, used)
            over = used > limit
            if over:
                self.rate_refused += 1
            return {"X-Bapi-Limit": str(limit), "X-Bapi-Limit-Status": str(max(limit - used, 0)),
                    "X-Bapi-Limit-Reset-Timestamp": str(end)}, over

    def orders_for(self, symbol: str | None = None, user_only: bool = True) -> list[dict[str, Any]]:
        with self.lock:
            return [
                dict(o) for o in self.orders
                if (symbol is None or o["symbol"] == symbol) and (not user_only or o["createType"] == "CreateByUser")
            ]

    def open_positions(self) -> list[Pos]:
        with self.lock:
            return [p for p in self.positions.values() if p.size > 0]

    # --- dispatch -----------------------------------------------------------------

    def handle(self, method: str, path: str, p: dict[str, Any], api_key: str | None) -> dict[str, Any]:
        route = ROUTES.get((method, path))
        if route is None:
            raise BybitError(10001, f"unknown route {method} {path}")
        with self.lock:
            return route(self, p, api_key)

    def _need(self, p: dict[str, Any], *names: str) -> None:
        for n in names:
            if p.get(n) in (None, ""):
                raise BybitError(10001, f"params error: {n} is required")

    def _linear(self, p: dict[str, Any]) -> None:
        if p.get("category") != "linear":
            raise BybitError(10001, "params error: category only support linear")

    def _inst(self, symbol: str) -> FakeInstrument:
        inst = self.instruments.get(symbol)
        if inst is None:
            raise BybitError(10001, f"params error: symbol invalid {symbol}")
        return inst

    def _write(self, api_key: str | None) -> None:
        if api_key in self.read_only:
            raise BybitError(10005, "Permission denied, please check your API key permissions.")

    # --- market -------------------------------------------------------------------

    def r_time(self, p, key):
        ms = self.server_ms()
        return {"timeSecond": str(ms // 1000), "timeNano": str(ms * 1_000_000)}

    def r_instruments(self, p, key):
        self._linear(p)
        syms = [p["symbol"]] if p.get("symbol") else list(self.instruments)
        rows = []
        for s in syms:
            i = self.instruments.get(s)
            if i is None:
                continue
            rows.append({
                "symbol": s, "contractType": "LinearPerpetual", "status": i.status,
                "baseCoin": s[:-4], "quoteCoin": "USDT", "settleCoin": "USDT", "priceScale": "2",
                "leverageFilter": {"minLeverage": "1", "maxLeverage": i.max_leverage, "leverageStep": "0.01"},
                "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": i.tick},
                "lotSizeFilter": {"maxOrderQty": i.max_qty, "maxMktOrderQty": i.max_qty, "minOrderQty": i.min_qty,
                                  "qtyStep": i.qty_step, "postOnlyMaxOrderQty": i.max_qty,
                                  "minNotionalValue": i.min_notional},
            })
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def r_tickers(self, p, key):
        self._linear(p)
        rows = []
        for s in [p["symbol"]] if p.get("symbol") else list(self.prices):
            if s not in self.prices:
                continue
            last = self.prices[s]
            tick = float(self.instruments[s].tick)
            rows.append({"symbol": s, "lastPrice": num(last), "markPrice": num(last), "indexPrice": num(last),
                         "bid1Price": num(last - tick), "ask1Price": num(last + tick), "bid1Size": "1",
                         "ask1Size": "1", "fundingRate": "0.0001", "volume24h": "1000", "turnover24h": "1"})
        return {"category": "linear", "list": rows}

    def r_kline(self, p, key):
        self._linear(p)
        s = p["symbol"]
        self._inst(s)
        m = int(p["interval"])
        limit = min(int(p.get("limit", 200)), 1000)
        if p.get("start") or p.get("end"):  # history (klines download): a function of time alone
            rows = self._kline_history(s, m, p.get("start"), p.get("end"), limit)
            return {"category": "linear", "symbol": s, "list": rows}
        price = self.prices[s]
        # Drift per bar against the cue (a fader buys the fall): 0.04 % a minute leaves the
        # price ~1.2 % from its EMA(60) of 1m closes; a small zig-zag keeps ATR calm.
        d = -0.0004 * self.trend.get(s, 0) * m
        a = 0.5 * abs(d) if d else 0.0002 * math.sqrt(m)
        now_ms = self.server_ms()
        span = m * 60_000
        first = now_ms - now_ms % span
        closes = [price * math.exp(-d * j) * (1 + (0 if j == 0 else a * (-1) ** j)) for j in range(limit + 1)]
        rows = []
        for j in range(limit):  # newest first, as Bybit
            o, c = closes[j + 1], closes[j]
            hi, lo = max(o, c) * 1.0001, min(o, c) * 0.9999
            rows.append([str(first - j * span), num(o), num(hi), num(lo), num(c), "100", num(100 * c)])
        return {"category": "linear", "symbol": s, "list": rows}

    def _kline_history(self, s: str, m: int, start: str | None, end: str | None, limit: int) -> list[list[str]]:
        """Candles with start <= open time <= end (ms), newest first, none in kline_holes, none
        after the current (unfinished) one. Past `limit`: the oldest from `start` (the newest up
        to `end` without a start). scalpdesk asks for at most `limit` at a time, so either is fine."""
        span = m * 60_000
        now = self.server_ms()
        newest = min(int(end) if end else now, now)
        newest -= newest % span
        times: list[int] = []
        if start:
            t = -(-int(start) // span) * span  # the first boundary at or after start
            while t <= newest and len(times) < limit:
                hole = next((b for a, b in self.kline_holes if a <= t < b), None)
                if hole is None:
                    times.append(t)
                    t += span
                else:
                    t = -(-hole // span) * span
            times.reverse()
        else:
            t = newest
            while len(times) < limit and t >= 0:
                if not any(a <= t < b for a, b in self.kline_holes):
                    times.append(t)
                t -= span
        return [history_candle(s, t, span) for t in times]

    # --- account ------------------------------------------------------------------

    def _upnl(self) -> float:
        return sum(pos.sign * (self.prices[pos.symbol] - pos.entry) * pos.size for pos in self.positions.values())

    def _used_margin(self) -> float:
        return sum(pos.size * pos.entry / pos.leverage for pos in self.positions.values())

    def available(self) -> float:
        return self.wallet + self._upnl() - self._used_margin()

    def r_wallet(self, p, key):
        if p.get("accountType") != "UNIFIED" or not self.unified:
            raise BybitError(10001, "accountType only support UNIFIED.")
        eq = self.wallet + self._upnl()
        return {"list": [{
            "accountType": "UNIFIED", "totalEquity": num(eq), "totalWalletBalance": num(self.wallet),
            "totalMarginBalance": num(eq), "totalAvailableBalance": num(max(self.available(), 0.0)),
            "totalPerpUPL": num(self._upnl()), "totalInitialMargin": num(self._used_margin()),
            "totalMaintenanceMargin": "0", "accountIMRate": "0", "accountMMRate": "0", "accountLTV": "0",
            "coin": [{"coin": "USDT", "equity": num(eq), "walletBalance": num(self.wallet),
                      "unrealisedPnl": num(self._upnl()), "availableToWithdraw": "", "usdValue": num(eq)}],
        }]}

    def r_account_info(self, p, key):
        return {"unifiedMarginStatus": 5 if self.unified else 1, "marginMode": "REGULAR_MARGIN",
                "isMasterTrader": False, "spotHedgingStatus": "OFF", "updatedTime": str(self.server_ms()),
                "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0}

    def r_query_api(self, p, key):
        ro = key in self.read_only
        return {"id": "1", "note": "fake", "apiKey": key, "readOnly": 1 if ro else 0, "secret": "",
                "permissions": {"ContractTrade": [] if ro else ["Order", "Position"], "Spot": [], "Wallet": [],
                                "Options": [], "Derivatives": [], "Exchange": [], "NFT": []},
                "ips": ["*"], "type": 1, "deadlineDay": 80, "uta": 1, "isMaster": True}

    # --- positions ----------------------------------------------------------------

    def _slot(self, symbol: str, idx: int) -> dict[str, Any]:
        pos = self.positions.get((symbol, idx))
        lev = self.leverage.get(symbol, 10.0)
        if pos is None:
            return {"positionIdx": idx, "symbol": symbol, "side": "", "size": "0", "avgPrice": "0",
                    "positionValue": "0", "leverage": num(lev), "markPrice": num(self.prices[symbol]),
                    "liqPrice": "", "takeProfit": "", "stopLoss": "", "trailingStop": "0", "unrealisedPnl": "0",
                    "tpslMode": "Full", "positionStatus": "Normal", "createdTime": "0",
                    "updatedTime": str(self.server_ms())}
        mark = self.prices[symbol]
        return {"positionIdx": idx, "symbol": symbol, "side": pos.side, "size": num(pos.size),
                "avgPrice": num(pos.entry), "positionValue": num(pos.size * pos.entry), "leverage": num(pos.leverage),
                "markPrice": num(mark), "liqPrice": num(pos.liq), "bustPrice": num(pos.liq),
                "takeProfit": num(pos.tp), "stopLoss": num(pos.sl), "trailingStop": num(pos.trail),
                "activePrice": num(pos.active_price), "unrealisedPnl": num(pos.sign * (mark - pos.entry) * pos.size),
                "curRealisedPnl": num(-pos.open_fee), "tpslMode": "Full", "positionStatus": "Normal",
                "createdTime": str(int(pos.created * 1000)), "updatedTime": str(self.server_ms())}

    def _idxs(self) -> list[int]:
        return [0] if self.position_mode == 0 else [1, 2]

    def r_positions(self, p, key):
        self._linear(p)
        if p.get("symbol"):
            self._inst(p["symbol"])
            syms = [p["symbol"]]
        elif p.get("settleCoin") == "USDT":
            syms = sorted({s for s, _ in self.positions} | self.touched)
        else:
            raise BybitError(10001, "Missing some parameters that must be filled in, symbol or settleCoin")
        return {"category": "linear", "list": [self._slot(s, i) for s in syms for i in self._idxs()],
                "nextPageCursor": ""}

    def r_set_leverage(self, p, key):
        self._linear(p)
        self._write(key)
        inst = self._inst(p["symbol"])
        if p.get("buyLeverage") != p.get("sellLeverage"):
            raise BybitError(10001, "buy leverage must equal sell leverage in one-way mode")
        lev = float(p["buyLeverage"])
        if not 1 <= lev <= float(inst.max_leverage):
            raise BybitError(10001, f"leverage invalid: {p['buyLeverage']}")
        if self.leverage.get(p["symbol"]) == lev:
            raise BybitError(110043, "Set leverage not modified")
        self.leverage[p["symbol"]] = lev
        for pos in self.positions.values():
            if pos.symbol == p["symbol"]:
                pos.leverage = lev
        return {}

    def r_switch_mode(self, p, key):
        self._linear(p)
        self._write(key)
        mode = int(p.get("mode", -1))
        if mode not in (0, 3):
            raise BybitError(10001, "params error: mode")
        if mode == self.position_mode:
            raise BybitError(110025, "Position mode is not modified")
        if self.positions:
            raise BybitError(110024, "You have existing positions, so position mode cannot be switched")
        self.position_mode = mode
        return {}

    def r_trading_stop(self, p, key):
        self._linear(p)
        self._write(key)
        self._need(p, "symbol", "tpslMode")
        if "positionIdx" not in p:
            raise BybitError(10001, "params error: positionIdx is required")
        idx = int(p["positionIdx"])
        if idx not in self._idxs():
            raise BybitError(10001, "position idx not match position mode")
        pos = self.positions.get((p["symbol"], idx))
        if pos is None:
            raise BybitError(10001, "can not set tp/sl/ts for zero position")
        last = self.prices[pos.symbol]
        changed = False
        for name, attr in (("takeProfit", "tp"), ("stopLoss", "sl")):
            if name in p:
                v = float(p[name])
                if v and name == "takeProfit" and pos.sign * (v - last) <= 0:
                    raise BybitError(10001, f"TakeProfit:{p[name]} set for Buy position should be higher than base_price:{num(last)}")
                if v and name == "stopLoss" and pos.sign * (v - last) >= 0:
                    raise BybitError(10001, f"StopLoss:{p[name]} set for Buy position should lower than base_price:{num(last)}")
                changed |= getattr(pos, attr) != v
                setattr(pos, attr, v)
        if "trailingStop" in p:
            dist = float(p["trailingStop"])
            active = float(p.get("activePrice") or 0)
            changed |= (pos.trail, pos.active_price) != (dist, active)
            pos.trail, pos.active_price = dist, active
            pos.trail_armed = bool(dist) and not active
            pos.trail_best = last
        if not changed:
            raise BybitError(34040, "not modified")
        self._push("position", pos.symbol)
        return {}

    # --- orders -------------------------------------------------------------------

    def _new_id(self) -> str:
        self._seq += 1
        return str(uuid.UUID(int=(0xB1B1 << 112) | self._seq))

    def r_create(self, p, key):
        self._linear(p)
        self._write(key)
        self._need(p, "symbol", "side", "orderType", "qty")
        link = p.get("orderLinkId") or ""
        if link and link in self.by_link:
            raise BybitError(110072, "OrderLinkedID is duplicate")
        if p["orderType"] != "Market":
            raise BybitError(10001, "fake: only market orders")
        sym = p["symbol"]
        inst = self._inst(sym)
        idx = int(p.get("positionIdx", 0))
        if idx not in self._idxs():
            raise BybitError(10001, "position idx not match position mode")
        qty = float(p["qty"])
        if qty <= 0 or not _on_step(qty, inst.qty_step):
            raise BybitError(10001, f"Qty invalid: {p['qty']} is not a multiple of qtyStep {inst.qty_step}")
        if qty < float(inst.min_qty):
            raise BybitError(10001, f"The number of contracts exceeds minimum limit allowed: {p['qty']}")
        side = p["side"]
        reduce = bool(p.get("reduceOnly"))
        last = self.prices[sym]
        if idx == 0:
            pos_key = (sym, 0)
        else:  # hedge: idx 1 holds the long, 2 the short; a close trades against it
            pos_key = (sym, idx)
            if (idx == 1) != (side == "Buy") and not reduce:
                raise BybitError(10001, "position idx not match position mode")
        pos = self.positions.get(pos_key)
        closing = pos is not None and pos.side != side
        if reduce:
            if p.get("takeProfit") or p.get("stopLoss"):
                raise BybitError(10001, "TP/SL cannot be set on a reduce-only order")
            if pos is None or not closing:
                raise BybitError(110017, "current position is zero, cannot fix reduce-only order qty")
            qty = min(qty, pos.size)
        else:
            # One-way: an opposite order nets the position first (and opens the rest the
            # other way); only what it opens needs margin.
            if qty * last < float(inst.min_notional):
                raise BybitError(110094, f"Order does not meet minimum order value {inst.min_notional}USDT")
            opening = qty - (pos.size if closing else 0.0)
            lev = self.leverage.get(sym, 10.0)
            cost = max(opening, 0.0) * last * (1 / lev + self.taker_fee)
            if cost > self.available() + 1e-9:
                raise BybitError(110007, "ab not enough for new order")
            s = 1 if side == "Buy" else -1
            tp, sl = float(p.get("takeProfit") or 0), float(p.get("stopLoss") or 0)
            if tp and s * (tp - last) <= 0:
                raise BybitError(10001, f"TakeProfit:{p['takeProfit']} set for {side} position should be "
                                        f"{'higher' if s > 0 else 'lower'} than base_price:{num(last)}")
            if sl and s * (sl - last) >= 0:
                raise BybitError(10001, f"StopLoss:{p['stopLoss']} set for {side} position should be "
                                        f"{'lower' if s > 0 else 'higher'} than base_price:{num(last)}")
        filled = qty
        if not reduce and self.partial_fills:
            step = inst.qty_step
            filled = float(num(qty * self.partial_fills.pop(0), step))
        order = self._fill(sym, side, filled, last, idx, link, reduce=reduce, create_type="CreateByUser",
                           tp=p.get("takeProfit") or "", sl=p.get("stopLoss") or "", ordered=qty)
        return {"orderId": order["orderId"], "orderLinkId": link}

    def _fill(self, sym: str, side: str, qty: float, price: float, idx: int, link: str, *, reduce: bool,
              create_type: str, stop_type: str = "", tp: str = "", sl: str = "", exec_type: str = "Trade",
              ordered: float | None = None) -> dict:
        """Fill `qty` of an order for `ordered` (default qty: all of it) at `price`."""
        now = time.time()
        fee = qty * price * self.taker_fee
        ordered = qty if ordered is None else ordered
        status = "Filled" if qty >= ordered else "PartiallyFilledCanceled"
        order = {
            "orderId": self._new_id(), "orderLinkId": link, "blockTradeId": "", "symbol": sym, "price": "0",
            "qty": num(ordered), "side": side, "isLeverage": "", "positionIdx": idx, "orderStatus": status,
            "createType": create_type, "cancelType": "UNKNOWN", "rejectReason": "EC_NoError",
            "avgPrice": num(price), "leavesQty": "0", "leavesValue": "0", "cumExecQty": num(qty),
            "cumExecValue": num(qty * price), "cumExecFee": num(fee), "timeInForce": "IOC", "orderType": "Market",
            "stopOrderType": stop_type, "orderIv": "", "triggerPrice": "", "takeProfit": tp, "stopLoss": sl,
            "tpTriggerBy": "LastPrice" if tp else "", "slTriggerBy": "LastPrice" if sl else "",
            "triggerDirection": 0, "triggerBy": "", "lastPriceOnCreated": num(price), "reduceOnly": reduce,
            "closeOnTrigger": reduce and create_type != "CreateByUser", "placeType": "", "smpType": "None",
            "smpGroup": 0, "smpOrderId": "", "tpslMode": "Full" if (tp or sl) else "", "tpLimitPrice": "",
            "slLimitPrice": "", "createdTime": str(int(now * 1000)), "updatedTime": str(int(now * 1000)),
            "category": "linear", "_t": now,
        }
        self.orders.append(order)
        if link:
            self.by_link[link] = order
        self.touched.add(sym)
        key = (sym, idx)
        pos = self.positions.get(key)
        self.wallet -= fee
        opening = qty
        closed = 0.0
        if pos is not None and pos.side != side:
            # Nets the position (one-way: a larger opposite order flips it).
            closed = min(qty, pos.size)
            opening = round(qty - closed, 10)
            close_fee = fee * closed / qty
            gross = pos.sign * (price - pos.entry) * closed
            open_fee = pos.open_fee * closed / pos.size
            self.wallet += gross
            self.closed_pnl.append({
                "symbol": sym, "orderId": order["orderId"], "side": side, "qty": num(closed), "orderPrice": num(price),
                "orderType": "Market", "execType": exec_type, "closedSize": num(closed),
                "cumEntryValue": num(pos.entry * closed), "avgEntryPrice": num(pos.entry),
                "cumExitValue": num(price * closed), "avgExitPrice": num(price),
                "closedPnl": num(gross - close_fee - open_fee), "fillCount": "1", "leverage": num(pos.leverage),
                "openFee": num(open_fee), "closeFee": num(close_fee), "createdTime": str(int(now * 1000)),
                "updatedTime": str(int(now * 1000)), "_t": now,
            })
            pos.open_fee -= open_fee
            pos.size = round(pos.size - closed, 10)
            if pos.size <= 0:
                del self.positions[key]
                pos = None
        if opening > 0 and not reduce:
            if pos is None:
                pos = Pos(sym, idx, side, opening, price, self.leverage.get(sym, 10.0), created=now,
                          open_fee=fee * opening / qty)
                pos.tp, pos.sl = float(tp or 0), float(sl or 0)
                self.positions[key] = pos
            else:
                size = pos.size + opening
                pos.entry = (pos.entry * pos.size + price * opening) / size
                pos.size, pos.open_fee = size, pos.open_fee + fee * opening / qty
        execution = {
            "category": "linear", "symbol": sym, "execId": self._new_id(), "orderId": order["orderId"],
            "orderLinkId": link, "side": side, "execPrice": num(price), "execQty": num(qty), "execFee": num(fee),
            "execType": exec_type, "createType": create_type, "stopOrderType": stop_type,
            "execTime": str(int(now * 1000)), "closedSize": num(closed), "orderQty": num(ordered),
            "leavesQty": "0", "_t": now,
        }
        self.executions.append(execution)
        # The streams, as Bybit pushes them: the fill, the order, the position, the wallet.
        self._push("execution", execution)
        self._push("order", order)
        self._push("position", sym)
        self._push("wallet", None)
        return order

    def _check_triggers(self, key: tuple[str, int], pos: Pos, price: float) -> None:
        s = pos.sign
        if pos.trail:
            if not pos.trail_armed and (not pos.active_price or s * (price - pos.active_price) >= 0):
                pos.trail_armed, pos.trail_best = True, price
            elif pos.trail_armed and s * (price - pos.trail_best) > 0:
                pos.trail_best = price
        close_side = "Sell" if pos.side == "Buy" else "Buy"
        hit = None
        if s * (price - pos.liq) <= 0:
            hit = (pos.liq, "CreateByLiq", "", "BustTrade")
        elif pos.sl and s * (price - pos.sl) <= 0:
            hit = (pos.sl, "CreateByStopLoss", "StopLoss", "Trade")
        elif pos.trail_armed and s * (price - (pos.trail_best - s * pos.trail)) <= 0:
            hit = (pos.trail_best - s * pos.trail, "CreateByTrailingStop", "TrailingStop", "Trade")
        elif pos.tp and s * (price - pos.tp) >= 0:
            hit = (pos.tp, "CreateByTakeProfit", "TakeProfit", "Trade")
        if hit is not None:
            level, ctype, stype, etype = hit
            self._fill(pos.symbol, close_side, pos.size, level, pos.idx, "", reduce=True, create_type=ctype,
                       stop_type=stype, exec_type=etype)

    def _visible(self, o: dict[str, Any], lag: float) -> bool:
        return time.time() - o["_t"] >= lag

    def _public(self, o: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in o.items() if not k.startswith("_")}

    def _find_orders(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for o in reversed(self.orders):  # newest first
            if p.get("symbol") and o["symbol"] != p["symbol"]:
                continue
            if p.get("orderLinkId") and o["orderLinkId"] != p["orderLinkId"]:
                continue
            if p.get("orderId") and o["orderId"] != p["orderId"]:
                continue
            lag = self.lookup_lag_sec if o["createType"] == "CreateByUser" else max(self.lookup_lag_sec, self.history_lag_sec)
            if self._visible(o, lag):
                out.append(self._public(o))
        return out

    def r_realtime(self, p, key):
        self._linear(p)
        if not (p.get("symbol") or p.get("settleCoin")):
            raise BybitError(10001, "Missing some parameters that must be filled in, symbol or settleCoin")
        if not (p.get("orderLinkId") or p.get("orderId")):
            return {"category": "linear", "list": [], "nextPageCursor": ""}  # market orders are never open
        return {"category": "linear", "list": self._find_orders(p)[:1], "nextPageCursor": ""}

    def r_history(self, p, key):
        self._linear(p)
        rows = self._find_orders(p)
        return {"category": "linear", "list": rows[: int(p.get("limit", 20))], "nextPageCursor": ""}

    def r_executions(self, p, key):
        self._linear(p)
        rows = [self._public(e) for e in reversed(self.executions)
                if (not p.get("orderId") or e["orderId"] == p["orderId"])
                and (not p.get("orderLinkId") or e["orderLinkId"] == p["orderLinkId"])
                and (not p.get("symbol") or e["symbol"] == p["symbol"]) and self._visible(e, self.history_lag_sec)]
        return {"category": "linear", "list": rows[: int(p.get("limit", 50))], "nextPageCursor": ""}

    def r_closed_pnl(self, p, key):
        self._linear(p)
        start = int(p.get("startTime", 0))
        end = int(p.get("endTime", 1 << 62))
        rows = [self._public(r) for r in reversed(self.closed_pnl)
                if (not p.get("symbol") or r["symbol"] == p["symbol"])
                and start <= int(r["createdTime"]) <= end and self._visible(r, self.history_lag_sec)]
        return {"category": "linear", "list": rows[: int(p.get("limit", 50))], "nextPageCursor": ""}


ROUTES: dict[tuple[str, str], Callable[[FakeBybit, dict[str, Any], str | None], dict[str, Any]]] = {
    ("GET", "/v5/market/time"): FakeBybit.r_time,
    ("GET", "/v5/market/instruments-info"): FakeBybit.r_instruments,
    ("GET", "/v5/market/tickers"): FakeBybit.r_tickers,
    ("GET", "/v5/market/kline"): FakeBybit.r_kline,
    ("GET", "/v5/account/wallet-balance"): FakeBybit.r_wallet,
    ("GET", "/v5/account/info"): FakeBybit.r_account_info,
    ("GET", "/v5/user/query-api"): FakeBybit.r_query_api,
    ("GET", "/v5/position/list"): FakeBybit.r_positions,
    ("POST", "/v5/position/set-leverage"): FakeBybit.r_set_leverage,
    ("POST", "/v5/position/switch-mode"): FakeBybit.r_switch_mode,
    ("POST", "/v5/position/trading-stop"): FakeBybit.r_trading_stop,
    ("POST", "/v5/order/create"): FakeBybit.r_create,
    ("GET", "/v5/order/realtime"): FakeBybit.r_realtime,
    ("GET", "/v5/order/history"): FakeBybit.r_history,
    ("GET", "/v5/execution/list"): FakeBybit.r_executions,
    ("GET", "/v5/position/closed-pnl"): FakeBybit.r_closed_pnl,
}
PUBLIC = {path for (_, path) in ROUTES if path.startswith("/v5/market/")}
