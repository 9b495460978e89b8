"""Rooms and their access rules (PROTOCOL.md §2), as values; ``RoomStore`` keeps them in Redis."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from engine import keys
from engine.codec import dumps_json, loads_json
from engine.errors import Conflict, InvalidBody, NotFound
from engine.ids import RoomId, new_epoch, new_room_id, room_id
from engine.tokens import Identity, Role

TIERS = ("normal", "senior", "vip")
"""Membership tiers, lowest first."""
ACCESS_MODES = ("free", "paid")
MAX_TITLE_CHARS = 200
MAX_PRICE_CENTS = 10**9
"""A price (a paid room's ticket, a sale's price and tier prices) is 0..10**9 cents."""
MAX_PREVIEW_S = 10**9
MAX_NOTICE_CHARS = 500
"""A notice (``POST /api/rooms/{room}/notices``) is 1..500 characters."""
MAX_LIST_PAGE = 200
"""``GET /api/rooms`` answers at most this many rooms a page..."""
MAX_LIST_OFFSET = 100_000
"""...and pages no further than this."""


class RoomStatus(StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Access:
    mode: str = "free"
    price_cents: int = 0
    tiers: tuple[str, ...] = ()
    preview_seconds: int = 0

    @property
    def paid(self) -> bool:
        return self.mode == "paid"

    def to_dict(self) -> dict[str, Any]:
        if not self.paid:
            return {"mode": "free"}
        return {
            "mode": "paid",
            "price_cents": self.price_cents,
            "tiers": list(self.tiers),
            "preview_seconds": self.preview_seconds,
        }

    @classmethod
    def parse(cls, value: Any) -> Access:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InvalidBody("`access` must be an object")
        mode = value.get("mode", "free")
        if mode == "free":
            return cls()
        if mode not in ACCESS_MODES:
            raise InvalidBody("`access.mode` must be `free` or `paid`")
        price = value.get("price_cents", 0)
        preview = value.get("preview_seconds", 0)
        tiers = value.get("tiers", [])
        for name, v, most in (
            ("price_cents", price, MAX_PRICE_CENTS),
            ("preview_seconds", preview, MAX_PREVIEW_S),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > most:
                raise InvalidBody(f"`access.{name}` must be a non-negative integer")
        if not isinstance(tiers, list) or any(t not in TIERS for t in tiers):
            raise InvalidBody(f"`access.tiers` must be a list of {', '.join(TIERS)}")
        return cls("paid", price, tuple(dict.fromkeys(tiers)), preview)


@dataclass(frozen=True, slots=True)
class Room:
    id: RoomId
    title: str
    status: RoomStatus
    access: Access
    owner: str
    epoch: str
    created_at: float
    media: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The public record (the HTTP API and the `welcome` snapshot build on it)."""
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status.value,
            "access": self.access.to_dict(),
            "owner": self.owner,
            "created_at": self.created_at,
            "media": self.media,
        }

    def to_hash(self) -> dict[str, str]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status.value,
            "access": dumps_json(self.access.to_dict()),
            "owner": self.owner,
            "epoch": self.epoch,
            "created_at": repr(self.created_at),
            "media": dumps_json(self.media),
        }

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> Room:
        d = {k.decode(): v.decode() for k, v in h.items()}
        return cls(
            id=RoomId(d["id"]),
            title=d["title"],
            status=RoomStatus(d["status"]),
            access=Access.parse(loads_json(d["access"])),
            owner=d["owner"],
            epoch=d["epoch"],
            created_at=float(d["created_at"]),
            media=loads_json(d.get("media", "null")),
        )


@dataclass(frozen=True, slots=True)
class NewRoom:
    """A validated ``POST /api/rooms`` body."""

    id: RoomId
    title: str
    access: Access = field(default_factory=Access)
    media: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> NewRoom:
        rid = body.get("id")
        title = body.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE_CHARS:
            raise InvalidBody(f"`title` must be 1-{MAX_TITLE_CHARS} characters")
        try:
            the_id = new_room_id() if rid is None else room_id(rid)
        except Exception:
            raise InvalidBody("`id` must be 1-64 characters of [A-Za-z0-9_.-]") from None
        media = body.get("media")
        if media is not None:
            if not isinstance(media, dict) or media.get("source") not in ("pattern", "file"):
                raise InvalidBody('`media.source` must be "pattern" or "file"')
            if media["source"] == "file" and not isinstance(media.get("path"), str):
                raise InvalidBody("`media.path` must name a file on the server")
        return cls(the_id, title.strip(), Access.parse(body.get("access")), media)


