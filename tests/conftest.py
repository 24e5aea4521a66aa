"""Shared fixtures: settings in a temp state dir, calm market features, a paper engine."""

from __future__ import annotations

import os

import pytest

from engine.config import load_settings
from engine.models import Balance, Instrument, SymbolFeatures

# Tests never read the developer's own config or environment.
for _k in list(os.environ):
    if _k.startswith("SCALPDESK_") or _k in (
        "POSITION_MANAGER_ENABLE_REVERSE",
        "BYBIT_HEDGE_MODE",
        "DEFAULT_TIME_IN_TRADE_LIMIT_SEC",
        "COOLDOWN_MINUTES",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "BYBIT_API_KEY",
        "BYBIT_API_SECRET",
        "BYBIT_BASE_URL",
        "BYBIT_WS_URL",
    ):
        del os.environ[_k]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))


@pytest.fixture(autouse=True)
def _no_ticks_from_another_test():
    """The console's price ticks (widgets.format.TICKS) come from the engine it runs; a
    test starts without those of the test before."""
    from widgets import format as fmt

    fmt.TICKS.clear()
    yield
    fmt.TICKS.clear()


@pytest.fixture
def settings(tmp_path):
    return load_settings(state_dir=tmp_path / "state")


def features(symbol: str = "BTCUSDT", price: float = 100_000.0, **over) -> SymbolFeatures:
    """Calm, aligned-up market features; override what a test is about."""
    base = dict(
        symbol=symbol,
        price=price,
        bid=price - 0.1,
        ask=price + 0.1,
        spread_pct=0.0002,
        atr_pct_1m=0.08,
        atr_pct_5m=0.5,
        ret_1m_pct=0.01,
        ret_5m_pct=0.05,
        ret_15m_pct=0.1,
        ret_1h_pct=0.2,
        last_range_1m_pct=0.06,
        rsi_1m=55,
        rsi_5m=55,
        ema_slope_1m=0.01,
        ema_slope_5m=0.02,
        ema_slope_15m=0.03,
        trend_1m=1,
        trend_5m=1,
        trend_15m=1,
        volume_change_pct=5,
    )
    base.update(over)
    return SymbolFeatures(**base)


BTC = Instrument(symbol="BTCUSDT", qty_step=0.001, min_qty=0.001, min_notional=5, tick_size=0.1, max_leverage=100)
BALANCE = Balance(equity=10_000.0, available=10_000.0)


@pytest.fixture
def srv():
    """The loopback Bybit (tests/fakes/bybit_server.py) the real pybit client talks to."""
    from tests.fakes.bybit_server import BybitFakeServer

    with BybitFakeServer() as s:
        yield s
