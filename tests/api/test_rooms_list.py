"""`GET /api/rooms` (§3): the rooms the caller may control, newest first, with status, paged."""

from __future__ import annotations

from redis.asyncio import Redis

from engine import keys
from tests.support import Api, token, unique


async def _list(api: Api, tok: str, **params: object) -> dict:
    async with api.client(tok) as c:
        r = await c.get("/api/rooms", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_hosts_see_the_rooms_they_control_newest_first(api: Api) -> None:
    me, other = unique("host"), unique("host")
    mine = [unique("own") for _ in range(3)]
    for rid in mine[:2]:
        await api.create_room(rid, tok=token(me, "host"))
    named = unique("named")  # created by an admin, listed in my token
    await api.create_room(named)
    await api.create_room(mine[2], tok=token(me, "host"))
    theirs = unique("theirs")
    await api.create_room(theirs, tok=token(other, "host"))
    async with api.client(token(me, "host")) as c:
        assert (await c.post(f"/api/rooms/{mine[0]}/live")).status_code == 200

    tok = token(me, "host", rooms=[named, unique("no-such-room")])
    got = await _list(api, tok)
    assert [r["id"] for r in got["rooms"]] == [mine[2], named, mine[1], mine[0]]
    assert got["next_offset"] is None
    statuses = {r["id"]: r["status"] for r in got["rooms"]}
    assert statuses[mine[0]] == "live" and statuses[mine[1]] == "scheduled"
    assert all(r["owner"] == me for r in got["rooms"] if r["id"] != named)
    # Without the claim, the named room is not mine to list.
    assert [r["id"] for r in (await _list(api, token(me, "host")))["rooms"]] == mine[::-1]
    assert [r["id"] for r in (await _list(api, token(other, "host")))["rooms"]] == [theirs]

    first = await _list(api, tok, limit=2)
    assert [r["id"] for r in first["rooms"]] == [mine[2], named]
    assert first["next_offset"] == 2
    rest = await _list(api, tok, limit=2, offset=first["next_offset"])
    assert [r["id"] for r in rest["rooms"]] == [mine[1], mine[0]] and rest["next_offset"] is None

    # Admins see every room, the newest first.
    top = await _list(api, token("boss", "admin"), limit=4)
    assert [r["id"] for r in top["rooms"]] == [theirs, mine[2], named, mine[1]]
    assert top["next_offset"] == 4


async def test_rooms_created_before_the_time_index_are_listed(api: Api, redis: Redis) -> None:
    me = unique("host")
    old, new = unique("old"), unique("new")
    await api.create_room(old, tok=token(me, "host"))
    await api.create_room(new, tok=token(me, "host"))
    # As the data of a version that kept only the set of room ids.
    await redis.zrem(keys.rooms_by_time(), old)
    await redis.zrem(keys.rooms_owned(me), old)
    got = await _list(api, token(me, "host"))
    assert [r["id"] for r in got["rooms"]] == [new, old]
    everyone = await _list(api, token("boss", "admin"), limit=200)
    created = [r["created_at"] for r in everyone["rooms"]]
    assert created == sorted(created, reverse=True)
    assert [r["id"] for r in everyone["rooms"][:2]] == [new, old]


async def test_listing_is_for_hosts_and_admins_and_bounded(api: Api) -> None:
    async with api.client(token("v")) as c:
        r = await c.get("/api/rooms")
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    async with api.client(token("boss", "admin")) as c:
        for params in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"offset": -1}):
            r = await c.get("/api/rooms", params=params)
            assert r.status_code == 422 and r.json()["error"] == "invalid", params
        spec = (await c.get("/openapi.json")).json()
    params = {p["name"]: p["schema"] for p in spec["paths"]["/api/rooms"]["get"]["parameters"]}
    assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 200)
    assert params["offset"]["minimum"] == 0
