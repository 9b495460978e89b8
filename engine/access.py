"""Who may enter a room (PROTOCOL.md §2): one entitlement check for WebSocket and media.

The check runs once per connection (and once per revocation), never per message. Grants and
revocations are written here too; every revocation is also appended to the revocations stream,
which every gateway's one reader follows, so a refund reaches all connections at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from engine import keys
from engine.codec import pack_stored, unpack_stored
from engine.errors import InvalidBody, NotEntitled
from engine.ids import RoomId
from engine.rooms import TIERS, Room
from engine.tokens import Identity

REVOCATIONS_MAXLEN = 10_000


@dataclass(frozen=True, slots=True)
class AccessDecision:
    kind: str
    """`free`, `ticket`, `member`, `host` or `preview`."""
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

    def to_event(self) -> dict:
        return {
            "user": self.user,
            "room": self.room,
            "reason": self.reason,
            "muted_until": self.muted_until,
        }


def decode_revocation(fields: dict[bytes, bytes]) -> Revocation:
    d = unpack_stored(fields[b"e"])
    return Revocation(d["user"], d.get("room"), d.get("reason", ""), d.get("muted_until"))


def tier_rank(tier: str | None) -> int:
    return TIERS.index(tier) if tier in TIERS else -1


class EntitlementCheck:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def check(self, room: Room, identity: Identity, *, now: float) -> AccessDecision:
        """The caller's access to ``room``, or ``NotEntitled`` (403)."""
        user = identity.user
        async with self.redis.pipeline(transaction=False) as p:
            p.get(keys.ticket(room.id, user))
            p.hgetall(keys.membership(user))
            p.get(keys.mute(room.id, user))
            ticket, member, muted = await p.execute()
        m = _membership(member)
        tier = m.tier if m is not None and m.active(now) else None
        mute = float(muted or 0)
        if identity.controls(room.id, room.owner):
            return AccessDecision("host", tier=tier)
        if not room.access.paid:
            return AccessDecision("free", tier=tier, muted_until=mute)
        if ticket is not None and (float(ticket) == 0 or float(ticket) > now):
            return AccessDecision("ticket", tier=tier, muted_until=mute)
        if tier is not None and tier in room.access.tiers:
            return AccessDecision("member", tier=tier, muted_until=mute)
        if room.access.preview_seconds > 0:
            # The preview clock starts at the user's first connection and never restarts.
            key = keys.preview(room.id)
            await self.redis.hsetnx(key, user, repr(now))
            first = float(await self.redis.hget(key, user) or now)
            ends = first + room.access.preview_seconds
            if now < ends:
                return AccessDecision("preview", ends, tier, mute)
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

    async def _announce(self, r: Revocation) -> None:
        await self.redis.xadd(
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
