"""A client flooding the gateway is limited, per connection and per user, and costs the room
nothing: the honest viewers keep getting every event."""

from __future__ import annotations

import asyncio
import json
import time

from redis.asyncio import Redis
from websockets.asyncio.client import connect

from engine import keys
from engine.codec import decode_events, unpack_stored
from engine.ids import RoomId
from tests.gateway.admission_helpers import Witness
from tests.support import Api, Proc, token, unique


async def _flood(ws, user: str, rate: int, seconds: float) -> int:
    """Send danmaku at ``rate`` messages/s for ``seconds``; return how many were sent."""
    sent = 0
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            await ws.send(
                json.dumps({"op": "danmaku", "text": f"{user} {sent}", "ref": f"f{sent}"})
            )
            sent += 1
        await asyncio.sleep(0.005)
    return sent


async def _drain(ws, into: list[dict]) -> None:
    try:
        async for message in ws:
            into.extend(decode_events(message))
    except Exception:
        pass


async def test_a_10k_messages_a_second_flood_is_limited(
    api: Api, gateways: list[Proc], redis: Redis
) -> None:
    room = unique()
    await api.create_room(room)
    gw = gateways[0]
    flooder = f"flooder-{unique('u')}"
    conns = [
        await connect(
            f"{gw.ws_url}/ws/rooms/{room}",
            additional_headers={"Authorization": f"Bearer {token(flooder)}"},
            compression=None,
            max_queue=None,
        )
        for _ in range(5)  # every connection the user may have: they share one danmaku limit
    ]
    replies: list[list[dict]] = [[] for _ in conns]
    readers = [asyncio.ensure_future(_drain(ws, r)) for ws, r in zip(conns, replies, strict=True)]
    seconds = 3.0
    async with Witness(gw.ws_url, room) as w:  # on the flooded gateway itself
        for _ in range(8):  # the room before the flood
            await w.say()
            await asyncio.sleep(0.1)
        calm = len(w.said)
        t0 = time.monotonic()
        flood = asyncio.gather(*(_flood(ws, flooder, 2_000, seconds) for ws in conns))
        while not flood.done():
            await w.say()  # honest danmaku all through the flood
            await asyncio.sleep(0.25)
        sent = sum(await flood)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.5)
        # the flooder's connections are still open: a flood is limited, not a reason to close
        for ws in conns:
            await ws.send(json.dumps({"op": "ping", "ref": "still-here"}))
        await asyncio.sleep(0.5)
    for ws in conns:
        await ws.close()
    for r in readers:
        await r
    lat = {i: w.latencies.get(i) for i in w.said}
    before = sorted(v for i, v in lat.items() if v is not None and w.said.index(i) < calm)
    during = sorted(v for i, v in lat.items() if v is not None and w.said.index(i) >= calm)
    print(
        f"flood: {sent} messages in {elapsed:.1f}s ({sent / elapsed:.0f}/s); honest delivery "
        f"median {before[len(before) // 2] * 1000:.0f} ms before, "
        f"{during[len(during) // 2] * 1000:.0f} ms during (max {during[-1] * 1000:.0f} ms)"
    )
    assert sent >= 0.8 * 10_000 * seconds
    stored = [unpack_stored(f[b"e"]) for _, f in await redis.xrange(keys.events(RoomId(room)))]
    accepted = [e for e in stored if e["user"]["id"] == flooder]
    # per user: the default burst (10) plus 2/s, whatever the number of connections
    assert len(accepted) <= 10 + 2 * (elapsed + 1)
    for got in replies:
        assert any(e.get("ref") == "still-here" for e in got)
        errors = [e for e in got if e["type"] == "error"]
        # dropped messages are said at most once a second, never one error per message
        assert len(errors) < 1_000
        assert {e["code"] for e in errors} == {"rate_limited"}
