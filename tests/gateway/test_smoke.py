from __future__ import annotations

from sdk.client import LiveroomClient
from tests.support import Api, Proc, token, unique


async def test_welcome_then_danmaku_round_trip(api: Api, gateways: list[Proc]) -> None:
    room = unique()
    await api.create_room(room)
    async with LiveroomClient(gateways[0].ws_url, room, token("alice")) as c:
        assert c.welcome is not None and c.welcome["room"]["id"] == room
        ack = await c.danmaku("hello")
        while True:
            ev = await c.next_event(5)
            if ev["type"] == "danmaku":
                break
        assert ev["id"] == ack["id"] and ev["text"] == "hello"