class RoomStore:
    """Room records in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, new: NewRoom, owner: str, *, now: float | None = None) -> Room:
        room = Room(
            id=new.id,
            title=new.title,
            status=RoomStatus.SCHEDULED,
            access=new.access,
            owner=owner,
            epoch=new_epoch(),
            created_at=time.time() if now is None else now,
            media=new.media,
        )
        key = keys.room(room.id)
        # HSETNX on `id` claims the id atomically; the rest of the record follows.
        if not await self.redis.hsetnx(key, "id", room.id):
            raise Conflict(f"room {room.id!r} exists")
        # The record and the indexes live on different slots of a cluster (the room's tag, the
        # process-wide lists, the owner's tag): one pipeline, not one transaction.
        async with self.redis.pipeline(transaction=False) as p:
            p.hset(key, mapping=room.to_hash())
            p.sadd(keys.rooms_index(), room.id)
            p.zadd(keys.rooms_by_time(), {room.id: room.created_at})
            p.zadd(keys.rooms_owned(owner), {room.id: room.created_at})
            await p.execute()
        return room

    async def get(self, rid: RoomId) -> Room:
        h = await self.redis.hgetall(keys.room(rid))
        if not h or b"epoch" not in h:
            raise NotFound(f"no room {rid!r}")
        return Room.from_hash(h)

    async def set_status(self, rid: RoomId, status: RoomStatus) -> Room:
        """(The caller announces the change: ``Revocation.room_record``, so caches drop it.)"""
        room = await self.get(rid)
        await self.redis.hset(keys.room(rid), "status", status.value)
        return replace(room, status=status)

    # -- listing (GET /api/rooms) ------------------------------------------------------------

    async def list_all(self, *, offset: int, limit: int) -> tuple[list[Room], bool]:
        """Every room, newest first: a page of ``limit`` from ``offset``, and whether more
        follow."""
        await self._index_old_rooms()
        ids = await self.redis.zrevrange(keys.rooms_by_time(), offset, offset + limit)
        return await self._page([RoomId(i.decode()) for i in ids], limit)

    async def list_controlled(
        self, identity: Identity, *, offset: int, limit: int
    ) -> tuple[list[Room], bool]:
        """The rooms a host controls (its token's ``rooms`` and the rooms it owns), newest
        first, paged like ``list_all``."""
        if identity.role is Role.ADMIN:
            return await self.list_all(offset=offset, limit=limit)
        await self._index_old_rooms()
        owned = await self.redis.zrevrange(
            keys.rooms_owned(identity.user), 0, offset + limit, withscores=True
        )
        created = {RoomId(i.decode()): score for i, score in owned}
        named = sorted(identity.rooms - created.keys())
        if named:
            scores = await self.redis.zmscore(keys.rooms_by_time(), named)
            created.update((r, s) for r, s in zip(named, scores, strict=True) if s is not None)
        # Newest first; ties (same created_at) in reverse id order, as ZREVRANGE orders them.
        ordered = sorted(created, key=lambda r: (created[r], r), reverse=True)
        return await self._page(ordered[offset : offset + limit + 1], limit)

    async def _page(self, ids: list[RoomId], limit: int) -> tuple[list[Room], bool]:
        async with self.redis.pipeline(transaction=False) as p:
            for rid in ids[:limit]:
                p.hgetall(keys.room(rid))
            hashes = await p.execute()
        rooms = [Room.from_hash(h) for h in hashes if h and b"epoch" in h]
        return rooms, len(ids) > limit

    async def _index_old_rooms(self) -> None:
        """Rooms created before the time index existed are in ``rooms_index`` only: add them
        to the time and owner indexes (once; a no-op while the counts agree)."""
        async with self.redis.pipeline(transaction=False) as p:
            p.scard(keys.rooms_index())
            p.zcard(keys.rooms_by_time())
            total, indexed = await p.execute()
        if indexed >= total:
            return
        ids = sorted(m.decode() for m in await self.redis.smembers(keys.rooms_index()))
        scores = await self.redis.zmscore(keys.rooms_by_time(), ids) if ids else []
        missing = [RoomId(i) for i, s in zip(ids, scores, strict=True) if s is None]
        async with self.redis.pipeline(transaction=False) as p:
            for rid in missing:
                p.hmget(keys.room(rid), "created_at", "owner")
            found = await p.execute()
        async with self.redis.pipeline(transaction=False) as p:
            for rid, (created_at, owner) in zip(missing, found, strict=True):
                if created_at is None or owner is None:
                    continue
                p.zadd(keys.rooms_by_time(), {rid: float(created_at)})
                p.zadd(keys.rooms_owned(owner.decode()), {rid: float(created_at)})
            await p.execute()


class RoomCache:
    """Room records this process read lately: a join reads its room from here, not Redis.

    A record is kept ``ttl_s`` at most, and dropped at once when the revocations stream says it
    changed (``engine.access.Revocation.room_record``, announced by every writer of a room
    record); the ttl only bounds how long a missed announcement could matter. Concurrent misses
    for one room share one read. At most ``max_rooms`` are kept (the oldest go first).
    """

    def __init__(self, store: RoomStore, *, ttl_s: float = 30.0, max_rooms: int = 10_000) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_rooms = max_rooms
        self._rooms: dict[RoomId, tuple[Room, float]] = {}
        self._reading: dict[RoomId, asyncio.Future[Room]] = {}
        self._forgotten: set[RoomId | None] = set()
        """Rooms that changed while being read: that read's answer is not kept."""
        self.hits = 0
        self.misses = 0

    async def get(self, rid: RoomId, now: float) -> Room:
        """The room (``now``: monotonic seconds), or ``NotFound``."""
        got = self._rooms.get(rid)
        if got is not None and now - got[1] < self.ttl_s:
            self.hits += 1
            return got[0]
        reading = self._reading.get(rid)
        if reading is None:
            self.misses += 1
            reading = self._reading[rid] = asyncio.ensure_future(self._read(rid, now))
        return await asyncio.shield(reading)

    async def _read(self, rid: RoomId, now: float) -> Room:
        try:
            room = await self.store.get(rid)
        finally:
            self._reading.pop(rid, None)
        if rid not in self._forgotten:
            while len(self._rooms) >= self.max_rooms:
                del self._rooms[next(iter(self._rooms))]
            self._rooms[rid] = (room, now)
        return room

    def forget(self, rid: RoomId | None) -> None:
        """Drop ``rid`` (None: every room): its record changed."""
        if rid is None:
            self._rooms.clear()
        else:
            self._rooms.pop(rid, None)
        self._forgotten = {rid} if rid is not None and rid in self._reading else set()
