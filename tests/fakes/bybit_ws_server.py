"""A loopback WebSocket server speaking Bybit V5's stream format, fed by the FakeBybit
behind the loopback REST server, so the stream and the REST answers agree.

Public (/v5/public/linear): `tickers.{symbol}` (a snapshot on subscribe, then deltas on
every set_price) and `kline.1.{symbol}` (the forming 1m candle on every price; a closed
one with close_candle()). Private (/v5/private): `op: auth` checked as Bybit does (HMAC
of "GET/realtime" + expires with the key's secret, expires in the future), then
`position`, `execution`, `order`, `wallet`, pushed as the exchange fills orders and
triggers TP/SL/trailing/liquidation. Bybit's text ping is answered (public: ret_msg
"pong"; private: op "pong").

Test controls: drop() cuts every connection (abruptly, no close frame), refuse_for()
refuses new ones for a while, `silent` stops the data (pongs still go: a stale stream),
`duplicate` sends every push twice, push() sends any message. `sent` holds every data
message with the perf_counter time it left (the latency bench reads it).

    with BybitFakeServer() as rest, BybitWsServer(rest.exchange) as ws:
        settings = ... bybit_base_url=rest.url, bybit_ws_url=ws.url
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from tests.fakes.bybit_exchange import FakeBybit, num


class _Client:
    def __init__(self, server: "BybitWsServer", conn: ServerConnection, private: bool) -> None:
        self.server = server
        self.conn = conn
        self.private = private
        self.topics: set[str] = set()
        self.authed = False
        self.lock = threading.Lock()  # topics and the order of what is queued
        self.out: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.conn_id = uuid.uuid4().hex[:16]
        self.sender = threading.Thread(target=self._send_loop, daemon=True, name="fake-ws-send")
        self.sender.start()

    def queue(self, message: dict[str, Any], topic: str = "") -> None:
        self.out.put((topic, json.dumps(message)))

    def _send_loop(self) -> None:
        while True:
            item = self.out.get()
            if item is None:
                return
            topic, text = item
            try:
                if topic:
                    self.server._sent(topic, text)
                self.conn.send(text)
            except (ConnectionClosed, OSError, RuntimeError):
                return


class BybitWsServer:
    """Bybit's public linear and private streams on 127.0.0.1, a context manager."""

    def __init__(self, exchange: FakeBybit) -> None:
        self.exchange = exchange
        self.silent = False
        self.duplicate = False
        self.refuse_auth = False  # every auth answered "Invalid apikey"
        self.connects = {"public": 0, "private": 0}
        self.subscribed: list[tuple[str, str]] = []  # (public/private, topic) in order
        self.sent: list[tuple[float, str, str]] = []  # (perf_counter, topic, message) of data pushes
        self._refuse_until = 0.0
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._seq = 0
        self._server = serve(self._handle, "127.0.0.1", 0, compression=None, ping_interval=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-ws")
        exchange.listeners.append(self._on_exchange)

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}"

    def start(self) -> "BybitWsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._on_exchange in self.exchange.listeners:
            self.exchange.listeners.remove(self._on_exchange)
        self.drop()
        self._server.shutdown()

    def __enter__(self) -> "BybitWsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- controls -----------------------------------------------------------------------

    def drop(self) -> None:
        """Cut every connection at once (no close frame: as a network that went away)."""
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            c.out.put(None)
            try:
                c.conn.close_socket()
            except OSError:
                pass

    def refuse_for(self, seconds: float) -> None:
        """New connections are closed at once for `seconds`."""
        self._refuse_until = time.monotonic() + seconds

    def clients(self, private: bool | None = None) -> int:
        with self._lock:
            return sum(1 for c in self._clients if private is None or c.private == private)

    def push(self, topic: str, message: dict[str, Any]) -> None:
        """Send `message` to every client subscribed to `topic` (silent or not)."""
        for c in self._subscribers(topic):
            c.queue(message, topic)

    def close_candle(self, symbol: str, start_ms: int, close: float) -> None:
        """Push a closed (confirmed) 1m candle."""
        row = self._candle(symbol, start_ms, close, confirm=True)
        self._data(f"kline.1.{symbol}", {"topic": f"kline.1.{symbol}", "type": "snapshot", "data": [row],
                                         "ts": int(time.time() * 1000)})

    # --- connections ----------------------------------------------------------------------

    def _handle(self, conn: ServerConnection) -> None:
        path = conn.request.path if conn.request is not None else ""
        private = path.startswith("/v5/private")
        if not (private or path.startswith("/v5/public/linear")) or time.monotonic() < self._refuse_until:
            conn.close_socket()
            return
        client = _Client(self, conn, private)
        with self._lock:
            self._clients.add(client)
            self.connects["private" if private else "public"] += 1
        try:
            for text in conn:
                try:
                    msg = json.loads(text)
                except ValueError:
                    continue
                self._command(client, msg)
        except (ConnectionClosed, OSError):
            pass
        finally:
            client.out.put(None)
            with self._lock:
                self._clients.discard(client)

    def _command(self, c: _Client, msg: dict[str, Any]) -> None:
        op, req_id = msg.get("op"), msg.get("req_id", "")
        if op == "ping":
            if c.private:
                c.queue({"req_id": req_id, "op": "pong", "args": [str(int(time.time() * 1000))], "conn_id": c.conn_id})
            else:
                c.queue({"success": True, "ret_msg": "pong", "conn_id": c.conn_id, "req_id": req_id, "op": "ping"})
            return
        if op == "auth":
            ok, why = (False, "Invalid apikey") if self.refuse_auth else self._auth_ok(msg.get("args") or [])
            c.authed = c.authed or ok
            c.queue({"success": ok, "ret_msg": "" if ok else why, "op": "auth", "conn_id": c.conn_id})
            return
        if op == "subscribe":
            args = [str(a) for a in msg.get("args") or []]
            if c.private and not c.authed:
                c.queue({"success": False, "ret_msg": "Request not authorized", "conn_id": c.conn_id,
                         "req_id": req_id, "op": "subscribe"})
                return
            with self.exchange.lock, c.lock:  # the exchange's lock first, as its pushes take them
                c.topics.update(args)
                self.subscribed.extend(("private" if c.private else "public", a) for a in args)
                c.queue({"success": True, "ret_msg": "", "conn_id": c.conn_id, "req_id": req_id, "op": "subscribe"})
                for topic in args:  # the public topics start with a snapshot
                    if topic.startswith("tickers."):
                        c.queue(self._ticker(topic.split(".", 1)[1], "snapshot"), topic)
            return
        if op == "unsubscribe":
            with c.lock:
                c.topics.difference_update(str(a) for a in msg.get("args") or [])
            c.queue({"success": True, "ret_msg": "", "conn_id": c.conn_id, "req_id": req_id, "op": "unsubscribe"})

    def _auth_ok(self, args: list[Any]) -> tuple[bool, str]:
        if len(args) != 3:
            return False, "Params Error"
        key, expires, sign = str(args[0]), int(args[1]), str(args[2])
        secret = self.exchange.keys.get(key)
        if secret is None:
            return False, "Invalid apikey"
        if expires <= self.exchange.server_ms():
            return False, "Params Error: expires is in the past"
        want = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sign):
            return False, "Signature Error"
        return True, ""

    # --- what the exchange does, pushed -------------------------------------------------------

    def _subscribers(self, topic: str) -> list[_Client]:
        with self._lock:
            clients = list(self._clients)
        return [c for c in clients if topic in c.topics]

    def _data(self, topic: str, message: dict[str, Any]) -> None:
        if self.silent:
            return
        for c in self._subscribers(topic):
            with c.lock:
                if topic in c.topics:
                    for _ in range(2 if self.duplicate else 1):
                        c.queue(message, topic)

    def _sent(self, topic: str, text: str) -> None:
        self.sent.append((time.perf_counter(), topic, text))

    def _on_exchange(self, kind: str, payload: Any) -> None:
        """Called by the exchange, under its lock, as it changes."""
        ex = self.exchange
        now = int(time.time() * 1000)
        if kind == "ticker":
            sym = payload
            self._data(f"tickers.{sym}", self._ticker(sym, "delta"))
            minute = now - now % 60_000
            self._data(f"kline.1.{sym}", {"topic": f"kline.1.{sym}", "type": "snapshot", "ts": now,
                                          "data": [self._candle(sym, minute, ex.prices[sym], confirm=False)]})
        elif kind in ("execution", "order"):
            row = {k: v for k, v in payload.items() if not k.startswith("_")}
            row.setdefault("category", "linear")
            self._data(kind, {"id": uuid.uuid4().hex, "topic": kind, "creationTime": now, "data": [row]})
        elif kind == "position":
            rows = [self._position_row(payload, idx) for idx in ex._idxs()]
            self._data("position", {"id": uuid.uuid4().hex, "topic": "position", "creationTime": now, "data": rows})
        elif kind == "wallet":
            rows = ex.r_wallet({"accountType": "UNIFIED"}, None)["list"]
            self._data("wallet", {"id": uuid.uuid4().hex, "topic": "wallet", "creationTime": now, "data": rows})

    def _ticker(self, sym: str, kind: str) -> dict[str, Any]:
        ex = self.exchange
        with ex.lock:
            last = ex.prices[sym]
            tick = float(ex.instruments[sym].tick)
            self._seq += 1
            seq = self._seq
        data = {"symbol": sym, "lastPrice": num(last), "markPrice": num(last), "indexPrice": num(last),
                "bid1Price": num(last - tick), "ask1Price": num(last + tick)}
        if kind == "snapshot":
            data.update({"tickDirection": "PlusTick", "price24hPcnt": "0.01", "prevPrice24h": num(last),
                         "highPrice24h": num(last), "lowPrice24h": num(last), "prevPrice1h": num(last),
                         "openInterest": "1000", "openInterestValue": num(1000 * last), "turnover24h": "1",
                         "volume24h": "1000", "nextFundingTime": "0", "fundingRate": "0.0001", "bid1Size": "1",
                         "ask1Size": "1"})
        return {"topic": f"tickers.{sym}", "type": kind, "data": data, "cs": seq, "ts": int(time.time() * 1000)}

    def _candle(self, sym: str, start_ms: int, close: float, confirm: bool) -> dict[str, Any]:
        return {"start": start_ms, "end": start_ms + 59_999, "interval": "1", "open": num(close),
                "close": num(close), "high": num(close), "low": num(close), "volume": "1", "turnover": num(close),
                "confirm": confirm, "timestamp": int(time.time() * 1000)}

    def _position_row(self, sym: str, idx: int) -> dict[str, Any]:
        """The position stream's row: the REST slot with entryPrice for avgPrice."""
        row = dict(self.exchange._slot(sym, idx))
        row["entryPrice"] = row.pop("avgPrice")
        row["category"] = "linear"
        return row
