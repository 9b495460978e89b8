"""Stopping background tasks without hanging.

A task cancelled in the middle of a redis-py command sometimes swallows the cancellation
(redis-py issues #2028, #2551); a stop path that awaits it forever then hangs the process's
shutdown. Every stop path waits a bounded time instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable

log = logging.getLogger("liveroom.tasks")


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[object] | None], timeout: float = 2.0
) -> None:
    live = [t for t in tasks if t is not None and not t.done()]
    for t in live:
        t.cancel()
    if not live:
        return
    _, pending = await asyncio.wait(live, timeout=timeout)
    for t in pending:
        log.warning("task %s did not stop within %.1fs; leaving it", t.get_name(), timeout)


class TaskSet:
    """The tasks a role starts and does not await at once (a close, a re-check, a report).

    asyncio keeps only weak references to tasks: one nobody holds may vanish mid-flight. Each
    task here is held until it ends, its failure is logged (never lost silently), and
    ``stop`` cancels whatever is left, within a bounded wait.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[object]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[object, object, object]) -> asyncio.Task[object]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", self.name, exc_info=task.exception())

    async def stop(self, timeout: float = 2.0) -> None:
        await cancel_and_wait(list(self._tasks), timeout)
