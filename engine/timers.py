"""Timed transitions shared by every process: open a sale, end it, draw a lottery.

A timer is a member ``kind|room|id`` of one sorted set scored by its due time. Any process
may run a due timer; the transition it triggers is a conditional Lua script that acts once
(the first caller wins, the others find nothing to do), and the timer is removed only after
the transition ran, so a process that dies mid-way leaves it for another.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId


@dataclass(frozen=True, slots=True)
class Timer:
    kind: str
    room: RoomId
    id: str

    @property
    def member(self) -> str:
        return f"{self.kind}|{self.room}|{self.id}"

    @classmethod
    def parse(cls, member: bytes | str) -> Timer:
        text = member.decode() if isinstance(member, bytes) else member
        kind, room, ident = text.split("|", 2)
        return cls(kind, RoomId(room), ident)


class Timers:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def add(self, kind: str, room: RoomId, ident: str, due_s: float) -> None:
        await self.redis.zadd(keys.timers(), {Timer(kind, room, ident).member: int(due_s * 1000)})

    async def add_many(self, timers: list[tuple[Timer, float]]) -> None:
        """Add timers (each with its due time, epoch s) at once. Callers add a record's timers
        BEFORE the record: a crash between leaves a timer that finds nothing and is dropped,
        never a record whose transition does not happen (the set is process-wide, so on a
        cluster it cannot share a transaction with a room's keys)."""
        await self.redis.zadd(keys.timers(), {t.member: int(due * 1000) for t, due in timers})

    async def due(self, now_s: float, limit: int = 100) -> list[Timer]:
        raw = await self.redis.zrangebyscore(
            keys.timers(), "-inf", int(now_s * 1000), start=0, num=limit
        )
        return [Timer.parse(m) for m in raw]

    async def done(self, timer: Timer) -> None:
        await self.redis.zrem(keys.timers(), timer.member)
