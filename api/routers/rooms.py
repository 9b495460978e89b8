"""Rooms: create, list, read, go live, end, and the host's counters."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import Api, ApiState, Caller
from api.schemas import RoomIn, RoomListOut, RoomOut, StatsOut
from engine import keys
from engine.access import Revocation, announce
from engine.errors import Forbidden
from engine.events import EventType
from engine.rooms import MAX_LIST_OFFSET, MAX_LIST_PAGE, NewRoom, RoomStatus
from engine.tokens import Identity, Role
from media.counts import media_viewers

router = APIRouter(tags=["rooms"])


@router.post("/api/rooms", status_code=201, response_model=RoomOut)
async def create_room(body: RoomIn, who: Caller, api: Api) -> dict[str, Any]:
    """Create a room; the caller becomes its owner (hosts and admins only)."""
    if who.role is Role.VIEWER:
        raise Forbidden("only hosts and admins create rooms")
    new = NewRoom.parse(body.model_dump(exclude_none=True))
    return await api.public(await api.services.rooms.create(new, who.user))


@router.get("/api/rooms", response_model=RoomListOut)
async def list_rooms(
    who: Caller,
    api: Api,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET)] = 0,
) -> dict[str, Any]:
    """The rooms the caller may control, newest first (admins: every room; hosts: the
    rooms in their token's `rooms` and those they created). Page on with `next_offset`."""
    if who.role is Role.VIEWER:
        raise Forbidden("only hosts and admins list rooms")
    page, more = await api.services.rooms.list_controlled(who, offset=offset, limit=limit)
    return {
        "rooms": [r.to_dict() for r in page],
        "next_offset": offset + limit if more else None,
    }


@router.get("/api/rooms/{room}", response_model=RoomOut)
async def get_room(room: str, who: Caller, api: Api) -> dict[str, Any]:
    """The room with its status, access and live counters."""
    return await api.public(await api.load(room))


@router.post("/api/rooms/{room}/live", response_model=RoomOut)
async def go_live(room: str, who: Caller, api: Api) -> dict[str, Any]:
    """Go live: emits `room.live`."""
    return await _transition(api, room, who, RoomStatus.LIVE, EventType.ROOM_LIVE)


@router.post("/api/rooms/{room}/end", response_model=RoomOut)
async def end(room: str, who: Caller, api: Api) -> dict[str, Any]:
    """End the show: emits `room.ended`."""
    return await _transition(api, room, who, RoomStatus.ENDED, EventType.ROOM_ENDED)


async def _transition(
    api: ApiState, room: str, who: Identity, status: RoomStatus, event: str
) -> dict[str, Any]:
    record = await api.controlled(room, who)
    if record.status is not status:
        record = await api.services.rooms.set_status(record.id, status)
        # Gateways hold room records in a cache: this tells them the record changed.
        change = Revocation("", record.id, "room changed", room_record=True)
        await announce(api.services.redis, change)
        await api.services.bus.publish(record.id, {"type": event, "ts": time.time()})
    return await api.public(record)


@router.get("/api/rooms/{room}/stats", response_model=StatsOut)
async def stats(room: str, who: Caller, api: Api) -> dict[str, Any]:
    """Counters: online, peak, unique viewers, danmaku, likes, and per sale."""
    record = await api.controlled(room, who)
    redis, sales = api.services.redis, api.services.sales
    likes, online = await api.counters.snapshot(record.id, int(time.time() * 1000))
    async with redis.pipeline(transaction=False) as p:
        p.get(keys.peak_online(record.id))
        # (a command by name: redis-py's cluster pipeline refuses ``pfcount``, multi-key in
        # general, though one key is fine)
        p.execute_command("PFCOUNT", keys.unique_viewers(record.id))
        p.get(keys.danmaku_count(record.id))
        p.zrange(keys.sales(record.id), 0, -1)
        peak, uniq, chats, sale_ids = await p.execute()
    per_sale = []
    for sid in sale_ids:
        sale = await sales.get(record.id, sid.decode())
        per_sale.append(
            {
                "sale": sale["id"],
                "status": sale["status"],
                "sold": sale["sold"],
                "revenue_cents": sale["revenue_cents"],
                "buyers": sale["buyers"],
            }
        )
    return {
        "room": record.id,
        "online": online,
        "peak_online": max(int(peak or 0), online),
        "unique_viewers": int(uniq),
        "danmaku": int(chats or 0),
        "likes": likes,
        "media_viewers": await media_viewers(redis, record.id, int(time.time() * 1000)),
        "sales": per_sale,
    }
