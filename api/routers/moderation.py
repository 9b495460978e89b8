"""Moderation (the room's hosts and admins): notices, mutes, bans and blocked words."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api.deps import Api, Caller, valid_user
from api.schemas import (
    BanIn,
    BanOut,
    MuteIn,
    MuteOut,
    NoticeIn,
    NoticeOut,
    UserPath,
    WordsIn,
    WordsOut,
)
from engine.errors import InvalidBody
from engine.events import EventType

# Listed under "rooms" in the document, as they always were.
router = APIRouter(tags=["rooms"])


@router.post("/api/rooms/{room}/notices", status_code=201, response_model=NoticeOut)
async def post_notice(room: str, body: NoticeIn, who: Caller, api: Api) -> dict[str, Any]:
    """Post a notice to the room; emits `notice {text}` (a history event)."""
    record = await api.controlled(room, who)
    text = body.text.strip()
    if not text:
        raise InvalidBody("`text` must not be blank")
    event = {"type": EventType.NOTICE, "text": text, "ts": time.time()}
    return {"id": await api.services.bus.publish(record.id, event), "text": text}


@router.post("/api/rooms/{room}/mutes", response_model=MuteOut)
async def post_mute(room: str, body: MuteIn, who: Caller, api: Api) -> dict[str, Any]:
    """Mute a user in the room for `seconds` (0 lifts it): `danmaku` gets `muted`."""
    record = await api.controlled(room, who)
    until = await api.services.access.mute(record.id, body.user, body.seconds, now=time.time())
    return {"room": record.id, "user": body.user, "muted_until": until}


@router.post("/api/rooms/{room}/bans", response_model=BanOut)
async def post_ban(room: str, body: BanIn, who: Caller, api: Api) -> dict[str, Any]:
    """Ban a user from the room for `seconds` (absent: for good): its connections and
    media sessions in the room end within a second (4403), joins get 403 `banned`.
    The room's hosts and admins keep access; banning the owner answers 409."""
    record = await api.controlled(room, who)
    until = await api.services.access.ban(record, body.user, body.seconds, now=time.time())
    return {"room": record.id, "user": body.user, "banned_until": until}


@router.delete("/api/rooms/{room}/bans/{user}", response_model=BanOut)
async def delete_ban(room: str, user: UserPath, who: Caller, api: Api) -> dict[str, Any]:
    """Lift a ban; idempotent (`lifted` says whether one was in force)."""
    record = await api.controlled(room, who)
    lifted = await api.services.access.unban(record.id, valid_user(user))
    return {"room": record.id, "user": user, "lifted": lifted}


@router.put("/api/rooms/{room}/words", response_model=WordsOut)
async def put_words(room: str, body: WordsIn, who: Caller, api: Api) -> dict[str, Any]:
    """Replace the room's blocked words at once (an empty list clears them): danmaku
    containing one, in any case, get `blocked` on every gateway. The deployment's own
    `blocked_words` setting applies as well."""
    record = await api.controlled(room, who)
    result = await api.services.words.replace(record.id, body.blocked)
    return {"room": record.id, "blocked": list(result.words)}


@router.get("/api/rooms/{room}/words", response_model=WordsOut)
async def get_words(room: str, who: Caller, api: Api) -> dict[str, Any]:
    """The room's own blocked words."""
    record = await api.controlled(room, who)
    return {"room": record.id, "blocked": list((await api.services.words.get(record.id)).words)}
