"""Who may enter a room (PROTOCOL.md §2): one entitlement check for WebSocket and media.

The check runs once per connection (and once per revocation), never per message. Grants and
revocations are written here too; every revocation is also appended to the revocations stream,
which every gateway's one reader follows, so a refund (or a ban) reaches all connections at once.
A ban is one more reason not to be entitled: a banned viewer fails this same check, so the
gateway and media close its connections exactly as after a refund. Whoever controls the room
(its hosts, owner and admins) is never shut out by a ban.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from engine import keys
from engine.codec import pack_stored, unpack_stored
from engine.errors import Banned, Conflict, InvalidBody, NotEntitled
from engine.ids import RoomId
from engine.rooms import TIERS, Room
from engine.tokens import Identity

REVOCATIONS_MAXLEN = 10_000
MAX_MUTE_S = 30 * 86400
"""A mute lasts at most 30 days."""
MAX_BAN_S = 30 * 86400
"""A timed ban lasts at most 30 days (longer: ban for good)."""
MAX_EXPIRES_AT = 253_402_300_799
"""The latest ticket or membership expiry (the end of 9999): Redis refuses to EXPIREAT much
later."""


class AccessKind(StrEnum):
    """Why a connection may watch (PROTOCOL.md §4 `welcome.access`)."""

    FREE = "free"
    TICKET = "ticket"
    MEMBER = "member"
    HOST = "host"
    PREVIEW = "preview"


@dataclass(frozen=True, slots=True)
class AccessDecision:
    kind: AccessKind
    """How the connection is admitted (the `access` of `welcome`)."""
    preview_ends_at: float | None = None
    """For previews: when access ends (epoch seconds)."""
    tier: str | None = None
    """The user's active membership tier (prices in flash sales), if any."""
    muted_until: float = 0.0
    """The user may not chat in this room before this time (epoch seconds)."""


@dataclass(frozen=True, slots=True)
class Membership:
    tier: str
    expires_at: float | None

    def active(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    @classmethod
    def parse(cls, body: dict) -> Membership:
        tier, exp = body.get("tier"), body.get("expires_at")
        if tier not in TIERS:
            raise InvalidBody(f"`tier` must be one of {', '.join(TIERS)}")
        if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)):
            raise InvalidBody("`expires_at` must be epoch seconds or null")
        return cls(tier, None if exp is None else float(exp))


@dataclass(frozen=True, slots=True)
class Revocation:
    """An access change (grant or revocation): connections of ``user`` re-check their access;
    ``room`` None means every room (a membership change)."""

    user: str
    room: RoomId | None
    reason: str
    muted_until: float | None = None
    """Set for a mute: no re-check, the connections just stop accepting danmaku."""
    words: bool = False
    """Set (with ``user`` empty) when ``room``'s blocked words changed: gateways drop their
    copy and load the new list once; nobody's access is re-checked."""
    room_record: bool = False
    """Set (with ``user`` empty) when ``room``'s record changed (its status): processes drop
    their cached copy (``engine.rooms.RoomCache``); nobody's access is re-checked."""

    def to_event(self) -> dict:
        return {
            "user": self.user,
            "room": self.room,
            "reason": self.reason,
            "muted_until": self.muted_until,
            "words": self.words,
            "room_record": self.room_record,
        }


def decode_revocation(fields: dict[bytes, bytes]) -> Revocation:
    d = unpack_stored(fields[b"e"])
    return Revocation(
        d["user"],
        d.get("room"),
        d.get("reason", ""),
        d.get("muted_until"),
        bool(d.get("words", False)),
        bool(d.get("room_record", False)),
    )


def tier_rank(tier: str | None) -> int:
    return TIERS.index(tier) if tier in TIERS else -1


