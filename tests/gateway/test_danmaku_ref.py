"""A danmaku `ref` publishes at most once (PROTOCOL.md §4): a resend gets the same ack."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId
from sdk.client import LiveroomClient
from tests.gateway.helpers import collect_history
from tests.support import Api, Proc, token, unique


async def test_resending_a_ref_on_any_gateway_gets_the_same_ack_and_one_event(
    api: Api, gateways: list[Proc], redis: Redis
) -> None:
    room = unique()
    await api.create_room(room)
    watcher = LiveroomClient(gateways[1].ws_url, room, token("watcher"))
    await watcher.connect()
    try:
        async with LiveroomClient(gateways[0].ws_url, room, token("sender")) as a:
            first = await a.danmaku("hello once", ref="m-1")
            again = await a.danmaku("hello once", ref="m-1")
        async with LiveroomClient(gateways[1].ws_url, room, token("sender")) as b:
            elsewhere = await b.danmaku("hello once", ref="m-1")  # after a reconnect
        async with LiveroomClient(gateways[1].ws_url, room, token("other")) as c:
            theirs = await c.danmaku("hello once", ref="m-1")  # refs are per user
        assert first["id"] == again["id"] == elsewhere["id"] != theirs["id"]
        got = await collect_history(watcher, 2)
        assert [e["id"] for e in got] == [first["id"], theirs["id"]]
        stream = await redis.xrange(keys.events(RoomId(room)))
        assert len(stream) == 2
        await asyncio.sleep(0.6)  # the counter report
        async with api.client() as http:
            stats = (await http.get(f"/api/rooms/{room}/stats")).json()
        assert stats["danmaku"] == 2  # a resend is not counted again
    finally:
        await watcher.close()
