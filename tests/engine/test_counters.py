"""engine/counters.py against a real Redis: likes and online counts shared by gateways."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from engine import keys
from engine.counters import RoomCounters, RoomTotals
from engine.ids import RoomId
from tests.support import unique

TTL_MS = 3_000


def _room() -> RoomId:
    return RoomId(unique("ctr"))


def _gateways(redis: Redis) -> tuple[RoomCounters, RoomCounters]:
    tag = unique("gw")
    return RoomCounters(redis, f"{tag}-a", TTL_MS), RoomCounters(redis, f"{tag}-b", TTL_MS)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _lo(totals: dict[RoomId, RoomTotals]) -> dict[RoomId, tuple[int, int | None]]:
    """(likes, online) per room: the part of RoomTotals these tests are about."""
    return {room: (t.likes, t.online) for room, t in totals.items()}


async def test_sync_with_nothing_to_report_is_empty(redis: Redis) -> None:
    a, _ = _gateways(redis)
    assert await a.sync({}, None, _now_ms()) == {}
    assert await a.sync({}, {}, _now_ms()) == {}


async def test_like_deltas_add_up_across_gateways(redis: Redis) -> None:
    a, b = _gateways(redis)
    room, other = _room(), _room()
    now = _now_ms()
    assert _lo(await a.sync({room: 3}, None, now)) == {room: (3, None)}
    assert _lo(await b.sync({room: 4, other: 1}, None, now)) == {room: (7, None), other: (1, None)}
    assert (await a.sync({room: 0}, None, now))[room].likes == 7  # a zero delta reads the total
    assert (await a.sync({room: 10}, None, now))[room].likes == 17
    assert (await a.snapshot(room, now))[0] == 17


async def test_online_totals_sum_both_gateways(redis: Redis) -> None:
    a, b = _gateways(redis)
    room = _room()
    now = _now_ms()
    assert _lo(await a.sync({}, {room: 2}, now)) == {room: (0, 2)}
    assert _lo(await b.sync({}, {room: 5}, now)) == {room: (0, 7)}
    # a report replaces that gateway's share, it does not add to it
    assert (await a.sync({}, {room: 3}, now))[room].online == 8
    # reporting 0 removes the share
    assert (await b.sync({}, {room: 0}, now))[room].online == 3
    assert await a.snapshot(room, now) == (0, 3)
    assert await a.snapshot(room, now, exclude_self=True) == (0, 0)
    assert await b.snapshot(room, now, exclude_self=True) == (0, 3)


async def test_likes_and_online_in_one_sync(redis: Redis) -> None:
    a, b = _gateways(redis)
    likes_only, both, online_only = _room(), _room(), _room()
    now = _now_ms()
    await b.sync({both: 1}, {both: 1}, now)
    got = await a.sync({likes_only: 2, both: 3}, {both: 4, online_only: 6}, now)
    assert _lo(got) == {likes_only: (2, None), both: (4, 5), online_only: (0, 6)}


async def test_a_gateway_that_stopped_reporting_drops_out(redis: Redis) -> None:
    a, b = _gateways(redis)
    room = _room()
    now = _now_ms()
    await a.sync({}, {room: 4}, now)
    assert (await b.sync({}, {room: 1}, now))[room].online == 5
    # Within the ttl a's share still counts; past it (a crashed: no new report) it is gone.
    assert (await b.sync({}, {room: 1}, now + TTL_MS))[room].online == 5
    later = now + TTL_MS + 1
    assert (await b.sync({}, {room: 1}, later))[room].online == 1
    assert await b.snapshot(room, later) == (0, 1)
    # and it stays gone: the expired share was removed, not just skipped
    assert await redis.hkeys(f"lr:{{room:{room}}}:online") == [b.gateway_id.encode()]


async def test_snapshot_ignores_expired_shares_without_a_sync(redis: Redis) -> None:
    a, b = _gateways(redis)
    room = _room()
    now = _now_ms()
    await a.sync({room: 2}, {room: 4}, now)
    assert await b.snapshot(room, now) == (2, 4)
    assert await b.snapshot(room, now + TTL_MS + 1) == (2, 0)


async def test_snapshot_of_an_unknown_room(redis: Redis) -> None:
    a, _ = _gateways(redis)
    assert await a.snapshot(_room(), _now_ms()) == (0, 0)


async def test_a_report_resent_under_its_number_counts_once(redis: Redis) -> None:
    """redis-py may retry a report whose reply was lost, and a gateway resends one it got no
    reply for: the same number adds its deltas once."""
    a, b = _gateways(redis)
    room, now = _room(), _now_ms()
    seq = a.next_seq()
    for _ in range(3):
        totals = await a.sync({room: 5}, None, now, danmaku_deltas={room: 2}, seq=seq)
    assert totals[room].likes == 5
    assert (await b.sync({room: 1}, None, now))[room].likes == 6  # b's numbers are its own
    assert (await a.sync({room: 1}, None, now))[room].likes == 7  # a's next number counts
    assert int(await redis.get(keys.danmaku_count(room))) == 2
