"""Build an Engine from Settings: the store, the venue, the decider."""

from __future__ import annotations

import time

from engine.clock import Clock, ScaledClock, SystemClock
from engine.config import Settings, SettingsError
from engine.deciders.base import Decider
from engine.deciders.rules import RuleDecider
from engine.engine import Engine
from engine.models import PaperAccount
from engine.risk import paper_costs
from engine.store import StateStore
from engine.venues.base import Venue
from engine.venues.paper import PaperVenue
from engine.venues.simfeed import SimFeed


class StoreAccounts:
    """The paper venue's account book: its account record in the state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def load(self, venue: str) -> PaperAccount | None:
        return self.store.get_paper_account(venue)

    def save(self, account: PaperAccount) -> None:
        self.store.put_paper_account(account)


def build_venue(settings: Settings, clock: Clock, store: StateStore | None = None) -> Venue:
    """The venue; a paper account (sim, paper) is kept in `store` across restarts."""
    book = StoreAccounts(store) if store is not None else None
    if settings.venue == "sim":
        # The market follows the engine's clock one to one (at --speed N that clock runs
        # N times faster, so the market and every engine timer move together). Its path is
        # anchored at 00:00 UTC of the clock's day, so a restart the same day finds the
        # same market its open positions were opened in.
        now = clock.now()
        anchor = now - now % 86_400
        feed = SimFeed(list(settings.symbols), seed=settings.sim_seed, start=anchor)
        feed.feed_time_at(anchor)  # the feed's time is the clock's time
        return PaperVenue(feed, clock, equity=settings.paper_equity, name="sim", account=book, **paper_costs(settings))
    if settings.venue == "paper":
        # Live prices from Bybit's public market endpoints (no keys), simulated fills.
        from engine.venues.bybit_feed import BybitFeed

        feed = BybitFeed.from_settings(settings)
        return PaperVenue(feed, clock, equity=settings.paper_equity, name="paper", instruments=feed.instruments(),
                          account=book, **paper_costs(settings))
    # testnet, demo and live trade through Bybit (pybit).
    from engine.venues.bybit import BybitVenue
    from engine.venues.keys import load_keys

    return BybitVenue.from_settings(settings, load_keys(settings))


def build_decider(settings: Settings) -> Decider:
    if settings.decider == "rules":
        # Its stop must fit the guardrails' range, its hold the time limits they allow.
        # The fee floor is the account's own round trip: a lower fee tier trades smaller stretches.
        return RuleDecider(taker_fee_pct=settings.taker_fee_pct, slippage_pct=settings.slippage_bps / 100,
                           sl_pct_max=settings.sl_pct_max,
                           time_limit_sec=min(max(3600, settings.time_limit_min_sec), settings.time_limit_max_sec))
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


def engine_clock(settings: Settings, resume: float | None = None) -> Clock:
    """The wall clock, or on the simulated market a clock --speed N times faster that
    never goes back: it resumes from `resume`, the market time the sim account last saw,
    if a faster run left it ahead of the wall clock."""
    if settings.venue != "sim":
        return SystemClock()
    wall = time.time()  # wall clock: where the simulated market's time starts
    if settings.sim_speed == 1 and (resume is None or resume <= wall):
        return SystemClock()
    return ScaledClock(settings.sim_speed, start=max(wall, resume or 0.0))


def build_engine(settings: Settings, clock: Clock | None = None, *, headless: bool = False) -> Engine:
    """Everything wired; the store's lock is held until engine.store.close()."""
    store = StateStore(settings.state_dir, history_retention_days=settings.history_retention_days)
    try:
        if clock is None:
            account = store.get_paper_account("sim") if settings.venue == "sim" else None
            clock = engine_clock(settings, account.saved_at if account else None)
        venue = build_venue(settings, clock, store)
        decider = build_decider(settings)
    except BaseException:
        store.close()
        raise
    return Engine(settings, store, venue, decider, clock, headless=headless)
