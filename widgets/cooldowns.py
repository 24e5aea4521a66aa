"""Active cooldowns: no new entry on a symbol until its time is up."""

from __future__ import annotations

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Label

from engine.models import Cooldown
from widgets import format as fmt
from widgets.titles import set_border_title
from widgets.table import KeyedTable


class CooldownsTable(KeyedTable):
    COMPONENT_CLASSES = {"cooldowns--left", "cooldowns--reason", "cooldowns--muted"}
    COLUMNS = (  # the ticking column next to the symbol (see PositionsTable)
        ("symbol", "Symbol", 12),
        ("left", "Left", 7),
        ("side", "Side", 5),
        ("reason", "After", None),
    )


class CooldownsPanel(Vertical):
    """One row per symbol in cooldown; a row goes when its cooldown ends."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("-empty", update=False)  # it starts empty: the count at mount finds the class set (no second styling)
        self.cooldowns: dict[str, Cooldown] = {}

    def compose(self):
        self._table = CooldownsTable(id="cooldowns-table")
        yield self._table
        yield Label("No cooldowns.", classes="empty")

    def on_mount(self) -> None:
        self._counted()

    @property
    def table(self) -> CooldownsTable:
        return self._table

    def _text(self, value: str, style: str = "") -> Text:
        s = self.table.cell_style(f"cooldowns--{style}") if style else ""
        return Text(value, style=s, end="")

    def started(self, cooldown: Cooldown, now: float) -> None:
        if not cooldown.active(now):
            return
        self.cooldowns[cooldown.symbol] = cooldown
        self.table.set_row(
            cooldown.symbol,
            {
                "symbol": self._text(cooldown.symbol),
                "side": self._text(cooldown.side or "—", "muted"),
                "reason": self._text(cooldown.reason, "reason"),
                "left": self._text(fmt.countdown(cooldown.seconds_left(now)), "left"),
            },
        )
        self._counted()

    def tick(self, now: float) -> None:
        for sym, c in list(self.cooldowns.items()):
            if not c.active(now):
                del self.cooldowns[sym]
                self.table.drop_row(sym)
            else:
                self.table.set_cell(sym, "left", self._text(fmt.countdown(c.seconds_left(now)), "left"))
        self._counted()

    def _counted(self) -> None:
        n = len(self.cooldowns)
        title = f"Cooldowns ({n})" if n else "Cooldowns"
        set_border_title(self, title)
        self.set_class(n == 0, "-empty")
