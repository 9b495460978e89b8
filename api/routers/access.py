"""Access: tickets (a payment callback grants, a refund revokes) and memberships; admins only,
except that a member may read its own membership."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api.deps import Api, Caller, admin_only, valid_user
from api.schemas import MembershipIn, MembershipOut, MyAccessOut, TicketIn, TicketOut, UserPath
from engine.access import Membership
from engine.errors import Forbidden, NotFound
from engine.tokens import Role

router = APIRouter(tags=["access"])


@router.get("/api/rooms/{room}/access", response_model=MyAccessOut)
async def my_access(room: str, who: Caller, api: Api) -> dict[str, Any]:
    """The caller's own access to the room, decided as a join would be: 403 with the
    reason (banned, preview over, paid room) where a join would be refused. A page asks
    this to say in words why its WebSocket could not open (a browser never sees the 403)."""
    record = await api.load(room)
    decision = await api.services.access.check(record, who, now=time.time())
    return {
        "room": record.id,
        "access": decision.kind.value,
        "preview_ends_at": decision.preview_ends_at,
        "tier": decision.tier,
    }


@router.put("/api/rooms/{room}/tickets/{user}", response_model=TicketOut)
async def grant_ticket(
    room: str, user: UserPath, who: Caller, api: Api, body: TicketIn | None = None
) -> dict[str, Any]:
    """Grant a ticket (a payment callback); idempotent. Open preview connections of the
    user in this room become ticket holders at once."""
    admin_only(who)
    record = await api.load(room)
    exp = body.expires_at if body else None
    await api.services.access.grant_ticket(record.id, valid_user(user), exp)
    return {"room": record.id, "user": user, "expires_at": exp}


@router.delete("/api/rooms/{room}/tickets/{user}", response_model=TicketOut)
async def refund_ticket(room: str, user: UserPath, who: Caller, api: Api) -> dict[str, Any]:
    """Refund: revoke the ticket; the user's connections in the room close with 4403
    within a second. Idempotent (`revoked` says whether there was a ticket)."""
    admin_only(who)
    record = await api.load(room)
    revoked = await api.services.access.revoke_ticket(record.id, valid_user(user))
    return {"room": record.id, "user": user, "revoked": revoked}


@router.put("/api/members/{user}", response_model=MembershipOut)
async def set_membership(
    user: UserPath, body: MembershipIn, who: Caller, api: Api
) -> dict[str, Any]:
    """Set a membership; idempotent. Connections that relied on a higher tier re-check."""
    admin_only(who)
    m = Membership.parse(body.model_dump())
    await api.services.access.set_membership(valid_user(user), m)
    return {"user": user, "tier": m.tier, "expires_at": m.expires_at}


@router.get("/api/members/{user}", response_model=MembershipOut)
async def get_membership(user: UserPath, who: Caller, api: Api) -> dict[str, Any]:
    """A user's membership (admins, or the user itself)."""
    if who.role is not Role.ADMIN and who.user != user:
        raise Forbidden("only admins and the member may read a membership")
    m = await api.services.access.get_membership(valid_user(user))
    if m is None or not m.active(time.time()):
        raise NotFound(f"{user!r} has no membership")
    return {"user": user, "tier": m.tier, "expires_at": m.expires_at}


@router.delete("/api/members/{user}", response_model=MembershipOut)
async def revoke_membership(user: UserPath, who: Caller, api: Api) -> dict[str, Any]:
    """Revoke a membership; connections in paid rooms that needed it close with 4403
    within a second. Idempotent."""
    admin_only(who)
    revoked = await api.services.access.revoke_membership(valid_user(user))
    return {"user": user, "revoked": revoked}
