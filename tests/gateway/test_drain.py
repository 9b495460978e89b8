"""SIGTERM drains: every client is closed with 1001, the process exits within 10 s, and every
acknowledged danmaku is in history."""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId
from sdk.client import ClientError, ConnectionClosedByServer, LiveroomClient
from tests.gateway.helpers import connect_all
from tests.support import Api, token, unique


async def test_sigterm_closes_1001_exits_fast_and_loses_no_history(
    api: Api, spawn, redis: Redis
) -> None:
    gw = spawn()
    room = unique()
    await api.create_room(room)
    clients = [LiveroomClient(gw.ws_url, room, token(f"d{i}"), resume=False) for i in range(20)]
    await connect_all(clients)
    acked: list[str] = []

    async def chatter(c: LiveroomClient, i: int) -> None:
        with contextlib.suppress(
            ClientError, ConnectionClosedByServer, TimeoutError, asyncio.TimeoutError, Exception
        ):
            for k in range(1000):
                acked.append((await c.danmaku(f"{i}:{k}"))["id"])
                await asyncio.sleep(0.5)

    tasks = [asyncio.ensure_future(chatter(c, i)) for i, c in enumerate(clients)]
    await asyncio.sleep(1.2)
    took = await asyncio.to_thread(gw.terminate, 15.0)
    assert took < 10.0
    assert gw.proc.returncode == 0

    async def close_code(c: LiveroomClient) -> int | None:
        while True:
            try:
                await c.next_event(10)
            except ConnectionClosedByServer as exc:
                return exc.code

    codes = await asyncio.gather(*(close_code(c) for c in clients))
    assert codes == [1001] * len(clients)
    await asyncio.gather(*tasks)
    assert len(acked) >= 20
    stored = {e[0].decode() for e in await redis.xrange(keys.events(RoomId(room)))}
    assert set(acked) <= stored
