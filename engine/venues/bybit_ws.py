"""Bybit's WebSocket streams through pybit: public tickers and 1m klines for every
symbol, and on a key-holding venue the private position, execution, order and wallet
streams.

pybit's `unified_trading.WebSocket` does the protocol (auth, subscribe, Bybit's text
ping, merging ticker deltas into the snapshot); its own reconnection is turned off,
because in pybit 5.17.0:

- it reconnects only after three error types: a server's clean close or a refused
  connection ends the stream for good;
- it retries `retries` times with no pause between attempts, and its last attempt
  raises even when it connected;
- an exception in a callback ends the connection (websocket-client hands it to
  on_error, which exits);
- subscribe() waits forever for a connection that is gone.

So each connection (public, private) is kept by a thread of its own here: connect,
subscribe, watch; reconnect with back-off (and subscribe again, on a fresh pybit
socket); a public stream silent for `stale_sec` is stale (REST polling takes over),
silent twice that long it is reconnected; every time the private stream is up again
the sink hears `on_resync()`, so the engine reconciles once over REST and whatever
happened while it was down is not lost.

Callbacks run in pybit's own threads (one per connection, websocket-client's): the
sink must be thread-safe and quick, and it never sees an exception from here.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import websocket
from pybit.unified_trading import WebSocket

from engine.models import Balance
from engine.venues import bybit_parse as parse
from engine.venues.bybit_http import ApiKeys
from engine.venues.streams import (
    LIVE,
    POLLING,
    STALE,
    Execution,
    OrderUpdate,
    PositionUpdate,
    StreamSink,
)

log = logging.getLogger(__name__)

PING_SEC = 20  # Bybit asks for a ping every 20 s
PING_TIMEOUT_SEC = 10  # no pong this long after a ping: the connection is dead
CONNECT_TIMEOUT_SEC = 10.0
AUTH_EXPIRE_MS = 10_000
BACKOFF_SEC = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
WATCH_SEC = 0.1  # how often a connection's thread looks at it
PUBLIC_PATH, PRIVATE_PATH = "/v5/public/linear", "/v5/private"
MAINNET, TESTNET, DEMO = "wss://stream.bybit.com", "wss://stream-testnet.bybit.com", "wss://stream-demo.bybit.com"
PRIVATE_TOPICS = ("position", "execution", "order", "wallet")
NOT_A_CLOSE = {"Funding"}  # execTypes that move no position


# --- where the streams are ------------------------------------------------------------

@dataclass(frozen=True)
class StreamUrls:
    public: str | None
    private: str | None
    why_none: str = ""  # when there is no stream, why (said once in the log)


def stream_urls(venue: str, rest_url: str | None = None, ws_url: str | None = None) -> StreamUrls:
    """The public (linear) and private stream URLs of a venue.

    BYBIT_WS_URL (`ws_url`, a base such as wss://stream.bybit.com or ws://127.0.0.1:PORT)
    wins; else a BYBIT_BASE_URL on a Bybit host gives its stream host (api… → stream…);
    else the venue's own. Demo trading has a private stream only: its prices are mainnet's.
    A REST override that is not a Bybit host (a proxy, a loopback fake) has no stream
    unless BYBIT_WS_URL says where: prices are polled."""
    if ws_url:
        base = ws_url.rstrip("/")
        for suffix in (PUBLIC_PATH, PRIVATE_PATH):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        return StreamUrls(base + PUBLIC_PATH, base + PRIVATE_PATH)
    if rest_url:
        host = urlsplit(rest_url).hostname or ""
        label, _, domain = host.partition(".")
        if not (label.startswith("api") and ("bybit" in domain or "bytick" in domain)):
            return StreamUrls(None, None, f"BYBIT_BASE_URL {rest_url} is not a Bybit host and BYBIT_WS_URL is not set")
        sub = {"api": "stream", "api-testnet": "stream-testnet", "api-demo": "stream-demo"}.get(label)
        if sub is None:
            return StreamUrls(None, None, f"no WebSocket host known for {host}; set BYBIT_WS_URL")
        private = f"wss://{sub}.{domain}{PRIVATE_PATH}"
        public = f"wss://{'stream' if sub == 'stream-demo' else sub}.{domain}{PUBLIC_PATH}"
        return StreamUrls(public, private)
    private_base = {"testnet": TESTNET, "demo": DEMO, "live": MAINNET}.get(venue)
    public_base = TESTNET if venue == "testnet" else MAINNET
    return StreamUrls(public_base + PUBLIC_PATH, private_base + PRIVATE_PATH if private_base else None)


# --- one pybit socket -----------------------------------------------------------------

class _Gone(Exception):
    """The connection went away while pybit waited for it."""


class _Socket(WebSocket):
    """pybit's WebSocket on our URL, its reconnection off; every frame is a sign of life."""

    def __init__(self, url: str, channel_type: str, *, alive: Callable[[], None],
                 now_ms: Callable[[], int], **kwargs: Any) -> None:
        self._url = url
        self._alive = alive
        self._now_ms = now_ms
        self._deadline: float | None = None
        self._early: dict[str, Callable[[dict], None]] = {}  # callbacks of subscriptions being sent
        self.auth_ok = threading.Event()
        self.auth_error = ""
        self.error = ""
        self.closed = False  # a connection of this socket has closed
        super().__init__(channel_type, restart_on_error=False, retries=2, ping_interval=PING_SEC,
                         ping_timeout=PING_TIMEOUT_SEC, **kwargs)

    def _connect(self, url: str) -> None:  # pybit's connect, on our URL (a plain URL formats to itself)
        super()._connect(self._url)

    def _on_message(self, message: str) -> None:
        self._alive()
        try:
            super()._on_message(message)
        except Exception as e:  # noqa: BLE001 - pybit would end the connection on it
            log.warning("Bybit WebSocket: message not understood (%s): %.200s", type(e).__name__, message)

    def _on_pong(self) -> None:
        self._alive()
        super()._on_pong()

    def _on_error(self, error: Exception) -> None:
        # pybit exits and raises (or reconnects by itself): the watching thread decides.
        self.error = f"{type(error).__name__}: {error}"

    def _auth(self) -> None:
        # pybit's auth with the expiry on Bybit's clock as the REST client knows it (a
        # skewed local clock would have it refused).
        expires = self._now_ms() + AUTH_EXPIRE_MS
        secret = self.api_secret or ""
        signature = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(), "sha256").hexdigest()
        self.ws.send(json.dumps({"op": "auth", "args": [self.api_key, expires, signature]}))

    def _process_subscription_message(self, message: dict[str, Any]) -> None:
        # pybit looks the answer's req_id up in what it records only after sending, so a
        # fast answer finds nothing (KeyError); only a refusal is news.
        if message.get("success") is False:
            log.warning("Bybit refused a subscription: %s", message.get("ret_msg") or message)

    def _process_auth_message(self, message: dict[str, Any]) -> None:
        if message.get("success") is True:
            self.auth = True
            self.auth_ok.set()
        else:  # pybit raises here, which would end the connection without a word
            self.auth_error = str(message.get("ret_msg") or message)

    def _on_close(self) -> None:
        self.closed = True
        super()._on_close()

    def is_connected(self) -> bool:
        ok = bool(super().is_connected())
        # While subscribing, the socket was connected (pybit's connect returned): not
        # connected any more and closed, it is gone, and waiting for the deadline (10 s)
        # only put the reconnection off.
        if not ok and self._deadline is not None and (self.closed or time.monotonic() > self._deadline):
            raise _Gone("connection lost while subscribing")
        return ok

    def subscribe_within(self, seconds: float, topic: str, callback: Callable[[dict], None],
                         symbol: str | list[str] | bool = False) -> None:
        """pybit's subscribe, which would wait forever for a connection that is gone."""
        symbols = [symbol] if isinstance(symbol, str) else symbol or []
        for name in [topic.format(symbol=s) for s in symbols] if "{symbol}" in topic else [topic]:
            self._early[name] = callback
        self._deadline = time.monotonic() + seconds
        try:
            self.subscribe(topic, callback, symbol)  # type: ignore[arg-type]
        finally:
            self._deadline = None

    def _get_callback(self, topic: str) -> Callable[[dict], None]:
        # pybit registers a topic's callback only after sending its subscription: the
        # snapshot Bybit answers with can come first, and would be lost (KeyError).
        return self.callback_directory.get(topic) or self._early[topic]

    def close(self) -> None:
        """pybit's exit() without its wait for a close answer that may never come (3 s)."""
        self.exited = True
        self._stop_custom_ping_timer()
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close(timeout=0.2)
            except Exception:  # noqa: BLE001 - closing what may be half gone
                pass


