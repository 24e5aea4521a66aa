"""Marks that tick, and venue-side closes seen at once.

Between monitor passes the engine publishes the positions with fresh marks and uPnL
(PositionsUpdated) and the market watch's prices (MarketUpdated), at most
`marks_per_sec` times a wall-clock second: a price tick never repaints the console more
often than that, whatever the market does or the sim's --speed. The prices come from:

- sim: the local simulated market, read a few times a second (PaperVenue.positions and
  ticker, which also fire its TP/SL/trailing/liquidation as the price crosses them);
- paper: Bybit's public stream through BybitFeed, read the same way; while that stream
  is not live, the feed polls Bybit's REST tickers, every `marks_poll_sec`;
- testnet, demo, live: Bybit's public tickers stream and, with keys, the private
  position, execution, order and wallet streams (engine.venues.bybit_ws); while they are
  not live (polling, stale) positions and tickers are polled over REST every
  `marks_poll_sec`. The 30-second monitor stays the backstop.

A venue-side close (TP, SL, trailing, liquidation, a close by hand) runs the engine's
monitor pass at once, which journals it with the venue's reason and starts the cooldown:
a fill of an order that is not ours (no orderLinkId), or a position that shrank or went
flat while no order of ours for that symbol is in flight. Never two passes at once
(run_monitor's lock); what arrives during a pass makes one more pass after it. The
pushes of our own orders (their orderLinkId is an intent id) belong to the executor, so
an execution that arrives before the REST ack changes nothing here; a message seen
before (its execId, an order's state) is dropped. Each time the private stream comes up
(again) one pass reconciles what happened while it was down.

The engine starts this only when its timers run by themselves: never in a replay
(inline_io, SteppedTimers) nor in a test that drives the timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict, deque
from typing import Any, NamedTuple, Protocol

from engine.events import (
    AccountUpdated,
    BaseEvent,
    BlocksUpdated,
    MarketUpdated,
    PositionClosed,
    PositionOpened,
    PositionsUpdated,
)
from engine.models import Balance, Kline, PositionMeta, Ticker, VenuePosition
from engine.venues.base import AuthError, VenueError
from engine.venues.streams import LIVE, POLLING, Execution, OrderUpdate, PositionUpdate, StreamSink

TAG = "MARKS"  # the code of the events published here (the engine's own say otherwise)
SEEN_KEPT = 5000  # execIds and order states remembered against duplicates
PASS_SPACING_SEC = 0.25  # between a push-triggered pass and the one more after it
CANDLES_KEPT = 1500  # closed 1m candles kept per symbol from the kline stream
FILLED = {"Filled", "PartiallyFilledCanceled"}


class LivePicture(NamedTuple):
    """What the streams say now (LiveMarks.picture)."""

    tickers: dict[str, Ticker]
    positions: list[VenuePosition]
    balance: Balance


class MarksHost(Protocol):
    """What LiveMarks uses of the engine."""

    settings: Any
    venue: Any
    clock: Any
    executor: Any  # in_flight() -> {symbol: what}
    stopping: bool

    def emit(self, event: BaseEvent) -> None: ...

    def attach(self, fn: Any) -> tuple[int, list[BaseEvent]]: ...

    def unsubscribe(self, fn: Any) -> None: ...

    def log_line(self, level: str, message: str, code: str = "") -> None: ...

    async def run_monitor(self, began: Any = None) -> None: ...

    def _publish_state(self) -> None: ...


class LiveMarks(StreamSink):
    """The ticking marks of one engine (see the module doc). Built and started by the
    engine at the end of its start, on its event loop; stop() before the venue closes."""

    def __init__(self, host: MarksHost, *, streams: Any = None, push: bool = False,
                 fixed_status: str | None = None, source: str = "") -> None:
        s = host.settings
        self.host = host
        self.streams = streams  # started and stopped here (the paper feed's too)
        self.push = push  # a live stream pushes prices and positions: nothing is polled
        self.fixed_status = fixed_status
        self.source = source
        self.symbols = list(s.symbols)
        self.period = 1.0 / float(s.marks_per_sec)
        self.poll_sec = max(float(s.marks_poll_sec), self.period)
        self.passes = 0  # monitor passes run for pushes (tests and benches read it)
        self.wanted: deque[str] = deque(maxlen=50)  # why passes were asked for, newest last
        self.flushes = 0  # tick events published
        self._lock = threading.Lock()
        self._positions: dict[str, VenuePosition] = {}
        self._metas: dict[str, PositionMeta] = {}
        self._closing: list[str] = []
        self._known = False  # a PositionsUpdated of the engine's was seen (metadata known)
        self._tickers: dict[str, Ticker] = {}
        self._market: MarketUpdated | None = None
        self._account: AccountUpdated | None = None
        self._balance: Balance | None = None  # the newest seen: the engine's reads, the wallet stream's pushes
        # What the engine has not read over REST since the private stream came (back) up: what
        # changed while it was down was never pushed, so the picture waits for the resync pass.
        self._unsynced: set[str] = set()
        self._resyncs = 0  # times the private stream came (back) up
        self._pass_gen = 0  # _resyncs when the newest monitor pass of ours began
        self._dirty = False
        self._sent_pos: object = None
        self._sent_mkt: object = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._candles: dict[str, deque[Kline]] = {}
        self._flush_lock = threading.Lock()
        self._flush_pending = False
        self._last_flush = 0.0
        self._status_said = ""
        self._said: set[str] = set()
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._pass_task: asyncio.Task[None] | None = None
        self._again = False
        self._wake: asyncio.Event | None = None
        self._emit_lock = getattr(host, "_emit_lock", None)

    # --- building ------------------------------------------------------------------

    @classmethod
    def for_engine(cls, host: MarksHost) -> "LiveMarks | None":
        """The marks for the engine's venue, or None (marks_per_sec 0)."""
        s, venue = host.settings, host.venue
        if not s.marks_per_sec:
            return None
        if venue.name == "sim":
            return cls(host, fixed_status=LIVE, source="the simulated market")
        if venue.name == "paper":
            stream = getattr(getattr(venue, "feed", None), "stream", None)
            return cls(host, streams=stream, source="Bybit's public stream" if stream else "Bybit's REST tickers")
        from engine.venues.bybit_ws import BybitStreams, stream_urls  # pybit: only for Bybit venues

        streams = None
        urls = stream_urls(venue.name, s.bybit_base_url, s.bybit_ws_url)
        if not s.bybit_ws:
            source = "Bybit's REST API (BYBIT_WS off)"
        elif urls.public is None:
            source = f"Bybit's REST API ({urls.why_none})"
        else:
            client = getattr(venue, "client", None)
            keys = getattr(client, "_keys", None)
            marks = cls(host, push=True, source="Bybit's WebSocket")
            marks.streams = BybitStreams(urls, list(s.symbols), marks, keys=keys, stale_sec=s.ws_stale_sec,
                                         now_ms=getattr(client, "now_ms", None))
            return marks
        return cls(host, streams=streams, source=source)

    # --- lifecycle -----------------------------------------------------------------

    @property
    def status(self) -> str:
        """live, stale or polling: what the status bar shows."""
        if self.fixed_status:
            return self.fixed_status
        return self.streams.status if self.streams is not None else POLLING

    def start(self) -> None:
        """On the engine's loop, after its start: listen, connect, pump."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        _, desk = self.host.attach(self._observe)  # what the engine said so far, with the subscription
        for event in desk:
            self._observe(event)
        if self.streams is not None:
            self.streams.start()
        self._status_said = self.status
        self._pump_task = self._loop.create_task(self._pump(), name="scalpdesk-marks")
        self.host.log_line("info", f"marks tick up to {1 / self.period:g} times a second from {self.source}", "FEED")

    async def stop(self) -> None:
        self._stopped = True
        if self._wake is not None:
            self._wake.set()
        self.host.unsubscribe(self._observe)
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
        if self.streams is not None:
            await asyncio.to_thread(self.streams.stop)

    def picture(self, symbols: list[str]) -> LivePicture | None:
        """The account and prices as Bybit's streams keep them, for a check that should not
        wait on REST round trips (an operator's approval: three of them, 100 ms and more
        over the internet, while the price moves). None unless the public and the private
        streams are both live (every change is pushed within moments), the positions are
        known (seeded by the engine's REST reads, kept by the position stream), a balance
        was seen, the pass that reconciles after the private stream came (back) up has read
        both, and every symbol has a pushed price: else the venue is asked, as before."""
        if not (self.push and self.streams is not None and self.streams.private and self.status == LIVE):
            return None
        with self._lock:
            if (not self._known or self._balance is None or self._unsynced
                    or any(s not in self._tickers for s in symbols)):
                return None
            return LivePicture({s: self._tickers[s] for s in symbols}, list(self._positions.values()), self._balance)

    # --- what the engine says ------------------------------------------------------------

    def _observe(self, event: BaseEvent) -> None:
        """Every engine event (in the emitting thread, under the engine's emit lock)."""
        if event.code == TAG:
            return
        with self._lock:
            if isinstance(event, PositionsUpdated):
                self._positions = {p.symbol: p for p in event.positions}
                self._metas = {m.symbol: m for m in event.metas}
                self._closing = list(event.closing)
                self._known = True
                if self._pass_gen == self._resyncs:  # read by a pass begun after the stream came up
                    self._unsynced.discard("positions")
                self._sent_pos = _pos_key(event.positions)
            elif isinstance(event, PositionOpened):
                self._metas[event.meta.symbol] = event.meta
            elif isinstance(event, PositionClosed):
                if event.trade.cooldown_sec is not None:  # all of it (a part keeps its metadata)
                    self._metas.pop(event.trade.symbol, None)
                    self._positions.pop(event.trade.symbol, None)
                    self._dirty = True
            elif isinstance(event, MarketUpdated):
                self._market = event
                self._sent_mkt = _mkt_key(event.features)
            elif isinstance(event, BlocksUpdated):
                if self._market is not None:
                    self._market = self._market.model_copy(update={"blocks": event.blocks})
            elif isinstance(event, AccountUpdated):
                self._account = event
                self._balance = event.balance
                if self._pass_gen == self._resyncs:
                    self._unsynced.discard("account")

    # --- the pump: status, polling ------------------------------------------------------

    async def _pump(self) -> None:
        """Every `period`: say a change of status; poll the venue (every period while its
        prices are live, every poll_sec while a stream is not; never while a live stream
        pushes everything)."""
        assert self._wake is not None
        polled = 0.0
        while not self._stopped:
            status = self.status
            if status != self._status_said:
                self._status_said = status
                self.host._publish_state()
                polled = 0.0  # a change: look now
            live = status == LIVE
            now = time.monotonic()  # wall clock: polling pace
            if not (self.push and live) and now - polled >= (self.period if live else self.poll_sec) - 1e-3:
                polled = now
                await self._poll_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period)

    async def _poll_once(self) -> None:
        try:
            positions, tickers = await asyncio.to_thread(self._read_venue)
        except AuthError as e:
            self._once("auth", f"marks not polled: {e}")
            return
        except VenueError as e:
            self._once("poll", f"marks not polled ({e}); trying again")
            return
        self._said.discard("poll")
        gone = self._take(positions, tickers)
        if gone:
            self._want_pass(f"polled: {', '.join(gone)} closed or shrank on the venue")
        self._request_flush()

    def _read_venue(self) -> tuple[list[VenuePosition], dict[str, Ticker]]:
        venue = self.host.venue
        positions = venue.positions()
        bulk = getattr(venue, "tickers", None)
        if bulk is not None:
            return positions, dict(bulk(self.symbols))
        tickers = {}
        for sym in self.symbols:
            try:
                tickers[sym] = venue.ticker(sym)
            except VenueError as e:
                if isinstance(e, AuthError):
                    raise
        return positions, tickers

    def _take(self, positions: list[VenuePosition], tickers: dict[str, Ticker]) -> list[str]:
        """A poll's positions and prices; the symbols whose position went or shrank."""
        fresh = {p.symbol: p for p in positions}
        with self._lock:
            # a poll lists every position: one not listed is flat
            gone = self._shrunk({**dict.fromkeys(self._positions), **fresh}) if self._known else []
            self._positions = fresh
            self._tickers.update(tickers)
            self._dirty = True
        return gone

    def _shrunk(self, fresh: dict[str, VenuePosition | None]) -> list[str]:
        """Symbols whose position went flat or shrank (or turned) on the venue with no
        order of ours for it in flight: closed there (TP, SL, ...). Under self._lock."""
        flying = self.host.executor.in_flight()
        out = []
        for sym, old in self._positions.items():
            if sym not in fresh or sym in flying:
                continue
            new = fresh[sym]
            if new is None or new.side != old.side or new.size < old.size - 1e-12:
                out.append(sym)
        return out

    # --- pushes (pybit's threads) ---------------------------------------------------------

    def on_ticker(self, ticker: Ticker) -> None:
        with self._lock:
            old = self._tickers.get(ticker.symbol)
            self._tickers[ticker.symbol] = ticker
            if old is not None and (old.last, old.mark) == (ticker.last, ticker.mark):
                return
            self._dirty = True
        self._request_flush()

    def on_kline(self, symbol: str, kline: Kline, confirmed: bool) -> None:
        if not confirmed:
            return
        with self._lock:
            rows = self._candles.setdefault(symbol, deque(maxlen=CANDLES_KEPT))
            if rows and kline.start <= rows[-1].start:
                return  # a duplicate, or a candle from before the newest
            if rows and kline.start - rows[-1].start > 60:
                rows.clear()  # a gap: what is kept starts again here
            rows.append(kline)

    def closed_1m(self, symbol: str, after: float) -> list[Kline] | None:
        """The 1m candles closed after the one that started at `after`, if the kline stream
        delivered every one of them since (None: it did not, ask the venue)."""
        with self._lock:
            rows = list(self._candles.get(symbol, ()))
        if self.status != LIVE or not rows or rows[0].start > after + 60:
            return None
        return [k for k in rows if k.start > after]

    def on_positions(self, updates: list[PositionUpdate]) -> None:
        with self._lock:
            fresh: dict[str, VenuePosition | None] = {u.symbol: u.position for u in updates}
            gone = self._shrunk(fresh) if self._known else []
            for sym, pos in fresh.items():
                if pos is None:
                    self._positions.pop(sym, None)
                else:
                    self._positions[sym] = pos
            self._dirty = True
        if gone:
            self._want_pass(f"position stream: {', '.join(gone)} closed or shrank on the venue")
        self._request_flush()

    def on_executions(self, fills: list[Execution]) -> None:
        # Ours carry the intent id as orderLinkId: the executor has them (before or after
        # its ack). A fill without one is the venue's (TP, SL, trailing, liquidation) or a
        # hand's: reconcile now.
        venue = [f for f in fills if not f.order_link_id and self._first(f"x:{f.exec_id or f.order_id}")]
        if venue:
            self._want_pass(f"execution stream: {venue[0].symbol} {venue[0].create_type or venue[0].exec_type}")

    def on_orders(self, orders: list[OrderUpdate]) -> None:
        venue = [o for o in orders
                 if not o.order_link_id and o.status in FILLED and self._first(f"o:{o.order_id}:{o.status}")]
        if venue:
            self._want_pass(f"order stream: {venue[0].symbol} {venue[0].create_type} {venue[0].status}")

    def on_wallet(self, balance: Balance) -> None:
        with self._lock:
            self._balance = balance
        loop, account = self._loop, self._account
        if loop is None or account is None or self._stopped:
            return
        event = account.model_copy(update={"ts": self.host.clock.now(), "balance": balance, "code": TAG})
        loop.call_soon_threadsafe(self._emit, event)

    def on_status(self, status: str) -> None:
        self._poke()

    def on_resync(self) -> None:
        with self._lock:
            self._unsynced = {"positions", "account"}  # until a pass begun after this has read them
            self._resyncs += 1
        self._want_pass("private stream up: reconcile what happened while it was down")

    def _first(self, key: str) -> bool:
        """True the first time `key` is seen (duplicates and replays are dropped)."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > SEEN_KEPT:
                self._seen.popitem(last=False)
            return True

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not self._stopped:
            loop.call_soon_threadsafe(wake.set)

    # --- monitor passes ---------------------------------------------------------------------

    def _want_pass(self, why: str) -> None:
        """A monitor pass now (from any thread); one more after the running one."""
        self.wanted.append(why)
        loop = self._loop
        if loop is not None and not self._stopped:
            loop.call_soon_threadsafe(self._schedule_pass)

    def _schedule_pass(self) -> None:
        if self._stopped or self.host.stopping:
            return
        if self._pass_task is not None and not self._pass_task.done():
            self._again = True
            return
        assert self._loop is not None
        self._pass_task = self._loop.create_task(self._passes(), name="scalpdesk-marks-pass")

    async def _passes(self) -> None:
        while True:
            self._again = False
            self.passes += 1
            await self.host.run_monitor(began=self._pass_began)
            if not self._again or self._stopped or self.host.stopping:
                return
            await asyncio.sleep(PASS_SPACING_SEC)

    def _pass_began(self) -> None:
        """Our pass holds the monitor lock and is about to read the venue: what it publishes
        was read after every resync said so far (a pass that held the lock before it was not)."""
        with self._lock:
            self._pass_gen = self._resyncs

    # --- publishing ----------------------------------------------------------------------------

    def _request_flush(self) -> None:
        """Publish what changed, now or when the throttle allows (from any thread)."""
        loop = self._loop
        if loop is None or self._stopped:
            return
        with self._flush_lock:
            if self._flush_pending:
                return
            self._flush_pending = True
        loop.call_soon_threadsafe(self._flush_due)

    def _flush_due(self) -> None:
        wait = self._last_flush + self.period - time.monotonic()  # wall clock: repaints per second
        if wait > 0:
            assert self._loop is not None
            self._loop.call_later(wait, self._flush)
        else:
            self._flush()

    def _flush(self) -> None:
        with self._flush_lock:
            self._flush_pending = False
        if self._stopped:
            return
        self._last_flush = time.monotonic()  # wall clock: repaints per second
        # Under the engine's emit lock: a monitor pass's PositionsUpdated cannot slip in
        # between what is built here and its emission (a closed position shown again).
        with self._emit_lock if self._emit_lock is not None else contextlib.nullcontext():
            for event in self._build():
                self.flushes += 1
                self.host.emit(event)

    def _emit(self, event: BaseEvent) -> None:
        if not self._stopped:
            self.host.emit(event)

    def _build(self) -> list[BaseEvent]:
        now = self.host.clock.now()
        out: list[BaseEvent] = []
        with self._lock:
            if not self._dirty:
                return out
            self._dirty = False
            if self._known:
                positions = [self._marked(p) for _, p in sorted(self._positions.items())]
                key = _pos_key(positions)
                if key != self._sent_pos:
                    self._sent_pos = key
                    held = {p.symbol for p in positions}
                    out.append(PositionsUpdated(
                        ts=now, level="debug", code=TAG, positions=positions,
                        metas=[m for _, m in sorted(self._metas.items())],
                        closing=[s for s in self._closing if s in held],
                    ))
            market = self._market
            if market is not None:
                feats = dict(market.features)
                for sym, f in market.features.items():
                    t = self._tickers.get(sym)
                    if t is not None and t.last:
                        mid = (t.bid + t.ask) / 2 or t.last
                        feats[sym] = f.model_copy(update={
                            "price": t.last, "bid": t.bid, "ask": t.ask, "funding_rate": t.funding_rate,
                            "spread_pct": (t.ask - t.bid) / mid * 100.0 if mid else 0.0,
                        })
                key = _mkt_key(feats)
                if key != self._sent_mkt:
                    self._sent_mkt = key
                    out.append(market.model_copy(update={"ts": now, "features": feats, "code": TAG}))
        return out

    def _marked(self, p: VenuePosition) -> VenuePosition:
        t = self._tickers.get(p.symbol)
        mark = (t.mark or t.last) if t is not None else 0.0
        if not mark or mark == p.mark_price:
            return p
        sign = 1 if p.side == "long" else -1
        return p.model_copy(update={"mark_price": mark, "unrealised_pnl": sign * (mark - p.entry_price) * p.size})

    def _once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.host.log_line("warning", text, "FEED")


def _mkt_key(features: dict) -> object:
    return tuple((s, f.price) for s, f in sorted(features.items()))


def _pos_key(positions: list[VenuePosition]) -> object:
    return tuple((p.symbol, p.side, p.size, p.mark_price, p.take_profit, p.stop_loss) for p in positions)
