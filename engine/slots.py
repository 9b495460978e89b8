"""The per-user connection limit of a room, counted across every gateway.

A slot is a member of the user's sorted set in Redis (``keys.user_conns``) whose score is its
expiry. Taking one is one atomic script (``lua/conn_slot.lua``: no check-then-act across an
await); the owning gateway refreshes its live slots every third of the ttl and removes a slot
when its connection ends. A gateway that dies stops refreshing: its slots expire within the
ttl, so a crash costs a user at most that long one slot each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from engine import keys, scripts
from engine.ids import RoomId


class ConnectionSlots:
    def __init__(self, redis: Redis, *, limit: int, ttl_ms: int) -> None:
        self.redis = redis
        self.limit = limit
        self.ttl_ms = ttl_ms
        self._take = scripts.register(redis, "conn_slot")

    async def take(self, room: RoomId, user: str, conn_id: str, now_ms: int) -> bool:
        """Hold a slot for ``conn_id``; False when ``user`` already holds ``limit``."""
        got = await self._take(
            keys=[keys.user_conns(room, user)],
            args=[conn_id, now_ms, self.ttl_ms, self.limit],
        )
        return bool(got)

    def take_command(self, room: RoomId, user: str, conn_id: str, now_ms: int) -> tuple:
        """``take`` as a bare EVALSHA to pipeline (no SCRIPT EXISTS round trip); give its
        reply to ``taken``."""
        return (
            "EVALSHA",
            self._take.sha,
            1,
            keys.user_conns(room, user),
            conn_id,
            now_ms,
            self.ttl_ms,
            self.limit,
        )

    @staticmethod
    def release_command(room: RoomId, user: str, conn_id: str) -> tuple:
        """The ZREM that gives a connection's slot back, to pipeline (its ttl frees it anyway)."""
        return ("ZREM", keys.user_conns(room, user), conn_id)

    async def taken(self, reply: Any, room: RoomId, user: str, conn_id: str, now_ms: int) -> bool:
        """Whether ``take_command``'s reply holds the slot (after a NOSCRIPT, taking it again)."""
        if isinstance(reply, NoScriptError):
            return await self.take(room, user, conn_id, now_ms)
        if isinstance(reply, Exception):
            raise reply
        return bool(reply)

    async def refresh(self, held: Iterable[tuple[RoomId, str, str]], now_ms: int) -> None:
        """Extend every live slot (room, user, conn id) this process holds: one round trip."""
        expiry = now_ms + self.ttl_ms
        async with self.redis.pipeline(transaction=False) as p:
            n = 0
            for room, user, conn_id in held:
                key = keys.user_conns(room, user)
                p.zadd(key, {conn_id: expiry}, xx=True)
                p.pexpire(key, self.ttl_ms)
                n += 1
            if n:
                await p.execute()
