"""A room's media viewer count as stored in Redis, for the HTTP API and stats.

Light on purpose (no aiortc): the API process reads what media processes report. Each media
process writes its own share with ``engine/lua/online.lua`` on ``keys.media_viewers`` and
``keys.media_viewers_expiry``; a share whose expiry passed belongs to a process that stopped
reporting and is not counted.
"""

from __future__ import annotations

from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId


async def media_viewers(redis: Redis, room: RoomId, now_ms: int) -> int:
    """WHEP sessions of ``room`` across every live media process."""
    async with redis.pipeline(transaction=False) as p:
        p.hgetall(keys.media_viewers(room))
        p.hgetall(keys.media_viewers_expiry(room))
        counts, expiries = await p.execute()
    return sum(int(counts.get(proc, 0)) for proc, exp in expiries.items() if int(exp) >= now_ms)
