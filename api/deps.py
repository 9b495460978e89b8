"""What the HTTP API's routers share: the caller's identity, the process's services, and the
checks every room route makes (the room exists, the caller controls it, admins only).

``create_app`` builds one ``ApiState`` and keeps it on ``app.state.api``; routes take it as a
dependency (``Api``) instead of closing over it, so that each router is a plain module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from engine.counters import RoomCounters
from engine.errors import Forbidden, InvalidBody, NotFound
from engine.ids import RoomId, is_valid_id
from engine.rooms import Room
from engine.services import Services
from engine.settings import Settings
from engine.tokens import Identity, Role, verify_request
from media.counts import media_viewers


@dataclass(frozen=True, slots=True)
class ApiState:
    """The process's services as the API uses them."""

    services: Services
    counters: RoomCounters
    """The API's own reader of likes and online counts (it reports no connections)."""

    @classmethod
    def build(cls, services: Services) -> ApiState:
        s = services.settings
        return cls(services, RoomCounters(services.redis, "api", s.online_ttl_ms))

    @property
    def settings(self) -> Settings:
        return self.services.settings

    async def load(self, room: str) -> Room:
        """The room named in the path, or 404 (an id that cannot exist is not looked up)."""
        if not is_valid_id(room):
            raise NotFound(f"no room {room[:64]!r}")
        return await self.services.rooms.get(RoomId(room))

    async def controlled(self, room: str, who: Identity) -> Room:
        """The room, if ``who`` is one of its hosts or an admin; else 403."""
        record = await self.load(room)
        if not who.controls(record.id, record.owner):
            raise Forbidden("only this room's hosts and admins may do this")
        return record

    async def public(self, record: Room) -> dict[str, Any]:
        """The room's record with its live counters (`RoomOut`)."""
        now_ms = int(time.time() * 1000)
        likes, online = await self.counters.snapshot(record.id, now_ms)
        watching = await media_viewers(self.services.redis, record.id, now_ms)
        return {**record.to_dict(), "online": online, "likes": likes, "media_viewers": watching}


def api_state(request: Request) -> ApiState:
    return request.app.state.api


def caller(request: Request) -> Identity:
    """The verified identity behind ``Authorization: Bearer`` (or ``?token=``)."""
    settings = api_state(request).settings
    return verify_request(
        settings.secret,
        request.headers.get("authorization"),
        request.query_params.get("token"),
        leeway_s=settings.token_leeway_s,
    )


Api = Annotated[ApiState, Depends(api_state)]
Caller = Annotated[Identity, Depends(caller)]


def admin_only(who: Identity) -> None:
    if who.role is not Role.ADMIN:
        raise Forbidden("only admins manage tickets and memberships")


def valid_user(user: str) -> str:
    if not is_valid_id(user):
        raise InvalidBody("user ids are 1-64 characters of [A-Za-z0-9_.-]")
    return user