# --- one kept connection --------------------------------------------------------------

class _Link:
    """One connection kept up by its own thread: connect, subscribe, watch, reconnect."""

    def __init__(self, owner: "BybitStreams", name: str, url: str, private: bool) -> None:
        self.owner = owner
        self.name = name
        self.url = url
        self.private = private
        self.state = POLLING
        self.connects = 0  # connections that came up
        self.last_frame = 0.0  # monotonic: any frame (pong included)
        self.last_data = 0.0  # monotonic: a message of a subscribed topic
        self.socket: _Socket | None = None
        self.opened = 0.0  # monotonic: when the current connection came up
        self.refused = ""  # the keys were refused: not tried again
        self.thread = threading.Thread(target=self._run, name=f"scalpdesk-ws-{name}", daemon=True)

    def _frame(self) -> None:
        self.last_frame = time.monotonic()

    def data(self) -> None:
        self.last_data = time.monotonic()

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.owner._changed()

    def _run(self) -> None:
        attempt = 0
        stop = self.owner._stop
        while not stop.is_set():
            was_live = False
            try:
                self.socket = self._open()
            except Exception as e:  # noqa: BLE001 - a refused or failed connection: try again later
                self._set(POLLING)
                self.owner._say(self, f"not connected ({_short(e)})")
            else:
                self.connects += 1
                was_live = self._watch(self.socket)
                self.socket.close()
                self.socket = None
                self._set(POLLING)
            if self.refused or stop.is_set():
                return
            if was_live:
                attempt = 0
            stop.wait(BACKOFF_SEC[min(attempt, len(BACKOFF_SEC) - 1)])
            attempt += 1

    def _open(self) -> _Socket:
        o = self.owner
        keys = o.keys if self.private else None
        sock = _Socket(self.url, "private" if self.private else "linear", alive=self._frame, now_ms=o.now_ms,
                       testnet=False, api_key=keys.key if keys else None, api_secret=keys.secret if keys else None)
        self.opened = self.last_frame = self.last_data = time.monotonic()
        try:
            if self.private:
                for topic in PRIVATE_TOPICS:
                    sock.subscribe_within(CONNECT_TIMEOUT_SEC, topic, o._guarded(topic))
            else:
                sock.subscribe_within(CONNECT_TIMEOUT_SEC, "tickers.{symbol}", o._guarded("tickers"), o.symbols)
                sock.subscribe_within(CONNECT_TIMEOUT_SEC, "kline.1.{symbol}", o._guarded("kline"), o.symbols)
        except BaseException:
            sock.close()
            raise
        return sock

    def _watch(self, sock: _Socket) -> bool:
        """Until the connection is lost, refused or silent too long. True if it was live."""
        o = self.owner
        opened = self.opened
        seen_live = False
        while not o._stop.wait(WATCH_SEC):
            if o._stop.is_set():
                break
            if sock.auth_error:
                self.refused = f"Bybit refused the keys on the private stream: {sock.auth_error}"
                o._say(self, self.refused, level=logging.ERROR)
                return seen_live
            if not sock.is_connected():
                if not o._stop.is_set():
                    o._say(self, f"connection lost ({sock.error or 'closed'}); reconnecting")
                return seen_live
            now = time.monotonic()
            if self.private:
                up = sock.auth_ok.is_set()
                if not up and now - opened > CONNECT_TIMEOUT_SEC:
                    o._say(self, "no answer to the authentication; reconnecting")
                    return seen_live
                if up and not seen_live:
                    seen_live = True
                    self._set(LIVE)
                    o._resync()
                continue
            silent = now - self.last_data
            got_data = self.last_data > opened  # the snapshot sent on subscribe counts
            if silent > 2 * o.stale_sec:
                o._say(self, f"no data for {silent:.0f}s; reconnecting")
                return seen_live
            if silent > o.stale_sec:
                if self.state != STALE:
                    o._say(self, f"no data for {o.stale_sec:g}s: stale; prices are polled meanwhile")
                self._set(STALE)
            elif got_data:
                if self.state != LIVE:
                    o._say(self, "live", level=logging.INFO)
                seen_live = True
                self._set(LIVE)
        return seen_live


