"""Deadlines: many connections' deadlines on one timer; cancelled and moved ones never fire."""

from __future__ import annotations

import asyncio
import time

from gateway.deadlines import Deadlines


async def test_deadlines_fire_in_order_once_and_cancelled_ones_never() -> None:
    fired: list[str] = []
    d: Deadlines[str] = Deadlines(fired.append)
    now = time.time()
    d.arm("b", now + 0.10, now)
    d.arm("a", now + 0.05, now)
    d.arm("gone", now + 0.02, now)
    d.arm("moved", now + 0.03, now)
    d.cancel("gone")
    d.arm("moved", now + 0.15, now)  # re-armed later: fires once, at the new time
    d.arm("never", None, now)
    await asyncio.sleep(0.3)
    assert fired == ["a", "b", "moved"]
    assert len(d) == 0


async def test_stale_entries_do_not_pile_up() -> None:
    d: Deadlines[int] = Deadlines(lambda _: None)
    now = time.time()
    for i in range(1000):
        d.arm(i, now + 3600, now)
        d.cancel(i)
    assert len(d) == 0 and len(d._heap) <= 130
