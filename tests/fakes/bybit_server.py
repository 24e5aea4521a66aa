"""A loopback HTTP server speaking the Bybit V5 subset scalpdesk uses.

Built on the standard library's ThreadingHTTPServer: no extra dependency, one thread
per connection (so a request held by a test gate or a fault never blocks the others),
and plain blocking code that a test can pause and observe. aiohttp is not installed
and buys nothing for a loopback fake that the blocking pybit client talks to.

It checks signatures as Bybit does (BYBIT_V5.md §2): X-BAPI-API-KEY, -TIMESTAMP,
-SIGN, -RECV-WINDOW; HMAC-SHA256 over timestamp + apiKey + recvWindow + payload, the
payload being the raw query string of a GET or the raw JSON body of a POST; the
timestamp must satisfy server - recv_window <= ts < server + 1000, else 10002. An
unknown key is 10003, a bad signature 10004 with Bybit's origin_string (which holds
the key: the client must never echo it). It binds 127.0.0.1 on an ephemeral port.

    with BybitFakeServer() as srv:
        session.endpoint = srv.url
        srv.exchange.fail("/v5/order/create", "delay_after", seconds=2)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.bybit_exchange import PUBLIC, BybitError, FakeBybit

GATE_TIMEOUT_SEC = 30.0


def _parse_query(raw: str) -> dict[str, Any]:
    # pybit sends k=v&k=v unencoded (and signs exactly that string).
    out: dict[str, Any] = {}
    for part in raw.split("&"):
        if part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        ex = self.server.exchange
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        try:
            params = _parse_query(query) if method == "GET" else (json.loads(body) if body else {})
        except ValueError:
            params = {}
        with ex.lock:
            ex.requests.append((time.perf_counter(), method, path, dict(params)))
        for fn in list(ex.observers):
            fn("received", path, params)
        gate = ex.gate_for(path, "received")
        if gate is not None:
            gate.hits += 1
            gate.reached.set()
            gate.released.wait(GATE_TIMEOUT_SEC)
            if gate.then == "drop":
                self.close_connection = True
                return
        fault = ex.take_fault(path, params)
        if fault is not None:
            if fault.kind in ("drop", "reset"):
                time.sleep(fault.seconds)
                self.close_connection = True
                return
            if fault.kind == "http":
                self._send(fault.status, b"<html><body>upstream error</body></html>", "text/html")
                return
            if fault.kind == "retcode":
                headers = {}
                if fault.reset_in_ms is not None:
                    headers["X-Bapi-Limit-Reset-Timestamp"] = str(int(time.time() * 1000) + fault.reset_in_ms)
                    headers["X-Bapi-Limit-Status"] = "0"
                self._answer({"retCode": fault.ret_code, "retMsg": fault.ret_msg, "result": {}}, headers)
                return
            if fault.kind == "delay_before":
                time.sleep(fault.seconds)
        headers: dict[str, str] = {}
        if path not in PUBLIC:
            headers, over = ex.limit_headers(path)
            if over:  # past the limit: refused, not processed, with the headers that said so
                self._answer({"retCode": 10006, "retMsg": "Too many visits!", "result": {}}, headers)
                return
        hold = fault.seconds if fault is not None and fault.kind == "hold" else 0.0
        reply = self._process(ex, method, path, query, body, params, hold)
        if reply is None:  # held past the signature check, then dropped
            self.close_connection = True
            return
        if fault is not None and fault.kind == "delay_after":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "http_after":  # a gateway error after the work was done
            self._send(fault.status, b"<html><body>bad gateway</body></html>", "text/html")
            return
        try:
            self._answer(reply, headers)
        except OSError:
            return  # the client gave up (timeout, killed): the work is done anyway
        for fn in list(ex.observers):
            fn("answered", path, params)
        gate = ex.gate_for(path, "answered")
        if gate is not None:
            gate.hits += 1
            gate.reached.set()
            gate.released.wait(GATE_TIMEOUT_SEC)

    def _process(self, ex: FakeBybit, method: str, path: str, query: str, body: str, params: dict,
                 hold: float = 0.0) -> dict | None:
        try:
            key = None
            if path not in PUBLIC:
                key = self._check_auth(ex, query if method == "GET" else body)
            if hold:  # accepted, then held before the matching engine: lands late
                time.sleep(hold)
            # "accepted": past the gateway's checks, held before the matching engine, so
            # it still lands when released however late (a "received" hold is rejected
            # by the recv_window check once released, as on Bybit).
            gate = ex.gate_for(path, "accepted")
            if gate is not None:
                gate.hits += 1
                gate.reached.set()
                gate.released.wait(GATE_TIMEOUT_SEC)
                if gate.then == "drop":
                    return None
            result = ex.handle(method, path, params, key)
            return {"retCode": 0, "retMsg": "OK", "result": result}
        except BybitError as e:
            return {"retCode": e.code, "retMsg": e.msg, "result": {}}

    def _check_auth(self, ex: FakeBybit, payload: str) -> str:
        h = self.headers
        key, ts, sign, recv = (h.get("X-BAPI-API-KEY"), h.get("X-BAPI-TIMESTAMP"), h.get("X-BAPI-SIGN"),
                               h.get("X-BAPI-RECV-WINDOW") or "5000")
        if not key or not ts or not sign:
            raise BybitError(10003, "API key is invalid.")
        secret = ex.keys.get(key)
        if secret is None:
            raise BybitError(10003, "API key is invalid.")
        server = ex.server_ms()
        if not server - int(recv) <= int(ts) < server + 1000:
            raise BybitError(
                10002,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts}],server_timestamp[{server}],recv_window[{recv}]",
            )
        origin = f"{ts}{key}{recv}{payload}"
        want = hmac.new(secret.encode(), origin.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sign):
            raise BybitError(10004, f"error sign! origin_string[{origin}]")
        return key

    def _answer(self, reply: dict[str, Any], headers: dict[str, str]) -> None:
        reply.setdefault("retExtInfo", {})
        reply["time"] = self.server.exchange.server_ms()
        self._send(200, json.dumps(reply).encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    exchange: FakeBybit

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (killed, timed out) is part of the tests, not an error.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class BybitFakeServer:
    """The fake exchange behind a loopback HTTP server; a context manager."""

    def __init__(self, exchange: FakeBybit | None = None) -> None:
        self.exchange = exchange or FakeBybit()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.exchange = self.exchange
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "BybitFakeServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.exchange.release_all()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "BybitFakeServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, path: str, method: str | None = None) -> int:
        with self.exchange.lock:
            return sum(1 for _, m, p, _ in self.exchange.requests if p == path and (method is None or m == method))

    def sent(self, path: str) -> list[dict[str, Any]]:
        with self.exchange.lock:
            return [dict(params) for _, _, p, params in self.exchange.requests if p == path]
