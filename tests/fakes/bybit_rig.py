"""Helpers for tests that trade through BybitVenue (real pybit) against the loopback fake."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine import guardrails
from engine.clock import SystemClock
from engine.config import Settings, load_settings
from engine.engine import Engine
from engine.events import BaseEvent
from engine.factory import build_engine
from engine.features import symbol_features
from engine.models import Action, Decision, Review
from engine.venues.bybit import BybitVenue
from engine.venues.bybit_http import ApiKeys
from tests.fakes.bybit_exchange import FAKE_KEY, FAKE_SECRET
from tests.fakes.bybit_server import BybitFakeServer

# Short on purpose: a timeout test waits client timeout + recv_window + settle margin.
FAST = dict(
    bybit_timeout_sec=0.5,
    bybit_recv_window_ms=1000,
    order_unknown_timeout_sec=5,
    venue_retry_giveup_sec=1.5,
)


def venue_for(srv: BybitFakeServer, *, key: str = FAKE_KEY, secret: str = FAKE_SECRET, **over) -> BybitVenue:
    kw = dict(timeout_sec=0.5, recv_window_ms=1000, unknown_timeout_sec=4.0, giveup_sec=1.5)
    kw.update(over)
    return BybitVenue("testnet", ApiKeys(key, secret), base_url=srv.url, **kw)  # type: ignore[arg-type]


def settings_for(srv: BybitFakeServer, state_dir: Path, **over) -> Settings:
    kw: dict = dict(
        state_dir=state_dir,
        venue="testnet",
        bybit_base_url=srv.url,
        bybit_api_key=FAKE_KEY,
        bybit_api_secret=FAKE_SECRET,
        symbols="BTCUSDT",
        **FAST,
    )
    kw.update(over)
    return load_settings(**kw)


@dataclass
class BybitRig:
    srv: BybitFakeServer
    settings: Settings
    engine: Engine
    events: list[BaseEvent] = field(default_factory=list)

    @property
    def venue(self) -> BybitVenue:
        return self.engine.venue  # type: ignore[return-value]

    @property
    def store(self):
        return self.engine.store

    def lines(self, code: str | None = None) -> list[str]:
        return [e.message for e in self.events if code is None or e.code == code]

    def dump(self) -> str:
        """Everything the engine emitted, as the headless JSON lines."""
        return "\n".join(e.model_dump_json() for e in self.events)


def make_bybit_rig(srv: BybitFakeServer, state_dir: Path, **over) -> BybitRig:
    settings = settings_for(srv, state_dir, **over)
    engine = build_engine(settings, clock=SystemClock())
    rig = BybitRig(srv, settings, engine)
    engine.subscribe(rig.events.append)
    return rig


def long_btc(**over) -> Decision:
    base = dict(symbol="BTCUSDT", action=Action.OPEN_LONG, confidence=0.9, tp_pct=2.0, sl_pct=1.5, leverage=5,
                size_pct=10, time_in_trade_limit_sec=1800, cooldown_sec=900, rationale="test")
    base.update(over)
    return Decision(**base)


def plan(rig: BybitRig, decision: Decision) -> Review:
    """A reviewed decision on the fake's prices, market made calm for the guardrails."""
    v, sym = rig.venue, decision.symbol
    f = symbol_features(v.ticker(sym), v.klines(sym, 1, 200), v.klines(sym, 5, 100), v.klines(sym, 15, 100))
    f = f.model_copy(update=dict(trend_1m=1, trend_5m=1, trend_15m=1, ret_5m_pct=0.0, last_range_1m_pct=0.0))
    ctx = guardrails.ReviewContext(
        now=rig.engine.clock.now(),
        balance=v.balance(),
        positions={p.symbol: p.side for p in v.positions()},
        features={sym: f},
        instruments=v.instruments([sym]),
    )
    review = guardrails.review(decision, ctx, rig.settings)
    assert review.order is not None, review
    return review


def leaks(text: str, secrets: tuple[str, ...] = (FAKE_KEY, FAKE_SECRET)) -> list[str]:
    """Which of the secrets appear in `text`."""
    return [s for s in secrets if s in text]


def state_text(state_dir: Path) -> str:
    """Every file under the state directory, as text."""
    out = []
    for p in sorted(Path(state_dir).rglob("*")):
        if p.is_file():
            out.append(p.read_text(errors="replace"))
    return "\n".join(out)


def events_json(events: list[BaseEvent]) -> str:
    return "\n".join(json.dumps(e.model_dump(mode="json")) for e in events)


def scripted(rig: BybitRig):
    """Give the rig's engine a ScriptedDecider and a calm, aligned market (as tests.rig's
    calm()), so a test decides what each cycle proposes; returns the decider."""
    from tests.rig import ScriptedDecider

    decider = ScriptedDecider()
    rig.engine.decider = decider
    real = rig.engine._snapshot

    def snapshot(symbols):
        snap = real(symbols)
        fixed = {
            s: f.model_copy(update=dict(trend_1m=1, trend_5m=1, trend_15m=1, ret_5m_pct=0.0, last_range_1m_pct=0.0))
            for s, f in snap.symbols.items()
        }
        return snap.model_copy(update={"symbols": fixed})

    rig.engine._snapshot = snapshot  # type: ignore[method-assign]
    return decider


def in_flight_open(link: str, side: str = "long", *, sent_at: float, qty: float = 0.01, symbol: str = "BTCUSDT",
                   limit: int = 1800):
    """An OPEN intent as a killed process leaves it: EXECUTING, sent at `sent_at`."""
    from engine.models import Intent, IntentStatus

    return Intent(intent_id=link, kind="OPEN", symbol=symbol, side=side, qty=qty, status=IntentStatus.EXECUTING,
                  created_at=sent_at, updated_at=sent_at, sent_at=sent_at, leverage=5, take_profit=None,
                  stop_loss=None, time_in_trade_limit_sec=limit, cooldown_sec=600, decision_id="d-" + link[2:])


def send_raw(srv: BybitFakeServer, link: str, side: str = "Buy", qty: str = "0.01", symbol: str = "BTCUSDT",
             recv_window_ms: int = 1000):
    """Send a create straight through pybit (no venue logic, a thread of its own), as the
    request a killed process left on the wire; returns the thread."""
    import threading

    from pybit.unified_trading import HTTP

    def go() -> None:
        s = HTTP(testnet=True, api_key=FAKE_KEY, api_secret=FAKE_SECRET, max_retries=1, timeout=30,
                 recv_window=recv_window_ms, retry_codes={0}, force_retry=False)
        s.endpoint = srv.url
        try:
            s.place_order(category="linear", symbol=symbol, side=side, orderType="Market", qty=qty,
                          positionIdx=0, orderLinkId=link)
        except Exception:  # noqa: BLE001 - the sender is dead; what happens is the exchange's business
            pass

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t
