"""Guarded write scripts (engine/scripts.py): a call Redis starts too late does nothing."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from engine import keys
from engine.codec import pack_stored
from engine.errors import Unavailable
from engine.ids import RoomId
from engine.scripts import GuardedScript, is_late
from tests.support import unique


def _publish_args() -> list[object]:
    return [pack_stored({"type": "notice", "text": "hi"}), 10_000, 600, 1_000_000]


async def test_a_call_started_after_its_deadline_writes_nothing(redis: Redis) -> None:
    stream = keys.events(RoomId(unique()))
    late = GuardedScript(redis, "publish", deadline_s=-1.0)  # already past when Redis runs it
    with pytest.raises(Unavailable):
        await late(keys=[stream], args=_publish_args())
    assert await redis.xlen(stream) == 0

    on_time = GuardedScript(redis, "publish", deadline_s=5.0)
    await on_time(keys=[stream], args=_publish_args())
    assert await redis.xlen(stream) == 1  # the guard removed the deadline: ARGV as documented


async def test_late_calls_in_a_pipeline_answer_late_one_by_one(redis: Redis) -> None:
    stream = keys.events(RoomId(unique()))
    late = GuardedScript(redis, "publish", deadline_s=-1.0)
    on_time = GuardedScript(redis, "publish", deadline_s=5.0)
    async with redis.pipeline(transaction=False) as p:
        late.queue(p, [stream], _publish_args())
        on_time.queue(p, [stream], _publish_args())
        first, second = await p.execute(raise_on_error=False)
    assert is_late(first) and not isinstance(second, Exception)
    assert await redis.xlen(stream) == 1
