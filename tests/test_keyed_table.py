"""KeyedTable (widgets.table): rows keyed, cells changed in place, and only what changed
sent to the terminal."""

from __future__ import annotations

from rich.text import Text
from textual.app import App

from tests.painted import sent_spans
from widgets.table import KeyedTable


class Quotes(KeyedTable):
    COLUMNS = (("symbol", "Symbol", 9), ("last", "Last", 10), ("volume", "Volume", 10), ("change", "1h", 8),
               ("note", "Note", 20))


class One(App):
    def compose(self):
        yield Quotes()


def row(last: str, change: str, note: str = "calm") -> dict[str, Text]:
    return {"symbol": Text("BTCUSDT"), "last": Text(last), "volume": Text("1,234"), "change": Text(change),
            "note": Text(note)}


async def test_a_rows_changed_cells_are_sent_as_one_span(monkeypatch):
    """Textual writes each dirty span of a line from the start of the segment it begins in
    (often the row's start): a region per changed cell wrote most of a row twice, once per
    cell, when a price and its change moved together."""
    app = One()
    async with app.run_test(size=(80, 10)) as pilot:
        table = app.query_one(Quotes)
        table.set_row("BTCUSDT", row("97,000.0", "+0.10%"))
        await pilot.pause()
        y = table.region.y + table.header_height  # the row's line on screen
        sent = await sent_spans(pilot, monkeypatch, lambda: table.set_row("BTCUSDT", row("97,001.5", "+0.12%")))
        [(_, x1, x2)] = [s for s in sent if s[0] == y]  # one span for the row's line
        assert x1 <= 11 and 37 <= x2 <= 45  # from the price to the change, not the note after it
        assert table.get_cell("BTCUSDT", "last").plain == "97,001.5"
        assert table.get_cell("BTCUSDT", "change").plain == "+0.12%"
        # nothing changed: nothing sent
        sent = await sent_spans(pilot, monkeypatch, lambda: table.set_row("BTCUSDT", row("97,001.5", "+0.12%")))
        assert [s for s in sent if s[0] == y] == []
        # one cell: its own span
        sent = await sent_spans(pilot, monkeypatch, lambda: table.set_cell("BTCUSDT", "note", Text("busy")))
        [(_, x1, x2)] = [s for s in sent if s[0] == y]
        assert x1 >= 40
