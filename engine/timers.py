"""Timed transitions shared by every process: open a sale, end it, draw a lottery.

A timer is a member ``kind|room|id`` of one sorted set scored by its due time. Any process
may run a due timer; the transition it triggers is a conditional Lua script that acts once
(the first caller wins, the others find nothing to do), and the timer is removed only after
the transition ran, so a process that dies mid-way leaves it for another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    @staticmethod
    def add_in(pipe: Any, kind: str, room: RoomId, ident: str, due_s: float) -> None:
        """Queue the timer in ``pipe``: a transaction that also writes the record it acts
        on, so no crash can leave a sale that never ends or a lottery that never draws."""
        pipe.zadd(keys.timers(), {Timer(kind, room, ident).member: int(due_s * 1000)})

    async def due(self, now_s: float, limit: int = 100) -> list[Timer]:
        raw = await self.redis.zrangebyscore(
            keys.timers(), "-inf", int(now_s * 1000), start=0, num=limit
        )
        return [Timer.parse(m) for m in raw]

    async def done(self, timer: Timer) -> None:
        await self.redis.zrem(keys.timers(), timer.member)
