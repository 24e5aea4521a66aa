"""Build an Engine from Settings: the store, the venue, the decider."""

from __future__ import annotations

from engine.clock import Clock, ScaledClock, SystemClock
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
        # The market follows the engine's clock one to one: at --speed N that clock runs
        # N times faster (engine_clock), so the market and every engine timer move together.
        feed = SimFeed(list(settings.symbols), seed=settings.sim_seed, start=clock.now())
        return PaperVenue(feed, clock, equity=settings.paper_equity, name="sim")
    if settings.venue == "paper":
        # Live prices from Bybit's public market endpoints (no keys), simulated fills.
        from engine.venues.bybit_feed import BybitFeed

        feed = BybitFeed.from_settings(settings)
        return PaperVenue(feed, clock, equity=settings.paper_equity, name="paper", instruments=feed.instruments())
    # testnet, demo and live trade through Bybit (pybit).
    from engine.venues.bybit import BybitVenue
    from engine.venues.keys import load_keys

    return BybitVenue.from_settings(settings, load_keys(settings))


def build_decider(settings: Settings) -> Decider:
    if settings.decider == "rules":
        return RuleDecider(settings.tp_atr_mult, settings.sl_atr_mult, settings.default_time_in_trade_limit_sec)
    if settings.decider == "openai":
        from engine.deciders.openai import build_openai_decider

        key = settings.openai_api_key.get_secret_value().strip() if settings.openai_api_key else ""
        if not key and not settings.openai_base_url:
            raise SettingsError(
                "invalid setting SCALPDESK_DECIDER='openai': OPENAI_API_KEY is not set "
                "(a local OpenAI-compatible server needs only OPENAI_BASE_URL)"
            )
        return build_openai_decider(settings)
    raise SettingsError(f"invalid setting SCALPDESK_DECIDER={settings.decider!r}: use rules or openai")


def engine_clock(settings: Settings) -> Clock:
    """The wall clock, or on the simulated market at --speed N a clock N times faster."""
    if settings.venue == "sim" and settings.sim_speed != 1:
        return ScaledClock(settings.sim_speed)
    return SystemClock()


def build_engine(settings: Settings, clock: Clock | None = None, *, headless: bool = False) -> Engine:
    """Everything wired; the store's lock is held until engine.store.close()."""
    clock = clock or engine_clock(settings)
    venue = build_venue(settings, clock)
    decider = build_decider(settings)
    store = StateStore(settings.state_dir, history_retention_days=settings.history_retention_days)
    return Engine(settings, store, venue, decider, clock, headless=headless)
