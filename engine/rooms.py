"""Rooms and their access rules (PROTOCOL.md §2), as values; ``RoomStore`` keeps them in Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from engine import keys
from engine.codec import dumps_json, loads_json
from engine.errors import Conflict, InvalidBody, NotFound
from engine.ids import RoomId, new_epoch, new_room_id, room_id

TIERS = ("normal", "senior", "vip")
MAX_TITLE_CHARS = 200


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
        if mode != "paid":
            raise InvalidBody("`access.mode` must be `free` or `paid`")
        price = value.get("price_cents", 0)
        preview = value.get("preview_seconds", 0)
        tiers = value.get("tiers", [])
        for name, v in (("price_cents", price), ("preview_seconds", preview)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 10**9:
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
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(key, mapping=room.to_hash())
            p.sadd(keys.rooms_index(), room.id)
            await p.execute()
        return room

    async def get(self, rid: RoomId) -> Room:
        h = await self.redis.hgetall(keys.room(rid))
        if not h or b"epoch" not in h:
            raise NotFound(f"no room {rid!r}")
        return Room.from_hash(h)

    async def set_status(self, rid: RoomId, status: RoomStatus) -> Room:
        room = await self.get(rid)
        await self.redis.hset(keys.room(rid), "status", status.value)
        return replace(room, status=status)
