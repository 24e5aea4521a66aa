"""Build an Engine from Settings: the store, the venue, the decider."""

from __future__ import annotations

from engine.clock import Clock, SystemClock
from engine.config import Settings, SettingsError
from engine.deciders.base import Decider
from engine.deciders.rules import RuleDecider
from engine.engine import Engine
from engine.store import StateStore
from engine.venues.base import Venue
from engine.venues.paper import PaperVenue
from engine.venues.simfeed import SimFeed


def build_venue(settings: Settings, clock: Clock) -> Venue:
    if settings.venue == "sim":
        feed = SimFeed(list(settings.symbols), seed=settings.sim_seed, start=clock.now(), speed=settings.sim_speed)
        return PaperVenue(feed, clock, equity=settings.paper_equity, name="sim")
    # paper on live prices, testnet, demo and live trade through Bybit (pybit).
    raise SettingsError(
        f"invalid setting SCALPDESK_VENUE={settings.venue!r}: this build trades only on the built-in "
        "simulated market (sim); the Bybit venue is not built yet"
    )


def build_decider(settings: Settings) -> Decider:
    if settings.decider == "rules":
        return RuleDecider(settings.tp_atr_mult, settings.sl_atr_mult, settings.default_time_in_trade_limit_sec)
    raise SettingsError(
        f"invalid setting SCALPDESK_DECIDER={settings.decider!r}: the OpenAI decider is not built yet; use rules"
    )


def build_engine(settings: Settings, clock: Clock | None = None, *, headless: bool = False) -> Engine:
    """Everything wired; the store's lock is held until engine.store.close()."""
    clock = clock or SystemClock()
    venue = build_venue(settings, clock)
    decider = build_decider(settings)
    store = StateStore(settings.state_dir, history_retention_days=settings.history_retention_days)
    return Engine(settings, store, venue, decider, clock, headless=headless)
