"""Stopping background tasks without hanging.

A task cancelled in the middle of a redis-py command sometimes swallows the cancellation
(redis-py issues #2028, #2551); a stop path that awaits it forever then hangs the process's
shutdown. Every stop path waits a bounded time instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

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
