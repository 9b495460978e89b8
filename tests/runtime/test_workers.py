"""`liveroom serve --workers 2`: two gateway processes share one port and drain together."""

from __future__ import annotations

import asyncio

import httpx
import psutil

from sdk.client import ConnectionClosedByServer, LiveroomClient
from tests.gateway.helpers import connect_all
from tests.support import Api, token, unique


async def _answering(base: str, tries: int = 60) -> dict[int, dict]:
    """/healthz of whichever worker answers, asked on a new connection each time."""
    seen: dict[int, dict] = {}
    for _ in range(tries):
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            body = (await http.get("/healthz", headers={"Connection": "close"})).json()
        seen[body["pid"]] = body
    return seen


async def test_two_workers_serve_one_port_and_sigterm_drains_both(api: Api, spawn) -> None:
    gw = spawn(args=["--workers", "2"])
    children = psutil.Process(gw.proc.pid).children()
    assert len(children) == 2
    room = unique()
    await api.create_room(room)
    clients = [LiveroomClient(gw.ws_url, room, token(f"w{i}"), resume=False) for i in range(24)]
    await connect_all(clients)

    seen = await _answering(gw.ws_url.replace("ws://", "http://"))
    assert set(seen) == {c.pid for c in children}  # both answer on the one port
    assert all(body["connections"] > 0 for body in seen.values())  # and both hold viewers
    assert sum(body["connections"] for body in seen.values()) == len(clients)
    assert len({body["gateway"] for body in seen.values()}) == 2

    # A danmaku sent through one worker reaches viewers held by the other (through Redis).
    sent = await clients[0].danmaku("across workers")
    for c in clients:
        while (ev := await c.next_event(5))["type"] != "danmaku":
            pass
        assert ev["id"] == sent["id"]

    took = await asyncio.to_thread(gw.terminate, 20.0)
    assert took < 15.0 and gw.proc.returncode == 0

    async def close_code(c: LiveroomClient) -> int | None:
        while True:
            try:
                await c.next_event(10)
            except ConnectionClosedByServer as exc:
                return exc.code

    assert await asyncio.gather(*(close_code(c) for c in clients)) == [1001] * len(clients)
    assert not any(c.is_running() for c in children)
