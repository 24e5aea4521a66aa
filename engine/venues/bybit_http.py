"""Bybit V5 through pybit's HTTP client: one attempt at a time, errors translated.

pybit's own retries are turned off on purpose (BYBIT_V5.md §3): its 10002 handling
only widens recv_window, its 10006 sleep crashes on a reset time already past, and its
"Retries exceeded" error hides Bybit's code. So every session is built with
max_retries=1, force_retry=False (a timed-out create is never re-POSTed behind our
back) and a retry_codes set that matches no real code (an empty set would bring the
defaults back). The venue owns the backoff and the time resync instead.

Every message that leaves this module goes through scrub(): Bybit's 10004 answer
quotes the signed string, key included, and an exception text is one step away from
a log line.

Requests are paced by Bybit's own counters (Pacer): every private answer says what is
left of the endpoint's per-second budget and when it starts again, so a request that
would be refused with 10006 waits for the next window instead (an entry already when
only `rate_reserve` requests are left, which stay for exits).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import requests
from pybit import _helpers
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from engine.venues.base import AuthError

log = logging.getLogger(__name__)

# retCode 0 is success and never reaches pybit's retry check: a set that disables it.
NO_RETRY_CODES = {0}
AUTH_CODES = {10003, 10004, 10005, 10007, 10008, 10009, 10010, 33004}
RATE_LIMIT = 10006
TIME_WINDOW = 10002
SERVER_BUSY = {10016, 10019}  # "server error" / "service restarting": the request may have been seen
MAX_BACKOFF_SEC = 5.0
MAX_PACE_SEC = 2.0  # the longest a request waits for its endpoint's next window


@dataclass(frozen=True)
class ApiKeys:
    """The key pair; never printed (repr and str hide both)."""

    key: str
    secret: str

    def __repr__(self) -> str:
        return "ApiKeys(***)"

    __str__ = __repr__


class Refused(Exception):
    """Bybit answered with a retCode: the request was refused (nothing happened)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


class Busy(Exception):
    """Rate limit or server trouble: back off `wait` seconds and try again."""

    def __init__(self, code: int, message: str, wait: float, maybe_seen: bool) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.wait = wait
        self.maybe_seen = maybe_seen  # 5xx/10016 may have reached the matching engine; 10006 did not


class NoAnswer(Exception):
    """Timeout or connection error: the request may or may not have been carried out."""


@dataclass
class _Budget:
    limit: int
    left: int
    reset_ms: int


class Pacer:
    """Bybit's per-endpoint request budget as its answers report it (X-Bapi-Limit,
    X-Bapi-Limit-Status, X-Bapi-Limit-Reset-Timestamp), spent as requests leave: a request
    that would overdraw it waits until the window starts again, rather than be refused
    (10006) and back off after. Entries keep `reserve` requests of a window for exits
    (a reduce-only close may spend the budget to zero). Thread-safe."""

    def __init__(self, now_ms: Callable[[], int], reserve: int = 1) -> None:
        self.now_ms = now_ms
        self.reserve = reserve
        self.halt: threading.Event | None = None  # set: stop waiting (scalpdesk is stopping)
        self.waits = 0  # requests that waited for a window
        self.waited_sec = 0.0
        self._lock = threading.Lock()
        self._budgets: dict[str, _Budget] = {}
        self._flying: dict[str, int] = {}  # requests sent and not answered, by endpoint

    def before(self, endpoint: str, exit_: bool = False) -> None:
        """Spend one request of the endpoint's budget, waiting for the next window if it
        is spent (down to the reserve, for an entry). after() must follow, answered or not."""
        keep = 0 if exit_ else self.reserve
        while True:
            with self._lock:
                b = self._budgets.get(endpoint)
                now = self.now_ms()
                flying = self._flying.get(endpoint, 0)
                if b is not None and now >= b.reset_ms:
                    # A new window; what is still on its way may be counted in it.
                    b.left, b.reset_ms = b.limit - flying, now + 1000
                if b is None or b.left > keep:  # not known yet: the answer will say
                    if b is not None:
                        b.left -= 1
                    self._flying[endpoint] = flying + 1
                    return
                wait = min((b.reset_ms - now) / 1000 + 0.005, MAX_PACE_SEC)
            self.waits += 1
            self.waited_sec += wait
            log.debug("pacing %s: %s request(s) left of %s; waiting %.3fs for the next window",
                      endpoint, b.left, b.limit, wait)
            if self.halt is not None:
                if self.halt.wait(wait):
                    return  # stopping: the request goes, and is refused or not
            else:
                time.sleep(wait)

    def after(self, endpoint: str, headers: Any) -> None:
        """A request sent after before() is done; `headers`: its answer's (None: no answer)."""
        with self._lock:
            flying = max(self._flying.get(endpoint, 0) - 1, 0)
            self._flying[endpoint] = flying
            try:
                limit = int(headers.get("X-Bapi-Limit"))
                left = int(headers.get("X-Bapi-Limit-Status"))
                reset_ms = int(headers.get("X-Bapi-Limit-Reset-Timestamp"))
            except (AttributeError, TypeError, ValueError):
                return
            # Requests still on their way may be counted after this answer was made.
            b = self._budgets.get(endpoint)
            if b is None or reset_ms > b.reset_ms + 50:  # a newer window than the one we count
                self._budgets[endpoint] = _Budget(limit, left - flying, reset_ms)
            else:
                b.left, b.limit = min(b.left, left - flying), limit


