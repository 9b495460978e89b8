"""Shared steps of the gateway tests: collect events, connect many clients."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import ClientConnection, connect

from engine.codec import Event, decode_events
from engine.ids import stream_id_key
from sdk.client import LiveroomClient


async def raw_ws(
    ws_url: str, room: str, tok: str, sub: str = "liveroom.v1.json"
) -> ClientConnection:
    """A plain websockets client in ``room``, its `welcome` read: for what the SDK never sends."""
    ws = await connect(
        f"{ws_url}/ws/rooms/{room}",
        subprotocols=[sub],
        additional_headers={"Authorization": f"Bearer {tok}"},
        compression=None,
    )
    assert decode_events(await ws.recv())[0]["type"] == "welcome"
    return ws


async def collect_history(c: LiveroomClient, n: int, timeout: float = 20.0) -> list[Event]:
    """The next ``n`` history events (those with an id) the client receives."""
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        ev = await c.next_event(max(0.01, deadline - time.monotonic()))
        if "id" in ev and ev["type"] not in ("ack", "error"):
            out.append(ev)
    return out


async def latest_state(c: LiveroomClient, kind: str, want: int, timeout: float) -> float:
    """Wait until the latest ``kind`` state event carries ``want``; return seconds waited."""
    field = {"likes": "total", "online": "count"}[kind]
    t0 = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            raise TimeoutError(f"{kind} never reached {want}")
        ev = await c.next_event(left)
        if ev["type"] == kind and ev[field] == want:
            return time.monotonic() - t0


def ids_in_order(events: list[Event]) -> bool:
    keys = [stream_id_key(e["id"]) for e in events]
    return keys == sorted(keys) and len(set(keys)) == len(keys)


async def connect_all(clients: list[LiveroomClient]) -> None:
    await asyncio.gather(*(c.connect() for c in clients))


async def close_all(clients: list[LiveroomClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


class Talkers:
    """Several talking clients, used in turn so that no one trips the per-connection rate limit."""

    def __init__(
        self, urls: list[str] | str, room: str, n: int = 8, prefix: str = "talker"
    ) -> None:
        from tests.support import token

        self.clients = [
            LiveroomClient(urls, room, token(f"{prefix}{i}"), resume=False) for i in range(n)
        ]
        self._next = 0

    async def __aenter__(self) -> Talkers:
        await connect_all(self.clients)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await close_all(self.clients)

    async def say(self, text: str) -> str:
        """Send one danmaku; return its id. Paced to stay inside the default rate limit."""
        c = self.clients[self._next % len(self.clients)]
        self._next += 1
        if self._next % len(self.clients) == 0 and self._next >= 8 * len(self.clients):
            await asyncio.sleep(0.5)
        return (await c.danmaku(text))["id"]
