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
    ) -> None:
        self.venue = venue
        self._keys = keys
        self.endpoint = (base_url or default_endpoint(venue)).rstrip("/")
        self.timeout_sec = timeout_sec
        self.recv_window_ms = recv_window_ms
        self.offset_ms = 0
        self._local = threading.local()
        self.auth_failure: str = ""  # set once Bybit refused the keys: no further private calls

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
            )
            s.endpoint = self.endpoint
            self._local.session = s
        return s

    def now_ms(self) -> int:
        """Bybit's time as far as we know it."""
        return int(time.time() * 1000) + self.offset_ms

    def call(self, method: str, *, private: bool = True, **params: Any) -> dict[str, Any]:
        """One attempt: the result dict, or Refused / Busy / NoAnswer / AuthError."""
        if private and self.auth_failure:
            raise AuthError(self.auth_failure)
        if private and self._keys is None:
            raise AuthError("no Bybit API key configured (BYBIT_API_KEY/BYBIT_API_SECRET or SCALPDESK_BYBIT_KEY_FILE)")
        try:
            reply = getattr(self.session(), method)(**params)
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

    def sync_time(self) -> int:
        """Measure the offset to Bybit's clock (/v5/market/time); returns it in ms."""
        t0 = time.time()
        result = self.call("get_server_time", private=False)
        t1 = time.time()
        server_ms = int(result.get("timeNano", 0)) // 1_000_000 or int(result.get("timeSecond", 0)) * 1000
        self.offset_ms = int(server_ms - (t0 + t1) / 2 * 1000)
        return self.offset_ms


def _reset_wait(headers: Any) -> float:
    """Seconds until the rate limit resets (X-Bapi-Limit-Reset-Timestamp), at least a tick."""
    try:
        reset_ms = int((headers or {}).get("X-Bapi-Limit-Reset-Timestamp"))
    except (TypeError, ValueError):
        return 1.0
    return min(max((reset_ms - time.time() * 1000) / 1000, 0.05), MAX_BACKOFF_SEC)


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) < 200 else text[:200] + "…"


def backoff(attempt: int) -> float:
    return min(0.25 * 2**attempt, MAX_BACKOFF_SEC)
