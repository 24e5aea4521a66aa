"""Messages between the engine's threads and the console's event loop."""

from __future__ import annotations

from textual.message import Message

from engine.events import BaseEvent
from engine.models import SymbolFeatures


class EngineEvent(Message):
    """An engine event, posted from whatever thread emitted it (post_message is thread-safe).

    `inputs`: for a decision, the market features the decider saw, caught from the
    engine's last snapshot at the moment the decision was emitted (the record does
    not keep them)."""

    def __init__(self, event: BaseEvent, inputs: SymbolFeatures | None = None) -> None:
        super().__init__()
        self.event = event
        self.inputs = inputs
