"""Who may enter a room (PROTOCOL.md §2): one entitlement check for WebSocket and media.

The check runs once per connection (and once per revocation), never per message.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from engine.errors import NotEntitled
from engine.rooms import Room
from engine.tokens import Identity


@dataclass(frozen=True, slots=True)
class AccessDecision:
    kind: str
    """`free`, `ticket`, `member`, `host` or `preview`."""
    preview_ends_at: float | None = None
    """For previews: when access ends (epoch seconds)."""


class EntitlementCheck:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def check(self, room: Room, identity: Identity, *, now: float) -> AccessDecision:
        """The caller's access to ``room``, or ``NotEntitled`` (403)."""
        if identity.controls(room.id, room.owner):
            return AccessDecision("host")
        if not room.access.paid:
            return AccessDecision("free")
        # Tickets, memberships and previews arrive with the paid-rooms work; until then a paid
        # room admits only its hosts.
        raise NotEntitled("this room is paid and you have no ticket or membership")
