"""One keepalive loop for every connection: a viewer that answers pings stays, one that has
gone silent (no pong) is closed 1011 within interval + timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

from websockets.asyncio.client import connect

from loadtest.wire import check_upgrade, upgrade_request
from tests.support import Api, Proc, token, unique


async def test_silent_viewers_are_closed_and_answering_ones_stay(
    api: Api, redis_url: str, tmp_root: Path
) -> None:
    gw = Proc(
        redis_url,
        "gateway",
        tmp_root,
        env={"LIVEROOM_PING_INTERVAL_S": "0.5", "LIVEROOM_PING_TIMEOUT_S": "0.5"},
    )
    try:
        room = unique("pings")
        await api.create_room(room)
        url = f"{gw.ws_url}/ws/rooms/{room}?token={token(unique('alive'))}"
        async with connect(url, ping_interval=None) as alive:  # websockets answers pings
            await alive.recv()  # welcome
            # A raw socket that upgrades, then reads but never answers a ping.
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.ws_port)
            request, accept = upgrade_request(
                "127.0.0.1",
                gw.ws_port,
                f"/ws/rooms/{room}",
                token(unique("silent")),
                "liveroom.v1.json",
            )
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert check_upgrade(head[:-4], accept) is None
            got = b""
            async with asyncio.timeout(5):
                while b"ping timeout" not in got and (chunk := await reader.read(65536)):
                    got += chunk
            # The close frame carries 1011 and its reason.
            assert b"\x03\xf3keepalive ping timeout" in got
            writer.close()
            await asyncio.sleep(1.5)  # several more rounds of pings: the answering one stays
            await alive.send('{"op":"ping","ref":"p"}')
            async with asyncio.timeout(2):
                while '"ack"' not in (msg := await alive.recv()):
                    assert "ping timeout" not in str(msg)
    finally:
        gw.stop()