class EntitlementCheck:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def check(self, room: Room, identity: Identity, *, now: float) -> AccessDecision:
        """The caller's access to ``room``, or ``NotEntitled`` (403)."""
        async with self.redis.pipeline(transaction=False) as p:
            for command in self.read_commands(room.id, identity.user):
                p.execute_command(*command)
            replies = await p.execute()
        return await self.decide(room, identity, replies, now=now)

    @staticmethod
    def read_commands(room: RoomId, user: str) -> list[tuple[str, str]]:
        """The commands whose replies ``decide`` takes, in order (a join sends them with the
        user's slot in one round trip: ``engine.pipeline``)."""
        return [
            ("GET", keys.ticket(room, user)),
            ("HGETALL", keys.membership(user)),
            ("GET", keys.mute(room, user)),
            ("GET", keys.ban(room, user)),
        ]

    async def decide(
        self, room: Room, identity: Identity, replies: list[Any], *, now: float
    ) -> AccessDecision:
        """``check`` from the replies of ``read_commands`` (a preview reads its clock)."""
        user = identity.user
        ticket, member, muted, ban = replies
        if isinstance(member, list):  # HGETALL as RESP2 sends it: [field, value, ...]
            member = dict(zip(member[::2], member[1::2], strict=True))
        m = _membership(member)
        tier = m.tier if m is not None and m.active(now) else None
        mute = float(muted or 0)
        if identity.controls(room.id, room.owner):
            return AccessDecision(AccessKind.HOST, tier=tier)
        if ban is not None and (float(ban) == 0 or float(ban) > now):
            raise Banned("you are banned from this room")
        if not room.access.paid:
            return AccessDecision(AccessKind.FREE, tier=tier, muted_until=mute)
        if ticket is not None and (float(ticket) == 0 or float(ticket) > now):
            return AccessDecision(AccessKind.TICKET, tier=tier, muted_until=mute)
        if tier is not None and tier in room.access.tiers:
            return AccessDecision(AccessKind.MEMBER, tier=tier, muted_until=mute)
        if room.access.preview_seconds > 0:
            # The preview clock starts at the user's first connection and never restarts.
            key = keys.preview(room.id)
            await self.redis.hsetnx(key, user, repr(now))
            first = float(await self.redis.hget(key, user) or now)
            ends = first + room.access.preview_seconds
            if now < ends:
                return AccessDecision(AccessKind.PREVIEW, ends, tier, mute)
            raise NotEntitled("your free preview of this room is over")
        raise NotEntitled("this room is paid: a ticket or a listed membership is required")

    # -- grants and revocations (admin) -------------------------------------------------------

    async def grant_ticket(self, room: RoomId, user: str, expires_at: float | None) -> None:
        key = keys.ticket(room, user)
        if expires_at is None:
            await self.redis.set(key, 0)
        else:
            await self.redis.set(key, repr(expires_at), exat=max(1, int(expires_at) + 1))
        await self._announce(Revocation(user, room, "ticket granted"))

    async def revoke_ticket(self, room: RoomId, user: str) -> bool:
        existed = bool(await self.redis.delete(keys.ticket(room, user)))
        await self._announce(Revocation(user, room, "refund"))
        return existed

    async def set_membership(self, user: str, m: Membership) -> None:
        key = keys.membership(user)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(key)
            p.hset(key, mapping={"tier": m.tier, "expires_at": repr(m.expires_at or 0)})
            if m.expires_at is not None:
                p.expireat(key, max(1, int(m.expires_at) + 1))
            await p.execute()
        await self._announce(Revocation(user, None, "membership changed"))

    async def get_membership(self, user: str) -> Membership | None:
        return _membership(await self.redis.hgetall(keys.membership(user)))

    async def revoke_membership(self, user: str) -> bool:
        existed = bool(await self.redis.delete(keys.membership(user)))
        await self._announce(Revocation(user, None, "membership removed"))
        return existed

    async def mute(self, room: RoomId, user: str, seconds: int, *, now: float) -> float:
        """Mute ``user`` in ``room`` for ``seconds`` (0 lifts it); connections learn it now."""
        until = now + seconds if seconds > 0 else 0.0
        if seconds > 0:
            await self.redis.set(keys.mute(room, user), repr(until), ex=seconds)
        else:
            await self.redis.delete(keys.mute(room, user))
        await self._announce(Revocation(user, room, "muted", until))
        return until

    async def ban(self, room: Room, user: str, seconds: int | None, *, now: float) -> float | None:
        """Ban ``user`` from ``room`` for ``seconds`` (None = for good); its connections and
        media sessions in the room end at once. Answers the ban's end (None = for good).
        Banning the owner is refused: the owner always controls its room."""
        if user == room.owner:
            raise Conflict("the room's owner always has access and cannot be banned")
        key = keys.ban(room.id, user)
        if seconds is None:
            await self.redis.set(key, 0)  # a plain SET also drops an earlier ban's TTL
            until = None
        else:
            until = now + seconds
            await self.redis.set(key, repr(until), ex=seconds)
        await self._announce(Revocation(user, room.id, "banned"))
        return until

    async def unban(self, room: RoomId, user: str) -> bool:
        """Lift a ban (idempotent): whether there was one in force. Nothing to re-check: a
        banned user has no open connection in the room."""
        return bool(await self.redis.delete(keys.ban(room, user)))

    async def _announce(self, r: Revocation) -> None:
        await announce(self.redis, r)


async def announce(redis: Redis, r: Revocation) -> None:
    """Append ``r`` to the revocations stream every gateway and media process follows."""
    await redis.xadd(
        keys.revocations(),
        {"e": pack_stored(r.to_event())},
        maxlen=REVOCATIONS_MAXLEN,
        approximate=True,
    )


def _membership(h: dict[bytes, bytes] | None) -> Membership | None:
    if not h or b"tier" not in h:
        return None
    exp = float(h.get(b"expires_at", b"0"))
    return Membership(h[b"tier"].decode(), exp or None)
