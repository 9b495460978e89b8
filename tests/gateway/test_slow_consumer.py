"""A client that stops reading is closed with 4408; nobody else misses anything."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from engine.bus import RoomBus
from engine.codec import decode_events
from engine.ids import RoomId
from engine.settings import Settings
from sdk.client import LiveroomClient
from tests.gateway.helpers import close_all, collect_history, connect_all, ids_in_order
from tests.support import SECRET, Api, Proc, token, unique

TEXT = "x" * 190  # ~300 bytes per event once framed as JSON


async def test_stalled_reader_is_closed_4408_and_others_get_everything(
    api: Api, spawn: Callable[..., Proc], redis: Redis, redis_url: str
) -> None:
    room = unique()
    await api.create_room(room)
    # The 4408 close frame queues behind the stalled client's backlog, and the gateway waits
    # `close_timeout_s` for the client's answer before it drops the TCP connection (the client
    # would then see 1006). This client reads again only once the others have 5 MB, which on a
    # loaded box takes longer than the 2 s default: its gateway waits long enough for that.
    gw = spawn(env={"LIVEROOM_CLOSE_TIMEOUT_S": "60"})

    # The stalled client: a small receive buffer and a client that never calls recv().
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.ws_port))
    stalled = await connect(
        f"{gw.ws_url}/ws/rooms/{room}?token={token('sloth')}",
        sock=sock,
        max_queue=1,
        compression=None,
        max_size=None,
    )
    await stalled.recv()  # welcome

    readers = [LiveroomClient(gw.ws_url, room, token(f"r{i}"), resume=False) for i in range(5)]
    await connect_all(readers)

    # 5 MB of history: published exactly as a gateway publishes a danmaku.
    bus = RoomBus(redis, Settings(secret=SECRET, redis_url=redis_url))
    n = 5 * 1024 * 1024 // 300
    sem = asyncio.Semaphore(64)

    async def publish(i: int) -> str:
        async with sem:
            return await bus.publish(RoomId(room), {"type": "danmaku", "text": TEXT, "i": i})

    collecting = [asyncio.ensure_future(collect_history(r, n, 90)) for r in readers]
    ids = await asyncio.gather(*(publish(i) for i in range(n)))
    got = await asyncio.gather(*collecting)
    for events in got:
        assert len(events) == n and ids_in_order(events)
        assert sorted(e["id"] for e in events) == sorted(ids)

    # The stalled client now reads what was queued for it: then the close, 4408.
    received = 0
    try:
        async with asyncio.timeout(30):
            while True:
                received += len(decode_events(await stalled.recv()))
    except ConnectionClosed:
        pass
    assert stalled.close_code == 4408
    assert received < n
    await close_all(readers)
