"""ScriptBatcher: concurrent writes share round trips, each stays atomic, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine import keys
from engine.bus import RoomBus, published
from engine.codec import unpack_stored
from engine.errors import Unavailable
from engine.ids import RoomId
from engine.pipeline import ScriptBatcher, pack_evalsha
from engine.sales import NewSale, SaleLedger, SaleRefused, answer_to_order
from engine.settings import Settings
from engine.store import connect
from runtime.redis_server import RedisServer
from tests.support import SECRET, unique


def test_packed_evalsha_is_the_resp_redis_reads() -> None:
    got = pack_evalsha("a" * 40, ["k1"], [b"\x00\xff", 7, "x"])
    assert got == (
        b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"a" * 40 + b"\r\n$1\r\n1\r\n$2\r\nk1\r\n"
        b"$2\r\n\x00\xff\r\n$1\r\n7\r\n$1\r\nx\r\n"
    )


async def test_batched_buys_each_stay_atomic_and_the_queue_is_bounded(
    redis: Redis, redis_url: str
) -> None:
    ledger = SaleLedger(redis, Settings(secret=SECRET, redis_url=redis_url))
    room = RoomId(unique("batch"))
    sale = await ledger.create(
        room, NewSale("sku", "Cup", 100, stock=50, per_user_limit=1, duration_s=60)
    )
    batcher = ScriptBatcher(redis)
    now = time.time()

    async def attempt(i: int) -> str:
        keys, args = ledger.buy_call(room, sale["id"], f"u{i}", "r", 1, None, now)
        try:
            return answer_to_order(await batcher.call(ledger.buy_script, keys, args)).id
        except SaleRefused as exc:
            return exc.code

    results = await asyncio.gather(*(attempt(i) for i in range(200)))
    assert sum(r == "sold_out" for r in results) == 150
    assert len({r for r in results if r != "sold_out"}) == 50
    assert batcher.trips < 20  # round trips were shared
    assert batcher.pending == 0

    full = ScriptBatcher(redis, max_pending=0)
    keys, args = ledger.buy_call(room, sale["id"], "late", "r", 1, None, now)
    with pytest.raises(Unavailable):
        await full.call(ledger.buy_script, keys, args)
    assert full.pending == 0


async def test_writes_leave_in_order_and_a_resent_ref_publishes_once(
    redis: Redis, redis_url: str
) -> None:
    bus = RoomBus(redis, Settings(secret=SECRET, redis_url=redis_url))
    room = RoomId(unique("order"))
    batcher = ScriptBatcher(redis, max_batch=7)  # several trips
    calls = [
        bus.publish_call(room, {"type": "danmaku", "text": str(i)}, "u", f"r{i % 40}")
        for i in range(80)
    ]
    replies = await asyncio.gather(*(batcher.call(bus.publish_script, k, a) for k, a in calls))
    answers = [published(r) for r in replies]
    assert [fresh for _, fresh in answers] == [True] * 40 + [False] * 40
    assert [answers[i][0] for i in range(40)] == [answers[i + 40][0] for i in range(40)]
    stored = await redis.xrange(f"lr:{{room:{room}}}:events")
    assert [unpack_stored(f[b"e"])["text"] for _, f in stored] == [str(i) for i in range(40)]


async def test_an_emptied_script_cache_is_reloaded_and_nothing_is_lost(
    redis: Redis, redis_url: str
) -> None:
    """After SCRIPT FLUSH (as after a Redis restart) every call is answered, exactly once."""
    bus = RoomBus(redis, Settings(secret=SECRET, redis_url=redis_url))
    room = RoomId(unique("flush"))
    batcher = ScriptBatcher(redis)
    await redis.script_flush()
    calls = [
        bus.publish_call(room, {"type": "danmaku", "text": str(i)}, "u", f"r{i}") for i in range(30)
    ]
    replies = await asyncio.gather(*(batcher.call(bus.publish_script, k, a) for k, a in calls))
    assert all(published(r)[1] for r in replies)
    assert await redis.xlen(f"lr:{{room:{room}}}:events") == 30


async def test_a_trip_that_never_comes_back_is_answered_unavailable(tmp_path: Path) -> None:
    """Whatever hangs inside a trip, its callers hear `unavailable` within the trip's bound,
    and the next trip works once Redis answers again."""
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    redis = connect(server.url)
    try:
        ledger = SaleLedger(redis, Settings(secret=SECRET, redis_url=server.url))
        room = RoomId(unique("trip"))
        sale = await ledger.create(
            room, NewSale("sku", "Cup", 100, stock=50, per_user_limit=5, duration_s=60)
        )
        batcher = ScriptBatcher(redis, trip_timeout_s=0.3)  # far below the 3 s reply timeout
        keys, args = ledger.buy_call(room, sale["id"], "u", "r1", 1, None, time.time())
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # Redis takes the commands and never answers
        try:
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                await batcher.call(ledger.buy_script, keys, args)
            assert time.monotonic() - t0 < 1.0
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        for _ in range(50):  # the stalled connection is dropped; then buys work again
            try:
                keys, args = ledger.buy_call(room, sale["id"], "u", "r2", 1, None, time.time())
                reply = await batcher.call(ledger.buy_script, keys, args)
                assert answer_to_order(reply).qty == 1
                break
            except Unavailable:
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("buys never worked again")
        assert batcher.pending == 0
    finally:
        await redis.aclose()
        server.stop()


async def test_a_dropped_connection_is_retried_and_each_ref_counts_once(
    redis: Redis, redis_url: str
) -> None:
    """Redis closing the trip's connection (a restart, a proxy) costs nobody an answer."""
    ledger = SaleLedger(redis, Settings(secret=SECRET, redis_url=redis_url))
    room = RoomId(unique("drop"))
    sale = await ledger.create(
        room, NewSale("sku", "Cup", 100, stock=1000, per_user_limit=1000, duration_s=60)
    )
    client = connect(redis_url)
    batcher = ScriptBatcher(client)
    try:
        now = time.time()
        first = [ledger.buy_call(room, sale["id"], "u", f"a{i}", 1, None, now) for i in range(20)]
        await asyncio.gather(*(batcher.call(ledger.buy_script, k, a) for k, a in first))
        await redis.client_kill_filter(_type="normal", skipme=True)  # every other client
        again = [ledger.buy_call(room, sale["id"], "u", f"a{i}", 1, None, now) for i in range(40)]
        replies = await asyncio.gather(*(batcher.call(ledger.buy_script, k, a) for k, a in again))
        orders = [answer_to_order(r).id for r in replies]
        assert len(set(orders)) == 40  # the first 20 refs got their first orders back
        assert await redis.xlen(keys.sale_orders(room, sale["id"])) == 40
    finally:
        await client.aclose()


async def test_a_group_of_commands_is_answered_together_with_errors_in_place(
    redis: Redis,
) -> None:
    key = unique("grp")
    batcher = ScriptBatcher(redis)
    got = await batcher.commands([("SET", key, "v"), ("HGETALL", key), ("GET", key)])
    assert got[0] is True and got[2] == b"v"  # parsed as redis-py parses them
    assert "WRONGTYPE" in str(got[1])  # an error reply takes its place; the others still count
    assert batcher.pending == 0
