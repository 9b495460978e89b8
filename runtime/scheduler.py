"""Runs due timers (sale opens and ends, lottery draws); every process runs one.

Several processes may see the same due timer: each transition is a conditional script that
acts once, so running it twice is harmless, and a timer is removed only after it ran.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from engine.errors import NotFound
from engine.lottery import DRAW_TIMER
from engine.services import Services
from engine.tasks import cancel_and_wait
from engine.timers import Timer, Timers

log = logging.getLogger("liveroom.scheduler")

Handler = Callable[[Timer, float], Awaitable[object]]


class DrawInProgress(Exception):
    """Another process holds the draw; keep the timer."""


class Scheduler:
    def __init__(self, services: Services, *, interval_s: float = 0.1) -> None:
        self.timers = Timers(services.redis)
        self.interval_s = interval_s
        sales = services.sales
        self.lotteries = services.lotteries
        self.handlers: dict[str, Handler] = {
            "sale.open": lambda t, now: sales.open(t.room, t.id),
            "sale.end": lambda t, now: sales.end(t.room, t.id, by="time", now=now),
            DRAW_TIMER: self._draw,
        }
        self._task: asyncio.Task[None] | None = None

    async def _draw(self, timer: Timer, now: float) -> None:
        """Draw a lottery whose time is up. Another process may hold the draw: then the timer
        stays until the record says drawn (a drawer that died is replaced after its lease)."""
        if await self.lotteries.close_and_draw(timer.room, timer.id, now) is None:
            record = await self.lotteries.get(timer.room, timer.id, with_entrants=False)
            if record["status"] != "drawn":
                raise DrawInProgress(f"lottery {timer.id} is being drawn elsewhere")

    async def run_due(self, now: float) -> int:
        ran = 0
        for timer in await self.timers.due(now):
            handler = self.handlers.get(timer.kind)
            if handler is None:
                continue  # a newer process's timer kind: leave it for that process
            try:
                await handler(timer, now)
            except DrawInProgress:
                continue
            except NotFound:
                log.warning("timer %s names something that no longer exists", timer.member)
            except Exception:
                log.exception("timer %s failed; it stays for a retry", timer.member)
                continue
            await self.timers.done(timer)
            ran += 1
        return ran

    async def _run(self) -> None:
        while True:
            try:
                await self.run_due(time.time())
            except Exception as exc:
                log.warning("scheduler: %s", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None
