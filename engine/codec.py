"""The one wire codec: events and ops to bytes and back, with every size and depth limit.

Two subprotocols carry the same maps: ``liveroom.v1.msgpack`` (binary messages) and
``liveroom.v1.json`` (text messages). Stored stream entries use msgpack too. Nothing else in
the project calls ``msgpack`` or ``json`` on wire data.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import msgpack

from engine.errors import BadRequest

Event = dict[str, Any]


class Subprotocol(StrEnum):
    MSGPACK = "liveroom.v1.msgpack"
    JSON = "liveroom.v1.json"

    @property
    def binary(self) -> bool:
        return self is Subprotocol.MSGPACK


SUBPROTOCOLS = (Subprotocol.MSGPACK, Subprotocol.JSON)

_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def negotiate(offered: list[str] | tuple[str, ...]) -> Subprotocol:
    """The client's first offered subprotocol we speak; JSON when it offers neither."""
    for name in offered:
        for sp in SUBPROTOCOLS:
            if name == sp.value:
                return sp
    return Subprotocol.JSON


def encode(events: list[Event], sp: Subprotocol) -> bytes:
    """Encode one server→client message (always an array of events)."""
    if sp is Subprotocol.MSGPACK:
        return msgpack.packb(events, use_bin_type=True)
    return _json_encoder.encode(events).encode("utf-8")


def encode_value(value: Any, sp: Subprotocol) -> bytes:
    """Encode any value (used by clients for ops, and by tests)."""
    if sp is Subprotocol.MSGPACK:
        return msgpack.packb(value, use_bin_type=True)
    return _json_encoder.encode(value).encode("utf-8")


def decode_message(data: bytes | str, *, max_bytes: int = 64 * 1024, max_depth: int = 8) -> Any:
    """Decode one incoming message of either subprotocol, enforcing size and depth.

    Text messages are JSON, binary messages are msgpack, whatever was negotiated: a client
    that mixes them is still understood. Raises ``BadRequest`` on anything undecodable.
    """
    # A text message's size is its UTF-8 length (up to 4 bytes a character); a lone surrogate
    # is counted here and refused below.
    size = (
        len(data.encode("utf-8", "surrogatepass"))
        if isinstance(data, str) and len(data) * 4 > max_bytes
        else len(data)
    )
    if size > max_bytes:
        raise BadRequest(f"message larger than {max_bytes} bytes")
    try:
        if isinstance(data, str):
            value = json.loads(data)
        else:
            value = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                max_str_len=max_bytes,
                max_bin_len=max_bytes,
                max_array_len=_max_array_len(data),
                max_map_len=256,
                max_ext_len=0,
            )
    except (
        ValueError,
        TypeError,
        RecursionError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise BadRequest(f"undecodable message: {exc.__class__.__name__}") from None
    if _depth(value, max_depth) > max_depth:
        raise BadRequest(f"message nested deeper than {max_depth}")
    if isinstance(data, str) and ("\\u" in data or not data.isascii()):
        # `"\\ud800"` decodes to a lone surrogate, which no encoder can write out again (the
        # ack echoing its `ref`, the stored danmaku would fail): refuse it here.
        try:
            _json_encoder.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("undecodable message: a lone surrogate in a string") from None
    return value


def decode_events(data: bytes | str) -> list[Event]:
    """Decode one server→client message (client side)."""
    value = json.loads(data) if isinstance(data, str) else msgpack.unpackb(data, raw=False)
    if not isinstance(value, list):
        raise BadRequest("a server message must be an array of events")
    return value


def pack_stored(event: Event) -> bytes:
    """Encode an event for storage in a room stream (without its id)."""
    return msgpack.packb(event, use_bin_type=True)


def unpack_stored(data: bytes) -> Event:
    return msgpack.unpackb(data, raw=False)


def dumps_json(value: Any) -> str:
    """JSON for records kept in Redis (room access, media)."""
    return _json_encoder.encode(value)


def loads_json(text: str | bytes) -> Any:
    return json.loads(text)


# msgpack allocates an array's slots when it reads the header, before any element arrives, and
# stops nesting only at 1,024 levels: nested array16 headers (3 bytes each) claiming 4,096
# elements once took 32 MiB for a 4 KiB message. So all the array16/array32 headers a message
# may hold (every byte 0xdc or 0xdd counts as one) share these slots (512 KiB): up to 16 of
# them may claim 4,096 each, more claim less. Ops carry no arrays.
_MAX_ARRAY_SLOTS = 1 << 16


def _max_array_len(data: bytes) -> int:
    headers = data.count(0xDC) + data.count(0xDD)
    return min(4096, _MAX_ARRAY_SLOTS // max(headers, 1))


def _depth(value: Any, limit: int, level: int = 0) -> int:
    """Nesting depth of containers (a flat map is 1), giving up once past ``limit``."""
    if level > limit or not isinstance(value, (dict, list)):
        return level
    deepest = level + 1
    for child in value.values() if isinstance(value, dict) else value:
        # Scalars cost no call: this runs on every message, and one of 64 KiB holds ~30,000.
        if isinstance(child, (dict, list)):
            deepest = max(deepest, _depth(child, limit, level + 1))
            if deepest > limit:
                break
    return deepest
