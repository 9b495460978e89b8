"""Per-room tick batching, as a plain value.

History events and the latest state values collect between ticks; ``take`` returns what one
tick sends: the history events in id order, then one event per state value that changed.
State events are coalesced: only the newest ``likes`` / ``online`` value goes out.
"""

from __future__ import annotations

from engine.codec import Event


class RoomBatch:
    __slots__ = ("history", "_state", "_sent")

    def __init__(self) -> None:
        self.history: list[Event] = []
        self._state: dict[str, Event] = {}
        self._sent: dict[str, Event] = {}

    def add_history(self, events: list[Event]) -> None:
        self.history.extend(events)

    def set_state(self, key: str, event: Event) -> None:
        """Record the newest value of a state event (``likes``, ``online``, ...)."""
        if self._sent.get(key) != event:
            self._state[key] = event
        else:
            self._state.pop(key, None)

    def current_state(self) -> list[Event]:
        """The newest value of every state event, sent or not (for a joining connection)."""
        return list({**self._sent, **self._state}.values())

    def take(self) -> tuple[list[Event], list[Event]]:
        """(history events, changed state events) for this tick; empties the batch."""
        history, self.history = self.history, []
        state = list(self._state.values())
        self._sent.update(self._state)
        self._state = {}
        return history, state

    def __bool__(self) -> bool:
        return bool(self.history or self._state)
