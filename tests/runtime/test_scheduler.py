"""Timed transitions survive a crash at any point of a sale's or lottery's creation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId
from engine.lottery import DRAW_TIMER, LotteryBook
from engine.sales import NewSale, SaleLedger
from engine.services import Services
from engine.settings import Settings
from engine.timers import Timer
from runtime.redis_server import RedisServer
from runtime.scheduler import Scheduler
from tests.support import unique

SALE = {
    "item": "i",
    "title": "t",
    "price_cents": 100,
    "stock": 5,
    "duration_s": 60,
    "per_user_limit": 1,
}


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[Redis]:
    """A Redis no other process's scheduler reads: the test decides when timers run."""
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()
    server.stop()


async def test_a_sale_whose_opening_was_lost_in_a_crash_still_opens(own_redis: Redis) -> None:
    """`create` writes the record and both timers in one transaction, then opens a sale that
    starts now. A process that dies between the two leaves a scheduled sale: the `sale.open`
    timer (written with the record) opens it."""
    redis = own_redis
    settings = Settings()
    room = RoomId(unique())
    sales = SaleLedger(redis, settings)
    sale = await sales.create(room, NewSale.parse(SALE))
    assert sale["status"] == "open"
    # as if the process had died right after the transaction, before opening it:
    await redis.hset(keys.sale(room, sale["id"]), "status", "scheduled")
    await redis.hdel(keys.stock(room), sale["id"])
    assert await Scheduler(Services.build(settings, redis)).run_due(time.time()) >= 1
    assert (await sales.get(room, sale["id"]))["status"] == "open"
    end = Timer("sale.end", room, sale["id"]).member
    assert await redis.zscore(keys.timers(), end) is not None  # it will also end by itself


async def test_a_lottery_is_written_with_its_draw_timer(redis: Redis) -> None:
    room = RoomId(unique())
    book = LotteryBook(redis)
    now = time.time()
    rec = await book.create(room, "prize", 1, None, 30, now)
    due = await redis.zscore(keys.timers(), Timer(DRAW_TIMER, room, rec["id"]).member)
    assert due == int(rec["ends_at"] * 1000)
