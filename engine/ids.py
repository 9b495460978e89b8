"""Identifiers: user ids, room ids, and the ``epoch:id`` resume cursor."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import NewType

from engine.errors import BadRequest

UserId = NewType("UserId", str)
RoomId = NewType("RoomId", str)
EventId = NewType("EventId", str)

ID_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
"""Every user, room, sale and lottery id (the API anchors it in its OpenAPI document)."""
_ID_RE = re.compile(ID_PATTERN)
_EPOCH_RE = re.compile(r"[a-z0-9]{1,32}")
_STREAM_ID_RE = re.compile(r"(\d{1,20})-(\d{1,20})")

ZERO_ID = EventId("0-0")
_EPOCH_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def room_id(value: str) -> RoomId:
    if not is_valid_id(value):
        raise BadRequest("room id must be 1-64 characters of [A-Za-z0-9_.-]")
    return RoomId(value)


def user_id(value: str) -> UserId:
    if not is_valid_id(value):
        raise BadRequest("user id must be 1-64 characters of [A-Za-z0-9_.-]")
    return UserId(value)


def new_epoch() -> str:
    """A short random string of letters and digits that names one run of a room's history."""
    return "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(10))


def new_room_id() -> RoomId:
    return RoomId("r" + "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(11)))


def parse_stream_id(value: str) -> tuple[int, int]:
    m = _STREAM_ID_RE.fullmatch(value)
    if m is None:
        raise BadRequest(f"not a history id: {value!r}")
    return int(m.group(1)), int(m.group(2))


def stream_id_key(value: str) -> tuple[int, int]:
    """Sort key of a Redis stream id (ids do not sort as strings)."""
    return parse_stream_id(value)


@dataclass(frozen=True, slots=True)
class Cursor:
    """A client's resume point: ``since=<epoch>:<id>``."""

    epoch: str
    id: EventId

    @classmethod
    def parse(cls, text: str) -> Cursor:
        epoch, sep, sid = text.partition(":")
        if not sep or _EPOCH_RE.fullmatch(epoch) is None:
            raise BadRequest("since must be <epoch>:<id>")
        parse_stream_id(sid)
        return cls(epoch, EventId(sid))

    def __str__(self) -> str:
        return f"{self.epoch}:{self.id}"
