"""The status bar's values: repainted in place while their width holds."""

from __future__ import annotations

from textual.app import App

from app.console import find_styles
from widgets.status import StatusBar


class Bar(App):
    CSS_PATH = str(find_styles())

    def compose(self):
        yield StatusBar(id="status")


async def test_equity_moving_by_the_marks_does_not_lay_out_the_screen(monkeypatch):
    """With positions open the marks move equity and available every second. A value of
    the same width is repainted where it is; a wider one lays the bar out again."""
    app = Bar()
    async with app.run_test(size=(160, 4)) as pilot:
        bar = app.query_one(StatusBar)
        bar.equity, bar.available = 10_000.0, 9_000.0
        await pilot.pause()
        layouts: list[str] = []
        for name in ("equity", "avail"):
            label = bar.labels[f"st-{name}"]
            real = label.refresh
            monkeypatch.setattr(label, "refresh", lambda *a, layout=False, _n=name, _r=real, **k:
                                (layout and layouts.append(_n), _r(*a, layout=layout, **k))[1])
        bar.equity, bar.available = 10_012.4, 9_001.75  # same widths
        await pilot.pause()
        assert layouts == []
        assert str(bar.labels["st-equity"].content) == "10,012.40"
        avail = bar.labels["st-avail"]
        width = avail.region.width
        bar.available = 100_001.75  # one more digit and a comma
        await pilot.pause()
        assert set(layouts) == {"avail"}  # (Textual asks again once the label has its new size)
        assert avail.region.width == width + 2 and str(avail.content) == "100,001.75"
