"""BuyBatcher: many attempts share a round trip; past its bound it answers at once."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from engine.errors import Unavailable
from engine.ids import RoomId
from engine.sales import NewSale, SaleLedger, SaleRefused
from engine.settings import Settings
from gateway.buys import BuyBatcher
from tests.support import SECRET, unique


async def test_batched_attempts_each_stay_atomic_and_the_queue_is_bounded(
    redis: Redis, redis_url: str
) -> None:
    ledger = SaleLedger(redis, Settings(secret=SECRET, redis_url=redis_url))
    room = RoomId(unique("batch"))
    sale = await ledger.create(
        room, NewSale("sku", "Cup", 100, stock=50, per_user_limit=1, duration_s=60)
    )
    batcher = BuyBatcher(ledger)
    now = time.time()

    async def attempt(i: int) -> str:
        keys, args = ledger.buy_call(room, sale["id"], f"u{i}", "r", 1, None, now)
        try:
            return (await batcher.buy(keys, args)).id
        except SaleRefused as exc:
            return exc.code

    results = await asyncio.gather(*(attempt(i) for i in range(200)))
    assert sum(r == "sold_out" for r in results) == 150
    assert len({r for r in results if r != "sold_out"}) == 50
    assert batcher.batches < 200  # round trips were shared

    full = BuyBatcher(ledger, max_pending=0)
    keys, args = ledger.buy_call(room, sale["id"], "late", "r", 1, None, now)
    with pytest.raises(Unavailable):
        await full.buy(keys, args)
    assert full.pending == 0


async def test_a_trip_that_never_comes_back_is_answered_unavailable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Whatever hangs inside a batch's round trip, its buyers hear `unavailable` within the
    trip's bound, and the next batch works once Redis answers again."""
    import os
    import signal

    from engine.store import connect
    from runtime.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    redis = connect(server.url)
    try:
        ledger = SaleLedger(redis, Settings(secret=SECRET, redis_url=server.url))
        room = RoomId(unique("trip"))
        sale = await ledger.create(
            room, NewSale("sku", "Cup", 100, stock=50, per_user_limit=5, duration_s=60)
        )
        batcher = BuyBatcher(ledger, trip_timeout_s=0.3)  # far below the 3 s reply timeout
        keys, args = ledger.buy_call(room, sale["id"], "u", "r1", 1, None, time.time())
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # Redis takes the command and never answers
        try:
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                await batcher.buy(keys, args)
            assert time.monotonic() - t0 < 1.0
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        for _ in range(50):  # the stalled connection times out; then buys work again
            try:
                keys, args = ledger.buy_call(room, sale["id"], "u", "r2", 1, None, time.time())
                assert (await batcher.buy(keys, args)).qty == 1
                break
            except Unavailable:
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("buys never worked again")
    finally:
        await redis.aclose()
        server.stop()