class _Session(HTTP):
    """pybit's HTTP client with a server-time offset in the signed timestamp (10002)."""

    def __init__(self, offset_ms: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._offset_ms = offset_ms

    def _prepare_headers(self, payload, recv_window, content_type="application/json"):  # type: ignore[override]
        # pybit's own header code, with the timestamp corrected by the last time sync.
        timestamp = _helpers.generate_timestamp() + self._offset_ms()
        signature = self._auth(payload=payload, recv_window=recv_window, timestamp=timestamp)
        return {
            "Content-Type": content_type,
            "X-BAPI-API-KEY": self.api_key,
            "X-BAPI-SIGN": signature,
            "X-BAPI-SIGN-TYPE": "2",
            "X-BAPI-TIMESTAMP": str(timestamp),
            "X-BAPI-RECV-WINDOW": str(recv_window),
        }

    def __repr__(self) -> str:  # the dataclass repr would print the secret
        return f"<pybit session {self.endpoint}>"


def default_endpoint(venue: str) -> str:
    return {"testnet": "https://api-testnet.bybit.com", "demo": "https://api-demo.bybit.com"}.get(
        venue, "https://api.bybit.com"
    )


class BybitClient:
    """Thread-safe access to Bybit: a pybit session per thread, one time offset."""

    def __init__(
        self,
        venue: str,
        keys: ApiKeys | None,
        *,
        base_url: str | None = None,
        timeout_sec: float = 10.0,
        recv_window_ms: int = 5000,
        rate_reserve: int = 1,
    ) -> None:
        self.venue = venue
        self._keys = keys
        self.endpoint = (base_url or default_endpoint(venue)).rstrip("/")
        self.timeout_sec = timeout_sec
        self.recv_window_ms = recv_window_ms
        self.offset_ms = 0
        self._local = threading.local()
        self.auth_failure: str = ""  # set once Bybit refused the keys: no further private calls
        self.pacer = Pacer(self.now_ms, rate_reserve)

    def __repr__(self) -> str:
        return f"BybitClient({self.venue}, {self.endpoint})"

    def scrub(self, text: str) -> str:
        """The text with the key and secret masked."""
        if self._keys is not None:
            for s in (self._keys.secret, self._keys.key):
                if s:
                    text = text.replace(s, "***")
        return text

    def session(self) -> _Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = _Session(
                lambda: self.offset_ms,
                testnet=self.venue == "testnet",
                demo=self.venue == "demo",
                api_key=self._keys.key if self._keys else None,
                api_secret=self._keys.secret if self._keys else None,
                timeout=self.timeout_sec,
                recv_window=self.recv_window_ms,
                max_retries=1,
                retry_codes=set(NO_RETRY_CODES),
                force_retry=False,
                log_requests=False,
                logging_level=logging.WARNING,
                return_response_headers=True,  # the rate-limit counters (Pacer)
            )
            s.endpoint = self.endpoint
            self._local.session = s
        return s

    def now_ms(self) -> int:
        """Bybit's time as far as we know it."""
        return int(time.time() * 1000) + self.offset_ms  # wall clock: Bybit signs requests with wall time

    def call(self, method: str, *, private: bool = True, **params: Any) -> dict[str, Any]:
        """One attempt: the result dict, or Refused / Busy / NoAnswer / AuthError."""
        if private and self.auth_failure:
            raise AuthError(self.auth_failure)
        if private and self._keys is None:
            raise AuthError("no Bybit API key configured (BYBIT_API_KEY/BYBIT_API_SECRET or SCALPDESK_BYBIT_KEY_FILE)")
        try:
            reply = self._send(method, private, params)
        except InvalidRequestError as e:
            code = int(e.status_code)
            msg = self.scrub(str(e.message))
            if code in AUTH_CODES:
                self.auth_failure = (
                    f"Bybit refused the API key: {msg} (code {code}); trading stopped until the key "
                    f"(or its permissions, or the host for {self.venue}) is fixed and scalpdesk restarted"
                )
                log.error(self.auth_failure)
                raise AuthError(self.auth_failure, code=code) from None
            if code == RATE_LIMIT:
                raise Busy(code, msg, _reset_wait(e.resp_headers), maybe_seen=False) from None
            if code in SERVER_BUSY:
                raise Busy(code, msg, 0.5, maybe_seen=True) from None
            raise Refused(code, msg) from None
        except FailedRequestError as e:
            status = int(e.status_code)
            what = f"HTTP {status} from Bybit"
            if status == 403:
                # Bybit's IP rate limit (or a blocked region): hammering makes it longer.
                raise Refused(403, f"{what}: IP rate limit or access denied; wait 10 minutes") from None
            if status >= 500 or status == 429:
                raise Busy(status, what, 0.5, maybe_seen=status >= 500) from None
            if status == 409:
                raise NoAnswer(f"unreadable answer from Bybit ({self.scrub(str(e.message))})") from None
            raise Refused(status, self.scrub(f"{what}: {e.message}")) from None
        except requests.exceptions.RequestException as e:
            raise NoAnswer(self.scrub(f"{type(e).__name__}: {_short(e)}")) from None
        if not isinstance(reply, dict):
            raise NoAnswer("unexpected answer from Bybit")
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def _send(self, method: str, private: bool, params: dict[str, Any]) -> Any:
        """The request through pybit, paced by the endpoint's budget (private endpoints)."""
        if not private:
            reply = getattr(self.session(), method)(**params)
            return reply[0] if isinstance(reply, tuple) else reply
        self.pacer.before(method, exit_=bool(params.get("reduceOnly")))
        headers = None
        try:
            reply = getattr(self.session(), method)(**params)
            if isinstance(reply, tuple):  # (json, elapsed, headers): return_response_headers
                reply, headers = reply[0], reply[-1]
            return reply
        except InvalidRequestError as e:
            headers = e.resp_headers
            raise
        finally:
            self.pacer.after(method, headers)

    def sync_time(self) -> int:
        """Measure the offset to Bybit's clock (/v5/market/time); returns it in ms."""
        t0 = time.time()  # wall clock: the offset to Bybit's own wall clock
        result = self.call("get_server_time", private=False)
        t1 = time.time()  # wall clock: as above
        server_ms = int(result.get("timeNano", 0)) // 1_000_000 or int(result.get("timeSecond", 0)) * 1000
        self.offset_ms = int(server_ms - (t0 + t1) / 2 * 1000)
        return self.offset_ms


def _reset_wait(headers: Any) -> float:
    """Seconds until the rate limit resets (X-Bapi-Limit-Reset-Timestamp), at least a tick."""
    try:
        reset_ms = int((headers or {}).get("X-Bapi-Limit-Reset-Timestamp"))
    except (TypeError, ValueError):
        return 1.0
    return min(max((reset_ms - time.time() * 1000) / 1000, 0.05), MAX_BACKOFF_SEC)  # wall clock: Bybit's reset stamp


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) < 200 else text[:200] + "…"


def backoff(attempt: int) -> float:
    return min(0.25 * 2**attempt, MAX_BACKOFF_SEC)
