"""Client→server ops (PROTOCOL.md §4), parsed from decoded messages into typed values.

Parsing is pure and total: any map either becomes an op or raises ``BadRequest`` with a message
a client author can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import BadRequest

MAX_REF_CHARS = 64


@dataclass(frozen=True, slots=True)
class Danmaku:
    text: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Like:
    count: int
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Buy:
    sale: str
    qty: int
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Enter:
    lottery: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level ping: answered with ``ack {ref}`` (useful to measure round trips)."""

    ref: str | None = None


Op = Danmaku | Like | Buy | Enter | Ping


def ref_of(message: Any) -> str | None:
    """The ``ref`` of a message if it has a usable one (for error replies to bad messages)."""
    if isinstance(message, dict):
        ref = message.get("ref")
        if isinstance(ref, str) and len(ref) <= MAX_REF_CHARS:
            return ref
    return None


def _str(m: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    v = m.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str):
        raise BadRequest(f"`{key}` must be a string")
    return v


def _int(m: dict[str, Any], key: str, default: int | None = None) -> int:
    v = m.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"`{key}` must be an integer")
    return v


def parse_op(message: Any) -> Op:
    if not isinstance(message, dict):
        raise BadRequest("a message must be a map with `op`")
    op = message.get("op")
    if not isinstance(op, str):
        raise BadRequest("`op` must be a string")
    ref = _str(message, "ref", required=False)
    if ref is not None and len(ref) > MAX_REF_CHARS:
        raise BadRequest(f"`ref` longer than {MAX_REF_CHARS} characters")
    if op == "danmaku":
        return Danmaku(text=_str(message, "text") or "", ref=ref)
    if op == "like":
        count = _int(message, "count", 1)
        if not 1 <= count <= 100:
            raise BadRequest("`count` must be 1..100")
        return Like(count=count, ref=ref)
    if op == "buy":
        sale = _str(message, "sale") or ""
        return Buy(sale=sale, qty=_int(message, "qty", 1), ref=ref)
    if op == "enter":
        return Enter(lottery=_str(message, "lottery") or "", ref=ref)
    if op == "ping":
        return Ping(ref=ref)
    raise BadRequest(f"unknown op {op[:32]!r}")
