"""Bans (§3 `POST /api/rooms/{room}/bans`, §4 403 and 4403): a ban ends the user's connections
on every gateway within a second and refuses its joins until lifted or expired; everyone else
in the room notices nothing."""

from __future__ import annotations

import asyncio
import time

from sdk.client import ClientError, LiveroomClient
from tests.gateway.helpers import collect_history
from tests.gateway.test_access import PAID, _closed_with, _put
from tests.support import ADMIN, Api, Proc, token, unique


async def _join(gw: Proc, room: str, tok: str) -> str | tuple[int | None, str]:
    """`welcome.access`, or (HTTP status, error code) of the refusal."""
    c = LiveroomClient(gw.ws_url, room, tok, resume=False)
    try:
        await c.connect()
    except ClientError as exc:
        return exc.status, exc.code
    assert c.welcome is not None
    kind = c.welcome["access"]
    await c.close()
    return kind


async def _ban(api: Api, room: str, body: dict, tok: str = ADMIN) -> dict:
    async with api.client(tok) as c:
        r = await c.post(f"/api/rooms/{room}/bans", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def _notice(api: Api, room: str, host: str, text: str) -> None:
    async with api.client(host) as c:
        assert (await c.post(f"/api/rooms/{room}/notices", json={"text": text})).status_code == 201


async def test_ban_closes_on_every_gateway_within_a_second_and_refuses_joins(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("ban")
    await api.create_room(room)
    host = token(unique("host"), "host", rooms=[room])
    troll = unique("troll")
    conns = [LiveroomClient(gw.ws_url, room, token(troll), resume=False) for gw in gateways]
    honest = [LiveroomClient(gw.ws_url, room, token(unique("fan"))) for gw in gateways]
    await asyncio.gather(*(c.connect() for c in conns + honest))
    await _notice(api, room, host, "before")

    t0 = time.monotonic()
    ban = await _ban(api, room, {"user": troll}, host)
    assert ban == {"room": room, "user": troll, "banned_until": None, "lifted": None}
    closed = await asyncio.gather(*(_closed_with(c, 5) for c in conns))
    took = time.monotonic() - t0
    assert [code for code, _ in closed] == [4403, 4403]
    assert took <= 1.5, f"the ban took {took:.2f} s to close both connections"

    for gw in gateways:
        assert await _join(gw, room, token(troll)) == (403, "banned")
    # The room goes on for everyone else: they chat and get every event, in order.
    await _notice(api, room, host, "after")
    acks = [await c.danmaku(f"still here {i}") for i, c in enumerate(honest)]
    for c in honest:
        got = await collect_history(c, 4, timeout=10)
        assert [e.get("text") for e in got] == ["before", "after", "still here 0", "still here 1"]
        assert [e["id"] for e in got[2:]] == [a["id"] for a in acks]
    await asyncio.gather(*(c.close() for c in honest))

    async with api.client(host) as c:
        r = await c.delete(f"/api/rooms/{room}/bans/{troll}")
        assert r.status_code == 200 and r.json()["lifted"] is True
        r = await c.delete(f"/api/rooms/{room}/bans/{troll}")  # idempotent
        assert r.status_code == 200 and r.json()["lifted"] is False
    for gw in gateways:
        assert await _join(gw, room, token(troll)) == "free"


async def test_timed_ban_expires_by_itself(api: Api, gateways: list[Proc]) -> None:
    room = unique("tban")
    await api.create_room(room)
    user = unique("brief")
    ban = await _ban(api, room, {"user": user, "seconds": 1})
    assert ban["banned_until"] is not None and ban["banned_until"] <= time.time() + 1.5
    assert await _join(gateways[0], room, token(user)) == (403, "banned")
    deadline = time.monotonic() + 5
    while (got := await _join(gateways[1], room, token(user))) != "free":
        assert got == (403, "banned")
        assert time.monotonic() < deadline, "a 1 s ban still held after 5 s"
        await asyncio.sleep(0.2)


async def test_ban_in_paid_room_beats_a_ticket_but_never_shuts_out_hosts(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("pban")
    owner = unique("owner")
    await api.create_room(room, access=PAID, tok=token(owner, "host"))
    buyer, cohost = unique("buyer"), unique("cohost")
    await _put(api, f"/api/rooms/{room}/tickets/{buyer}")
    fan = LiveroomClient(gateways[1].ws_url, room, token(buyer), resume=False)
    co = LiveroomClient(gateways[0].ws_url, room, token(cohost, "host", rooms=[room]))
    await asyncio.gather(fan.connect(), co.connect())

    await _ban(api, room, {"user": buyer, "seconds": 600})
    await _ban(api, room, {"user": cohost})  # recorded, but a host of the room keeps access
    code, took = await _closed_with(fan, 5)
    assert code == 4403 and took <= 1.5
    assert await _join(gateways[0], room, token(buyer)) == (403, "banned")
    assert (await co.request({"op": "ping"}))["type"] == "ack"
    assert await _join(gateways[1], room, token(cohost, "host", rooms=[room])) == "host"
    async with api.client() as c:
        r = await c.post(f"/api/rooms/{room}/bans", json={"user": owner})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert await _join(gateways[1], room, token(owner, "host")) == "host"
    await co.close()


async def test_only_the_rooms_hosts_and_admins_ban_and_bodies_are_bounded(api: Api) -> None:
    room = unique("bperm")
    await api.create_room(room)
    for tok in (token("v"), token("elsewhere", "host", rooms=["another-room"])):
        async with api.client(tok) as c:
            r = await c.post(f"/api/rooms/{room}/bans", json={"user": "x"})
            assert r.status_code == 403 and r.json()["error"] == "forbidden"
            assert (await c.delete(f"/api/rooms/{room}/bans/x")).status_code == 403
    async with api.client() as c:
        for body in (
            {"user": "x", "seconds": 0},
            {"user": "x", "seconds": 30 * 86400 + 1},
            {"user": "x", "seconds": True},
            {"user": "x", "seconds": "60"},
            {"user": "no spaces"},
            {},
        ):
            r = await c.post(f"/api/rooms/{room}/bans", json=body)
            assert r.status_code == 422 and r.json()["error"] == "invalid", body
        r = await c.post(f"/api/rooms/{unique('nosuch')}/bans", json={"user": "x"})
        assert r.status_code == 404
        spec = (await c.get("/openapi.json")).json()
    seconds = spec["components"]["schemas"]["BanIn"]["properties"]["seconds"]["anyOf"][0]
    assert (seconds["minimum"], seconds["maximum"]) == (1, 30 * 86400)
