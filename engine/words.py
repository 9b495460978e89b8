"""Blocked words (PROTOCOL.md §3 `PUT /api/rooms/{room}/words`, §4 danmaku error `blocked`).

A word blocks every danmaku that contains it, compared case-insensitively (``str.casefold``).
The deployment-wide ``blocked_words`` setting applies to every room and adds to each room's own
list. ``WordFilter`` is the pure matcher; ``BlockedWords`` keeps a room's list in Redis and
announces every change on the revocations stream, so that gateways reload a room's list once
per change. Nothing here may be called per danmaku with a Redis round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from engine import keys
from engine.access import Revocation, announce
from engine.errors import InvalidBody
from engine.ids import RoomId

MAX_WORDS = 500
"""At most this many words per room."""
MAX_WORD_CHARS = 50
"""A word is 1..50 characters (after stripping surrounding spaces)."""


@dataclass(frozen=True, slots=True)
class WordFilter:
    """A set of casefolded words; ``matches`` is a substring test against each."""

    words: tuple[str, ...] = ()

    def matches(self, folded: str) -> bool:
        """Whether ``folded`` (a danmaku's text, already casefolded) contains a word."""
        return any(w in folded for w in self.words)

    @classmethod
    def from_setting(cls, csv: str) -> WordFilter:
        """The comma-separated ``blocked_words`` setting."""
        return cls(tuple(dict.fromkeys(w.strip().casefold() for w in csv.split(",") if w.strip())))


EMPTY = WordFilter()


def normalize(words: Iterable[object]) -> tuple[str, ...]:
    """Validate a room's new list: strings of 1..``MAX_WORD_CHARS`` characters, at most
    ``MAX_WORDS``. Answers them stripped, casefolded, without duplicates, sorted; words that
    are blank once stripped are dropped (a blank word would block every message)."""
    out: set[str] = set()
    for count, w in enumerate(words, 1):
        if count > MAX_WORDS:
            raise InvalidBody(f"at most {MAX_WORDS} blocked words per room")
        if not isinstance(w, str) or len(w) > MAX_WORD_CHARS:
            raise InvalidBody(f"a blocked word is a string of 1-{MAX_WORD_CHARS} characters")
        folded = w.strip().casefold()
        if folded:
            out.add(folded)
    return tuple(sorted(out))


class BlockedWords:
    """Rooms' own blocked-word lists in Redis (a set per room)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, room: RoomId) -> WordFilter:
        members = await self.redis.smembers(keys.blocked_words(room))
        return WordFilter(tuple(sorted(m.decode() for m in members)))

    async def replace(self, room: RoomId, words: Iterable[object]) -> WordFilter:
        """Replace the room's list at once; every gateway reloads it on the stream entry."""
        clean = normalize(words)
        key = keys.blocked_words(room)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(key)
            if clean:
                p.sadd(key, *clean)
            await p.execute()
        await announce(self.redis, Revocation("", room, "blocked words changed", words=True))
        return WordFilter(clean)
