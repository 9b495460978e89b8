"""Reads that many joins need at once, shared: a reconnect storm costs a few reads per room.

``SharedReads.get(key)`` joins the next read of ``key`` that has not been sent yet, starting it
(or queueing it behind the one in flight). So every caller gets a read sent AFTER it asked: a
join that attached to its room first and then asks misses nothing published before the read,
and what comes after reaches it live. Callers that ask while a read is in flight share the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedReads(Generic[K, V]):
    def __init__(self, read: Callable[[K], Awaitable[V]]) -> None:
        self._read = read
        self._next: dict[K, asyncio.Future[V]] = {}
        self._running: dict[K, asyncio.Task[None]] = {}
        self.reads = 0
        self.asks = 0

    async def get(self, key: K) -> V:
        self.asks += 1
        waiting = self._next.get(key)
        if waiting is None:
            waiting = self._next[key] = asyncio.get_running_loop().create_future()
            if key not in self._running:
                self._running[key] = asyncio.ensure_future(self._run(key))
        return await asyncio.shield(waiting)

    async def _run(self, key: K) -> None:
        try:
            while (waiting := self._next.pop(key, None)) is not None:
                self.reads += 1
                try:
                    waiting.set_result(await self._read(key))
                except Exception as exc:
                    waiting.set_exception(exc)
                    waiting.exception()  # (retrieved: each caller re-raises it)
        finally:
            del self._running[key]
