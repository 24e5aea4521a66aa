"""Messages from the engine's socket to the console's event loop."""

from __future__ import annotations

from textual.message import Message

from engine.events import BaseEvent


class EngineEvent(Message):
    """An engine event; `replayed`: part of the picture of the desk the engine sends when
    the console attaches (shown, but no toast or bell: it is not news)."""

    def __init__(self, event: BaseEvent, replayed: bool = False) -> None:
        super().__init__()
        self.event = event
        self.replayed = replayed


class LinkStatus(Message):
    """The console attached (or not, and why); `replayed`: the engine's picture is all in."""

    def __init__(self, attached: bool, detail: str, replayed: bool = False) -> None:
        super().__init__()
        self.attached = attached
        self.detail = detail
        self.replayed = replayed