# --- the streams of a venue -------------------------------------------------------------

class BybitStreams:
    """The public stream of `symbols` and, with keys, the private stream; thread-safe."""

    def __init__(self, urls: StreamUrls, symbols: list[str], sink: StreamSink, *, keys: ApiKeys | None = None,
                 stale_sec: float = 10.0, now_ms: Callable[[], int] | None = None) -> None:
        self.urls = urls
        self.symbols = list(dict.fromkeys(symbols))
        self.sink = sink
        self.keys = keys
        self.stale_sec = stale_sec
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))  # wall clock: Bybit's, for the auth expiry
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._status = POLLING
        self._said: dict[str, str] = {}
        self.links: list[_Link] = []
        if urls.public:
            self.links.append(_Link(self, "public", urls.public, private=False))
        if urls.private and keys is not None:
            self.links.append(_Link(self, "private", urls.private, private=True))
        self._by_topic: dict[str, Callable[[dict], None]] = {
            "tickers": self._ticker, "kline": self._kline, "position": self._positions,
            "execution": self._executions, "order": self._orders, "wallet": self._wallet,
        }

    @property
    def status(self) -> str:
        """live: every stream up and its data fresh; stale: connected but a public stream
        has been silent for stale_sec; polling: not connected (REST is the source)."""
        return self._status

    @property
    def private(self) -> bool:
        return any(link.private and not link.refused for link in self.links)

    def link(self, name: str) -> _Link | None:
        return next((k for k in self.links if k.name == name), None)

    def start(self) -> None:
        _quiet_libraries()
        websocket.setdefaulttimeout(CONNECT_TIMEOUT_SEC)  # a connect that hangs ends
        for link in self.links:
            link.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        for link in self.links:
            sock = link.socket
            if sock is not None:
                sock.close()
        until = time.monotonic() + timeout
        for link in self.links:
            if link.thread.is_alive():
                link.thread.join(max(until - time.monotonic(), 0.0))

    # --- state -----------------------------------------------------------------------

    def _changed(self) -> None:
        states = [k.state for k in self.links if not k.refused]
        if not states or POLLING in states or len(states) < len(self.links):
            status = POLLING
        elif STALE in states:
            status = STALE
        else:
            status = LIVE
        with self._lock:
            if status == self._status:
                return
            self._status = status
        self._call("on_status", status)

    def _resync(self) -> None:
        self._call("on_resync")

    def _say(self, link: _Link, text: str, level: int = logging.WARNING) -> None:
        """A connection's news, each line once until it changes (reconnect loops stay quiet)."""
        if self._said.get(link.name) == text:
            return
        self._said[link.name] = text
        log.log(level, "Bybit %s WebSocket: %s", link.name, text)

    def _call(self, method: str, *args: Any) -> None:
        try:
            getattr(self.sink, method)(*args)
        except Exception:  # noqa: BLE001 - pybit would end the connection on it
            log.exception("stream handler %s failed", method)

    # --- messages (pybit's threads) -------------------------------------------------------

    def _guarded(self, topic: str) -> Callable[[dict], None]:
        handler = self._by_topic[topic]

        def run(message: dict) -> None:
            try:
                handler(message)
            except Exception:  # noqa: BLE001 - a message we cannot read must not end the stream
                log.warning("Bybit WebSocket: %s message not understood: %.200s", topic, message, exc_info=True)

        return run

    def _public_data(self) -> None:
        link = self.links[0] if self.links and not self.links[0].private else None
        if link is not None:
            link.data()

    def _ticker(self, message: dict) -> None:
        self._public_data()
        data = message.get("data") or {}
        if data.get("symbol") and data.get("lastPrice"):
            self._call("on_ticker", parse.ticker(data))

    def _kline(self, message: dict) -> None:
        self._public_data()
        symbol = str(message.get("topic", "")).rsplit(".", 1)[-1]
        for row in message.get("data") or []:
            self._call("on_kline", symbol, parse.ws_kline(row), bool(row.get("confirm")))

    def _positions(self, message: dict) -> None:
        updates = [PositionUpdate(r["symbol"], parse.position(r)) for r in _linear(message)]
        if updates:
            self._call("on_positions", updates)

    def _executions(self, message: dict) -> None:
        fills = [
            Execution(
                symbol=r["symbol"], exec_id=str(r.get("execId") or ""), order_id=str(r.get("orderId") or ""),
                order_link_id=str(r.get("orderLinkId") or ""), side=str(r.get("side") or ""),
                price=parse.f(r.get("execPrice")), qty=parse.f(r.get("execQty")),
                closed_size=parse.f(r.get("closedSize")), exec_type=str(r.get("execType") or ""),
                create_type=str(r.get("createType") or ""), stop_order_type=str(r.get("stopOrderType") or ""),
            )
            for r in _linear(message) if r.get("execType") not in NOT_A_CLOSE
        ]
        if fills:
            self._call("on_executions", fills)

    def _orders(self, message: dict) -> None:
        orders = [
            OrderUpdate(symbol=r["symbol"], order_id=str(r.get("orderId") or ""),
                        order_link_id=str(r.get("orderLinkId") or ""), status=str(r.get("orderStatus") or ""),
                        create_type=str(r.get("createType") or ""))
            for r in _linear(message)
        ]
        if orders:
            self._call("on_orders", orders)

    def _wallet(self, message: dict) -> None:
        for row in message.get("data") or []:
            if row.get("accountType") == "UNIFIED":
                self._call("on_wallet", Balance(equity=parse.f(row.get("totalEquity")),
                                                available=parse.f(row.get("totalAvailableBalance"))))


def _linear(message: dict) -> list[dict]:
    # The all-in-one private topics carry every category; rows without one are taken as linear.
    return [r for r in message.get("data") or [] if r.get("category", "linear") == "linear" and r.get("symbol")]


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) < 160 else text[:160] + "…"


_quieted = False


def _quiet_libraries() -> None:
    """websocket-client and pybit log every failed attempt at ERROR (on stderr, under the
    console); the links say what matters, once, through the engine's log."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    for name in ("websocket", "pybit._websocket_stream"):
        lg = logging.getLogger(name)
        lg.addHandler(logging.NullHandler())
        lg.propagate = False
