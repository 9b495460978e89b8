"""Role checks on every host/admin endpoint, and their place in /openapi.json."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.test_bad_input import BAD_TOKENS
from tests.support import Api, token, unique

# (method, path template, body, who may call it)
ENDPOINTS = [
    ("POST", "/api/rooms/{room}/live", None, "host"),
    ("POST", "/api/rooms/{room}/end", None, "host"),
    ("PUT", "/api/rooms/{room}/tickets/someone", {}, "admin"),
    ("DELETE", "/api/rooms/{room}/tickets/someone", None, "admin"),
    ("PUT", "/api/members/someone", {"tier": "vip", "expires_at": None}, "admin"),
    ("DELETE", "/api/members/someone", None, "admin"),
]


@pytest.fixture
async def room(api: Api) -> str:
    rid = unique("authz")
    await api.create_room(rid, tok=token("owner-host", "host"))
    return rid


async def _call(api: Api, tok: str | None, method: str, path: str, body: dict | None):
    async with api.client(tok) as c:
        return await c.request(method, path, json=body)


@pytest.mark.parametrize(("method", "path", "body", "who"), ENDPOINTS)
async def test_viewers_and_other_hosts_are_refused(
    api: Api, room: str, method: str, path: str, body: dict | None, who: str
) -> None:
    url = path.format(room=room)
    callers = [token("just-a-viewer"), token("host-b", "host", rooms=["another-room"])]
    if who == "admin":  # hosts, even of this room, do not manage entitlements
        callers.append(token("h", "host", rooms=[room]))
    for tok in callers:
        r = await _call(api, tok, method, url, body)
        assert r.status_code == 403, (url, r.text)
        assert r.json()["error"] == "forbidden" and r.json()["message"]
    for make in BAD_TOKENS.values():
        r = await _call(api, make(), method, url, body)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_owner_and_room_hosts_may_drive_their_room(api: Api, room: str) -> None:
    for tok in (token("owner-host", "host"), token("cohost", "host", rooms=[room])):
        r = await _call(api, tok, "POST", f"/api/rooms/{room}/live", None)
        assert r.status_code == 200, r.text


async def test_ticket_and_membership_endpoints_are_idempotent(api: Api, room: str) -> None:
    for _ in range(2):
        r = await _call(api, token("a", "admin"), "PUT", f"/api/rooms/{room}/tickets/u1", {})
        assert r.status_code == 200 and r.json()["user"] == "u1"
    first = await _call(api, token("a", "admin"), "DELETE", f"/api/rooms/{room}/tickets/u1", None)
    second = await _call(api, token("a", "admin"), "DELETE", f"/api/rooms/{room}/tickets/u1", None)
    assert first.json()["revoked"] is True and second.json()["revoked"] is False
    bad = await _call(api, token("a", "admin"), "PUT", "/api/members/u1", {"tier": "gold"})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid"
    missing = await _call(api, token("a", "admin"), "PUT", "/api/rooms/nope-x/tickets/u1", {})
    assert missing.status_code == 404


async def test_access_endpoints_are_in_openapi_with_schemas(api: Api) -> None:
    async with api.client(None) as c:
        spec = (await c.get("/openapi.json")).json()
    paths = spec["paths"]
    ticket = paths["/api/rooms/{room}/tickets/{user}"]
    member = paths["/api/members/{user}"]
    assert {"put", "delete"} <= ticket.keys() and {"put", "delete", "get"} <= member.keys()
    assert "requestBody" in ticket["put"] and "requestBody" in member["put"]
    for op in (ticket["put"], ticket["delete"], member["put"], member["delete"]):
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in ok
        assert "403" in op["responses"] and "401" in op["responses"]
    schemas = spec["components"]["schemas"]
    assert {"TicketIn", "TicketOut", "MembershipIn", "MembershipOut", "ErrorOut"} <= schemas.keys()


async def test_a_caller_learns_its_own_access_as_a_join_would_decide_it(api: Api) -> None:
    """`GET /api/rooms/{room}/access`: what a page asks when its WebSocket would not open."""
    free, paid = unique("mine"), unique("mine")
    await api.create_room(free)
    await api.create_room(
        paid, access={"mode": "paid", "price_cents": 100, "tiers": ["vip"], "preview_seconds": 1}
    )
    async with api.client() as admin:
        await admin.put("/api/members/vipper", json={"tier": "vip", "expires_at": None})
        await admin.post(f"/api/rooms/{paid}/bans", json={"user": "bad"})

    async def mine(room: str, user: str, role: str = "viewer"):
        async with api.client(token(user, role, rooms=[room])) as c:
            return await c.get(f"/api/rooms/{room}/access")

    r = await mine(free, "anyone")
    assert r.status_code == 200 and r.json()["access"] == "free"
    r = await mine(paid, "vipper")
    assert r.json()["access"] == "member" and r.json()["tier"] == "vip"
    assert (await mine(paid, "h", "host")).json()["access"] == "host"
    r = await mine(paid, "newcomer")
    assert r.json()["access"] == "preview" and r.json()["preview_ends_at"] is not None
    await asyncio.sleep(1.2)
    r = await mine(paid, "newcomer")  # the preview is over: the 403 a join would get
    assert r.status_code == 403 and r.json()["error"] == "not_entitled"
    r = await mine(paid, "bad")
    assert r.status_code == 403 and r.json()["error"] == "banned"
    async with api.client(None) as c:
        assert (await c.get(f"/api/rooms/{free}/access")).status_code == 401
