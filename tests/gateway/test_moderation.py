"""Notices, mutes, blocked words and room stats (§3, §4)."""

from __future__ import annotations

import asyncio

import pytest

from sdk.client import ClientError, LiveroomClient
from tests.gateway.helpers import collect_history
from tests.gateway.test_sales import create_sale
from tests.support import Api, Proc, token, unique


async def test_notice_reaches_viewers_as_history(api: Api, gateways: list[Proc]) -> None:
    room = unique()
    await api.create_room(room)
    async with LiveroomClient(gateways[1].ws_url, room, token("w")) as w:
        async with api.client(token("h", "host", rooms=[room])) as c:
            r = await c.post(f"/api/rooms/{room}/notices", json={"text": "Sale at 8pm!"})
            assert r.status_code == 201
            assert (
                await c.post(f"/api/rooms/{room}/notices", json={"text": ""})
            ).status_code == 422
        [ev] = await collect_history(w, 1)
        assert (
            ev["type"] == "notice" and ev["text"] == "Sale at 8pm!" and ev["id"] == r.json()["id"]
        )
    async with api.client(token("v")) as c:
        r = await c.post(f"/api/rooms/{room}/notices", json={"text": "spam"})
        assert r.status_code == 403


async def test_mute_applies_to_open_connections_and_new_ones(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique()
    await api.create_room(room)
    async with LiveroomClient(gateways[0].ws_url, room, token("loud")) as c:
        await c.danmaku("before")
        async with api.client(token("h", "host", rooms=[room])) as h:
            r = await h.post(f"/api/rooms/{room}/mutes", json={"user": "loud", "seconds": 60})
            assert r.status_code == 200 and r.json()["muted_until"] > 0
        await asyncio.sleep(0.3)
        with pytest.raises(ClientError) as info:
            await c.danmaku("after")
        assert info.value.code == "muted"
    async with LiveroomClient(gateways[1].ws_url, room, token("loud")) as c:
        with pytest.raises(ClientError) as info:
            await c.danmaku("new connection")
        assert info.value.code == "muted"
        async with api.client(token("h", "host", rooms=[room])) as h:
            await h.post(f"/api/rooms/{room}/mutes", json={"user": "loud", "seconds": 0})
        await asyncio.sleep(0.3)
        assert (await c.danmaku("free again"))["type"] == "ack"


async def test_blocked_words(api: Api, spawn) -> None:
    gw = spawn(env={"LIVEROOM_BLOCKED_WORDS": "spamword, scam"})
    room = unique()
    await api.create_room(room)
    async with LiveroomClient(gw.ws_url, room, token("u")) as c:
        with pytest.raises(ClientError) as info:
            await c.danmaku("this is a SCAM link")
        assert info.value.code == "blocked"
        assert (await c.danmaku("this is fine"))["type"] == "ack"


async def test_stats_count_viewers_danmaku_likes_and_sales(api: Api, gateways: list[Proc]) -> None:
    room = unique("stats")
    await api.create_room(room)
    sale = (await create_sale(api, room, stock=10, per_user_limit=5, price_cents=500))["id"]
    clients = [LiveroomClient(gateways[i % 2].ws_url, room, token(f"s{i}")) for i in range(4)]
    await asyncio.gather(*(c.connect() for c in clients))
    await clients[0].danmaku("one")
    await clients[1].danmaku("two")
    await clients[2].like(30)
    await clients[3].buy(sale, 2, ref="x")
    await asyncio.sleep(0.8)  # one counter interval and more
    async with api.client(token("h", "host", rooms=[room])) as h:
        s = (await h.get(f"/api/rooms/{room}/stats")).json()
    assert s["online"] == 4 and s["peak_online"] >= 4 and s["unique_viewers"] == 4
    assert s["danmaku"] == 2 and s["likes"] == 30 and s["media_viewers"] == 0
    assert s["sales"] == [
        {"sale": sale, "status": "open", "sold": 2, "revenue_cents": 1000, "buyers": 1}
    ]
    await asyncio.gather(*(c.close() for c in clients))
    async with api.client(token("v")) as c:
        assert (await c.get(f"/api/rooms/{room}/stats")).status_code == 403
