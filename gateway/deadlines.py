"""Every connection's deadline (token expiry, a preview's end) on ONE event-loop timer.

A heap of (due, key) and one ``call_at`` for the earliest; a connection re-armed or gone leaves
only a small stale entry (no reference to it), dropped when it comes due or when stale entries
outnumber live ones. Times are wall-clock seconds (tokens and previews are), passed in.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    def __init__(self, fire: Callable[[T], None]) -> None:
        self.fire = fire
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, tuple[float, T]] = {}
        self._keys: dict[int, int] = {}  # id(item) -> its key while armed
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = float("inf")

    def __len__(self) -> int:
        return len(self._armed)

    def arm(self, item: T, due: float | None, now: float) -> None:
        """Fire ``item`` at ``due`` (replacing what it had); None: no deadline."""
        self.cancel(item)
        if due is None:
            return
        key = next(self._seq)
        self._keys[id(item)] = key
        self._armed[key] = (due, item)
        heapq.heappush(self._heap, (due, key))
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._armed):
            self._heap = [(d, k) for d, k in self._heap if k in self._armed]
            heapq.heapify(self._heap)
        self._schedule(now)

    def cancel(self, item: T) -> None:
        key = self._keys.pop(id(item), None)
        if key is not None:
            self._armed.pop(key, None)

    def _schedule(self, now: float) -> None:
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None and self._timer_due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, due - now), self._run)
        self._timer_due = due

    def _run(self) -> None:
        self._timer, self._timer_due = None, float("inf")
        now = time.time()
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            armed = self._armed.pop(key, None)
            if armed is not None:
                item = armed[1]
                self._keys.pop(id(item), None)
                self.fire(item)
        self._schedule(now)
