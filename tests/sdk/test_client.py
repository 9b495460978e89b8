"""The shipped Python client (sdk/client.py) as a user's bot runs it."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId
from sdk.client import LiveroomClient
from tests.gateway.helpers import Talkers, collect_history
from tests.support import Api, Proc, token, unique


async def test_drops_right_after_an_ack_lose_no_event(
    api: Api, gateways: list[Proc], redis: Redis
) -> None:
    """An ack arrives before the tick that delivers its event: a client that took the ack's
    `id` as its cursor and dropped right then resumed past events it never received."""
    room = unique()
    await api.create_room(room)
    urls = [g.ws_url for g in gateways]
    async with Talkers(urls, room, n=2) as talker:
        me = LiveroomClient(urls, room, token("dropper"))
        await me.connect()
        try:
            for i in range(5):
                await talker.say(f"other {i}")
                await me.danmaku(f"mine {i}")
                me.interrupt()  # the network drops before the tick delivers "mine i"
                await talker.say(f"while away {i}")
                await talker.say(f"after {i}")
            got = await collect_history(me, 20)
        finally:
            await me.close()
    stream = await redis.xrange(keys.events(RoomId(room)))
    assert [e["id"] for e in got] == [raw_id.decode() for raw_id, _ in stream]
    assert len(me.welcomes) >= 2 and all(w["recovered"] for w in me.welcomes[1:])


async def test_cursor_moves_only_on_history_events(api: Api, gateways: list[Proc]) -> None:
    room = unique()
    await api.create_room(room)
    async with LiveroomClient(gateways[0].ws_url, room, token("c1")) as c:
        start = c.last_id
        ack = await c.danmaku("hello")
        assert ack["id"] != start
        # the ack alone never moves the cursor; the event's delivery does
        [event] = await collect_history(c, 1)
        assert event["id"] == ack["id"] and c.last_id == ack["id"]
        await c.like(3)
        await asyncio.sleep(0.3)
        assert c.last_id == ack["id"]
