"""The paper venue: Bybit's live prices (public market endpoints, no keys) with
simulated fills, here against the loopback fake."""

import time

from engine.clock import ManualClock
from engine.config import load_settings
from engine.factory import build_venue
from engine.models import CloseReason, OrderRequest
from engine.venues.paper import PaperVenue
from tests.fakes.bybit_server import BybitFakeServer


def test_paper_trades_simulated_fills_on_bybit_prices(tmp_path):
    with BybitFakeServer() as srv:
        ex = srv.exchange
        settings = load_settings(state_dir=tmp_path, venue="paper", bybit_base_url=srv.url, symbols="BTCUSDT,ETHUSDT")
        clock = ManualClock(time.time())
        venue = build_venue(settings, clock)
        assert isinstance(venue, PaperVenue) and venue.name == "paper"
        assert venue.instruments(["BTCUSDT"])["BTCUSDT"].qty_step == 0.001  # Bybit's filters
        assert venue.ticker("BTCUSDT").last == 100_000
        ks = venue.klines("BTCUSDT", 5, 30)
        assert len(ks) == 30 and ks[0].start < ks[-1].start
        ex.set_price("BTCUSDT", 100_500)
        clock.advance(2)  # past the poll interval: the new price is seen
        info = venue.place_order(OrderRequest(symbol="BTCUSDT", side="Buy", qty=0.01, order_link_id="o-p",
                                              take_profit=101_000, stop_loss=99_000))
        assert info.filled and abs(info.avg_price - 100_500) < 100_500 * 0.001
        assert ex.orders_for() == []  # nothing is sent to Bybit: fills are simulated
        assert not any(p.startswith("/v5/order/") or p.startswith("/v5/position/") for _, _, p, _ in ex.requests)
        ex.set_price("BTCUSDT", 101_200)
        clock.advance(2)
        assert venue.positions() == []
        [c] = venue.closed_trades("BTCUSDT", since=clock.now() - 60)
        assert c.reason is CloseReason.TAKE_PROFIT and c.exit_price == 101_000
