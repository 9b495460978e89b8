"""Likes and online counts: counters in Redis, fed by every gateway's local deltas.

A gateway never writes a counter per like or per connection; it reports what changed since its
last report, once per interval, for all its rooms in one round trip. Each report carries a
number, increasing per gateway: redis-py retrying a report after a timeout, or the gateway
resending one whose reply it never got, adds its deltas once (``lua/count.lua``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from engine import keys, scripts
from engine.ids import RoomId

SEQ_TTL_S = 3600
"""How long a gateway's last report number is kept per room (far beyond any retry)."""


@dataclass(frozen=True, slots=True)
class RoomTotals:
    likes: int
    online: int | None  # None when online counts were not part of this sync
    stock: dict[str, int]  # open sale id -> units left


class RoomCounters:
    def __init__(self, redis: Redis, gateway_id: str, online_ttl_ms: int) -> None:
        self.redis = redis
        self.gateway_id = gateway_id
        self.online_ttl_ms = online_ttl_ms
        self._online = scripts.register(redis, "online")
        self._count = scripts.register(redis, "count")
        self._seq = 0

    def next_seq(self) -> int:
        """A new report number (a report resent after an error keeps its first number)."""
        self._seq += 1
        return self._seq

    async def sync(
        self,
        like_deltas: dict[RoomId, int],
        online_counts: dict[RoomId, int] | None,
        now_ms: int,
        *,
        danmaku_deltas: dict[RoomId, int] | None = None,
        new_viewers: dict[RoomId, set[str]] | None = None,
        seq: int | None = None,
    ) -> dict[RoomId, RoomTotals]:
        """Add like deltas, optionally report online counts; return every room's totals.

        Danmaku counts and newly admitted viewers (for unique-viewer stats) ride along in the
        same round trip. ``seq`` numbers the report (a new one when None); resending a report
        that may have been applied must pass its first number. Every write here is safe to
        repeat: the deltas by number, the rest by nature (online shares, HyperLogLog)."""
        chats = danmaku_deltas or {}
        rooms = list(like_deltas)
        rooms += [r for r in chats if r not in like_deltas]
        if online_counts:
            rooms += [r for r in online_counts if r not in like_deltas and r not in chats]
        if not rooms and not new_viewers:
            return {}
        seq = self.next_seq() if seq is None else seq

        def build(p: Any) -> None:
            for room, users in (new_viewers or {}).items():
                p.pfadd(keys.unique_viewers(room), *users)
            for room in rooms:
                scripts.queue(
                    p,
                    self._count,
                    [keys.likes(room), keys.danmaku_count(room), keys.counter_seq(room, me)],
                    [seq, like_deltas.get(room, 0), chats.get(room, 0), SEQ_TTL_S],
                )
                p.hgetall(keys.stock(room))
                if online_counts is not None and room in online_counts:
                    scripts.queue(
                        p,
                        self._online,
                        [keys.online(room), keys.online_expiry(room), keys.peak_online(room)],
                        [me, online_counts[room], now_ms, self.online_ttl_ms],
                    )

        me = self.gateway_id
        replies = await scripts.run_pipeline(self.redis, build, [self._count, self._online])
        extra = len(new_viewers or {})
        out: dict[RoomId, RoomTotals] = {}
        i = extra
        for room in rooms:
            likes = int(replies[i])
            stock = {k.decode(): int(v) for k, v in replies[i + 1].items()}
            i += 2
            online = None
            if online_counts is not None and room in online_counts:
                online = int(replies[i])
                i += 1
            out[room] = RoomTotals(likes, online, stock)
        return out

    async def snapshot(
        self, room: RoomId, now_ms: int, *, exclude_self: bool = False
    ) -> tuple[int, int]:
        """(likes, online) as stored; ``exclude_self`` leaves out this gateway's own share."""
        async with self.redis.pipeline(transaction=False) as p:
            p.get(keys.likes(room))
            p.hgetall(keys.online(room))
            p.hgetall(keys.online_expiry(room))
            likes, counts, exps = await p.execute()
        me = self.gateway_id.encode()
        online = sum(
            int(counts.get(gw, 0))
            for gw, exp in exps.items()
            if int(exp) >= now_ms and not (exclude_self and gw == me)
        )
        return int(likes or 0), online
