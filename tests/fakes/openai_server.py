"""A loopback server that speaks enough of the OpenAI API for the real openai client:
POST /v1/chat/completions and POST /v1/responses, answered from a script.

Built on the standard library's ThreadingHTTPServer: no extra dependency, a real
socket on 127.0.0.1 with an ephemeral port, real HTTP for the SDK's own httpx
transport, and its own threads, so it runs beside whatever asyncio loop a test uses
and a slow answer blocks no other request. It is a test double, not a server: one
JSON body in, one JSON body out, no streaming.

The script is a queue. Each request takes the next entry:
    Answer(content=..., refusal=..., usage=(in, out), finish_reason=..., delay=...)
        rendered as a chat completion or a Responses API object, whichever was asked;
    Fail(status, body, headers): an HTTP error (401, 429 with retry-after, 500, ...);
    Raw(status, text, headers): any body at all;
    a callable(Request) -> one of the above.
An empty script answers 500 "no scripted answer", so a test that asks more than it
scripted sees it. `reject_formats` makes the server refuse output formats the way real
servers do (LM Studio's 400 for json_object, a server without json_schema) without
consuming the script.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

# --- what the script holds ------------------------------------------------------------------


@dataclass
class Answer:
    """A 200 answer. usage None: counted from the request (about 4 characters a token);
    usage False: no usage in the body (as some local servers do)."""

    content: str | None = None
    refusal: str | None = None
    usage: tuple[int, int] | None | bool = None
    cached_tokens: int = 0
    finish_reason: str = "stop"
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fail:
    status: int
    body: Any = None  # a dict is sent as JSON, a str as text
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Raw:
    status: int = 200
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body (None if it was not JSON)

    @property
    def format_type(self) -> str | None:
        """The requested output format: chat's response_format.type or Responses' text.format.type."""
        if not isinstance(self.body, dict):
            return None
        if self.path.endswith("/chat/completions"):
            rf = self.body.get("response_format")
            return rf.get("type") if isinstance(rf, dict) else None
        fmt = (self.body.get("text") or {}).get("format")
        return fmt.get("type") if isinstance(fmt, dict) else None

    @property
    def system(self) -> str:
        if self.path.endswith("/responses"):
            return str(self.body.get("instructions") or "")
        return next((m["content"] for m in self.body.get("messages", []) if m.get("role") == "system"), "")

    @property
    def user(self) -> str:
        if self.path.endswith("/responses"):
            inp = self.body.get("input")
            return inp if isinstance(inp, str) else json.dumps(inp)
        return next((m["content"] for m in self.body.get("messages", []) if m.get("role") == "user"), "")


Entry = Union[Answer, Fail, Raw, Callable[[Request], Union[Answer, Fail, Raw]]]


# --- bodies -----------------------------------------------------------------------------------


def decision(symbol: str, action: str = "HOLD", confidence: float = 0.5, **over: Any) -> dict[str, Any]:
    """One decision as the strict schema wants it (every field present)."""
    opens = action.startswith("OPEN_")
    d: dict[str, Any] = {
        "symbol": symbol,
        "action": action,
        "confidence": confidence,
        "leverage": 5.0 if opens else None,
        "size_pct": 10.0 if opens else None,
        "tp_pct": 2.0 if opens else None,
        "sl_pct": 1.5 if opens else None,
        "time_in_trade_limit_sec": 1800 if opens else None,
        "cooldown_sec": 600 if opens else None,
        "trail_activation_roi": 5.0 if opens else None,
        "rationale": over.pop("rationale", "no aligned trend on 1m/5m/15m" if not opens else "1m/5m/15m trends up"),
    }
    d.update(over)
    return d


def decisions_json(*decisions: dict[str, Any]) -> str:
    return json.dumps({"decisions": list(decisions)})


def _tokens(req: Request, text: str) -> tuple[int, int]:
    return max(1, len(req.system + req.user) // 4), max(1, len(text) // 4)


def chat_body(req: Request, a: Answer) -> dict[str, Any]:
    model = req.body.get("model", "fake") if isinstance(req.body, dict) else "fake"
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": a.content, "refusal": a.refusal},
                "finish_reason": a.finish_reason,
                "logprobs": None,
            }
        ],
    }
    if a.usage is not False:
        pin, pout = a.usage if isinstance(a.usage, tuple) else _tokens(req, a.content or a.refusal or "")
        body["usage"] = {
            "prompt_tokens": pin,
            "completion_tokens": pout,
            "total_tokens": pin + pout,
            "prompt_tokens_details": {"cached_tokens": a.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
    return body


def responses_body(req: Request, a: Answer) -> dict[str, Any]:
    model = req.body.get("model", "fake") if isinstance(req.body, dict) else "fake"
    content: list[dict[str, Any]] = []
    if a.refusal:
        content.append({"type": "refusal", "refusal": a.refusal})
    if a.content is not None:
        content.append({"type": "output_text", "text": a.content, "annotations": []})
    incomplete = a.finish_reason == "length"
    body: dict[str, Any] = {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "output": [{"type": "message", "id": "msg_fake", "role": "assistant", "status": "completed", "content": content}],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    if a.usage is not False:
        pin, pout = a.usage if isinstance(a.usage, tuple) else _tokens(req, a.content or a.refusal or "")
        body["usage"] = {
            "input_tokens": pin,
            "output_tokens": pout,
            "total_tokens": pin + pout,
            "input_tokens_details": {"cached_tokens": a.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    return body


def openai_error(message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# The refusals real servers give (OPENAI_COMPAT.md §3).
LMSTUDIO_NO_JSON_OBJECT = Fail(400, {"error": "'response_format.type' must be 'json_schema' or 'text'"})
NO_JSON_SCHEMA = Fail(
    400, openai_error("response_format of type 'json_schema' is not supported by this server", param="response_format")
)


# --- the server -------------------------------------------------------------------------------


class FakeOpenAI:
    """The loopback server. Use as a context manager, or start() and stop()."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key  # when set, any other bearer gets OpenAI's 401
        self.script: deque[Entry] = deque()
        self.requests: list[Request] = []
        self.reject_formats: dict[str, Fail] = {}
        self.default: Entry | None = None  # answers an empty script instead of the 500
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- the script

    def push(self, *entries: Entry) -> FakeOpenAI:
        with self._lock:
            self.script.extend(entries)
        return self

    def answer(self, *decisions: dict[str, Any], **kw: Any) -> FakeOpenAI:
        """Queue a well-formed answer with these decisions."""
        return self.push(Answer(content=decisions_json(*decisions), **kw))

    def _next(self, req: Request) -> Answer | Fail | Raw:
        with self._lock:
            self.requests.append(req)
            rejected = self.reject_formats.get(req.format_type or "")
            if rejected is not None:
                return rejected
            if self.api_key is not None:
                auth = req.headers.get("authorization", "")
                if auth != f"Bearer {self.api_key}":
                    given = auth.removeprefix("Bearer ")
                    masked = f"{given[:8]}***{given[-4:]}" if len(given) > 12 else "***"
                    return Fail(
                        401,
                        openai_error(
                            f"Incorrect API key provided: {masked}. You can find your API key at "
                            "https://platform.openai.com/account/api-keys.",
                            code="invalid_api_key",
                        ),
                    )
            entry = self.script.popleft() if self.script else self.default
        if entry is None:
            return Fail(500, openai_error("fake: no scripted answer", type_="server_error"))
        return entry(req) if callable(entry) else entry

    # --- lifecycle

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._send(404, json.dumps(openai_error("not found")).encode(), {"content-type": "application/json"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                data = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(data) if data else None
                except ValueError:
                    body = None
                req = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                if self.path not in ("/v1/chat/completions", "/v1/responses"):
                    self._send(404, json.dumps(openai_error(f"no route {self.path}")).encode(), {"content-type": "application/json"})
                    return
                reply = fake._next(req)
                if reply.delay and fake._stopping.wait(reply.delay):
                    return  # stopping: drop the connection
                headers = {"content-type": "application/json", **reply.headers}
                if isinstance(reply, Answer):
                    out = (chat_body if self.path.endswith("/chat/completions") else responses_body)(req, reply)
                    self._send(200, json.dumps(out).encode(), headers)
                elif isinstance(reply, Fail):
                    payload = reply.body if reply.body is not None else openai_error(f"error {reply.status}")
                    if isinstance(payload, str):
                        headers["content-type"] = "text/plain"
                        raw = payload.encode()
                    else:
                        raw = json.dumps(payload).encode()
                    self._send(reply.status, raw, headers)
                else:
                    self._send(reply.status, reply.text.encode(), {"content-type": "text/plain", **reply.headers})

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
