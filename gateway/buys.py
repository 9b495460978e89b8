"""Batches concurrent `buy` ops of a gateway process into one Redis round trip.

Each attempt stays its own atomic `buy.lua` call; only the trip is shared. Nothing waits for a
batch to fill: while one pipeline is in flight, new attempts queue, and the next pipeline takes
them all, so batching adds no latency at low load and saves round trips at high load.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine import scripts
from engine.errors import Unavailable
from engine.sales import Order, SaleLedger, answer_to_order
from engine.store import REPLY_TIMEOUT_S

log = logging.getLogger("liveroom.buys")

TRIP_TIMEOUT_S = 2 * REPLY_TIMEOUT_S + 2
"""Longest one batch's round trip may take, SCRIPT EXISTS and reconnects included, before its
buyers are answered `unavailable` (the script's own deadline makes a late write do nothing)."""


class BuyBatcher:
    def __init__(
        self,
        ledger: SaleLedger,
        *,
        enabled: bool = True,
        max_batch: int = 512,
        max_pending: int = 10_000,
        trip_timeout_s: float = TRIP_TIMEOUT_S,
    ) -> None:
        self.ledger = ledger
        self.enabled = enabled
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.trip_timeout_s = trip_timeout_s
        self.pending = 0
        self._queue: list[tuple[list[str], list[Any], asyncio.Future[bytes]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        """The one flush in flight (held: asyncio keeps only weak references to tasks)."""
        self.batches = 0
        self.attempts = 0

    async def buy(self, keys: list[str], args: list[Any]) -> Order:
        # A bounded queue: past it, answer at once rather than seconds late (resending the
        # same ref later is always safe).
        if self.pending >= self.max_pending:
            raise Unavailable("too many purchases in flight; resend the same ref shortly")
        self.attempts += 1
        self.pending += 1
        try:
            return await self._buy(keys, args)
        finally:
            self.pending -= 1

    async def _buy(self, keys: list[str], args: list[Any]) -> Order:
        if not self.enabled:
            return answer_to_order(await self.ledger.buy_script(keys=keys, args=args))
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._queue.append((keys, args, fut))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return answer_to_order(await fut)

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self.batches += 1
                try:
                    async with asyncio.timeout(self.trip_timeout_s):
                        async with self.ledger.redis.pipeline(transaction=False) as p:
                            for keys, args, _ in batch:
                                await self.ledger.buy_script(keys=keys, args=args, client=p)
                            results = await p.execute(raise_on_error=False)
                except TimeoutError:
                    # Every wait inside has its own bound; this one holds whatever slips past
                    # them, so that a buyer always hears back (resending the same ref is safe).
                    log.warning(
                        "a buy trip took over %.1f s; answering unavailable", self.trip_timeout_s
                    )
                    late = Unavailable("purchases are slow to confirm; resend the same ref")
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(late)
                    continue
                except Exception as exc:  # the whole trip failed: every caller learns it
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), result in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(result, Exception):
                        fut.set_exception(scripts.late_to_unavailable(result))
                    else:
                        fut.set_result(result)
        finally:
            self._flushing = False
