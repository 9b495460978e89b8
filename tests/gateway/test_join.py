"""A join's reads: the room record cached per gateway (and dropped when it changes), the
entitlement check and the user's slot in one round trip, the room's state shared by the joins
of a burst."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId
from sdk.client import ClientError, LiveroomClient
from tests.support import Api, Proc, token, unique


async def _welcome(gw: Proc, room: str, tok: str) -> dict:
    c = LiveroomClient(gw.ws_url, room, tok, resume=False)
    await c.connect()
    assert c.welcome is not None
    await c.close()
    return c.welcome


async def test_a_room_going_live_shows_in_the_next_welcome_on_every_gateway(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("cache")
    await api.create_room(room)
    for gw in gateways:  # both gateways now hold the record (scheduled)
        assert (await _welcome(gw, room, token(unique("v"))))["room"]["status"] == "scheduled"
    host = token(unique("host"), "host", rooms=[room])
    async with api.client(host) as c:
        r = await c.post(f"/api/rooms/{room}/live")
    assert r.status_code == 200, r.text
    for gw in gateways:
        for _ in range(50):  # the change reaches each gateway through its reader
            got = (await _welcome(gw, room, token(unique("v"))))["room"]["status"]
            if got == "live":
                break
            await asyncio.sleep(0.05)
        assert got == "live"


async def test_a_refused_join_leaves_no_slot_behind(
    api: Api, gateways: list[Proc], redis: Redis
) -> None:
    room = unique("noslot")
    await api.create_room(
        room, access={"mode": "paid", "price_cents": 990, "tiers": [], "preview_seconds": 0}
    )
    user = unique("u")
    c = LiveroomClient(gateways[0].ws_url, room, token(user), resume=False)
    try:
        await c.connect()
        raise AssertionError("a paid room let a viewer without a ticket in")
    except ClientError as exc:
        assert exc.status == 403
    # The slot goes back with the gateway's next write trip, which may land just after the
    # 403 is sent (a moment longer on a cluster): give it that moment, no more.
    key = keys.user_conns(RoomId(room), user)
    for _ in range(50):
        if await redis.zcard(key) == 0:
            break
        await asyncio.sleep(0.02)
    assert await redis.zcard(key) == 0


async def test_a_burst_of_joins_each_gets_the_room_as_it_is(api: Api, gateways: list[Proc]) -> None:
    """50 viewers joining at once share the room's state reads, and each welcome still carries
    the current head: a viewer resuming from it misses nothing published meanwhile."""
    room = unique("burst")
    await api.create_room(room)
    poster = LiveroomClient(gateways[1].ws_url, room, token(unique("p")), resume=False)
    await poster.connect()
    await poster.danmaku("before")
    viewers = [
        LiveroomClient(gateways[0].ws_url, room, token(unique("v")), resume=False)
        for _ in range(50)
    ]

    async def keep_posting() -> None:
        for i in range(8):  # (the user's burst is 10 danmaku)
            await poster.danmaku(f"during {i}")
            await asyncio.sleep(0.01)

    await asyncio.gather(keep_posting(), *(v.connect() for v in viewers))
    await poster.danmaku("after")
    for v in viewers:
        seen: list[str] = []
        while "after" not in seen:
            ev = await v.next_event(5)
            if ev.get("type") == "danmaku":
                seen.append(ev["text"])
        # Everything after the welcome's head arrived, in order, with no gap.
        during = [t for t in seen if t.startswith("during")]
        if during:
            first = int(during[0].split()[1])
            assert during == [f"during {i}" for i in range(first, 8)]
        await v.close()
    await poster.close()
