"""The engine on a 3-master Redis Cluster (PROTOCOL.md §0): every scenario in a room on each
shard, across two gateways and an API process that all reach the cluster through one node."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import pytest
from redis.asyncio import RedisCluster

from engine import keys
from engine.ids import RoomId
from engine.lottery import verify
from sdk.client import ClientError, ConnectionClosedByServer, LiveroomClient
from tests.cluster.conftest import shard_of
from tests.gateway.helpers import Talkers, close_all, collect_history, connect_all
from tests.support import Api, Proc, token

SHARDS = [0, 1, 2]
PAID = {"mode": "paid", "price_cents": 990, "tiers": ["vip"], "preview_seconds": 0}
_refs = itertools.count()


@pytest.fixture(params=SHARDS, ids=lambda i: f"shard{i}")
async def room(
    request: pytest.FixtureRequest, rooms_by_shard: list[str], cluster_redis: RedisCluster
) -> str:
    rid = rooms_by_shard[request.param]
    nodes = sorted(n.name for n in cluster_redis.get_primaries())
    assert shard_of(cluster_redis, rid) == nodes[request.param]
    return rid


async def _post(api: Api, path: str, body: dict | None = None) -> dict:
    async with api.client() as c:
        r = await c.post(path, json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def _get(api: Api, path: str) -> dict | list:
    async with api.client() as c:
        r = await c.get(path)
    assert r.status_code == 200, r.text
    return r.json()


async def _history_until_quiet(c: LiveroomClient, quiet_s: float) -> list[dict]:
    out: list[dict] = []
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        while True:
            ev = await c.next_event(quiet_s)
            if "id" in ev and ev["type"] not in ("ack", "error"):
                out.append(ev)
    return out


async def test_fanout_and_resume_across_two_gateways(
    room: str, cluster_api: Api, cluster_gateways: list[Proc]
) -> None:
    await cluster_api.create_room(room)
    gw0, gw1 = (g.ws_url for g in cluster_gateways)
    a = LiveroomClient(gw0, room, token("a"), resume=False)
    b = LiveroomClient(gw1, room, token("b"))
    await connect_all([a, b])
    async with Talkers(gw0, room) as talker:
        said = [await talker.say(f"hello {i}") for i in range(3)]
        for viewer in (a, b):
            assert [e["id"] for e in await collect_history(viewer, 3)] == said
        cursor = b.cursor
        await b.drop()
        missed = [await talker.say(f"missed {i}") for i in range(20)]
        back = LiveroomClient(gw0, room, token("b"), since=cursor)  # the OTHER gateway
        await back.connect()
        assert back.welcome is not None and back.welcome["recovered"] is True
        assert [e["id"] for e in await collect_history(back, 20)] == missed
        live = await talker.say("live")
        assert [e["id"] for e in await collect_history(back, 1)] == [live]
        assert await _history_until_quiet(back, 0.5) == []  # no duplicate
        assert len(await collect_history(a, 21)) == 21  # a saw them all, live
        await close_all([a, back])


async def _closed_with(c: LiveroomClient, timeout: float) -> int | None:
    while True:
        try:
            await c.next_event(timeout)
        except ConnectionClosedByServer as exc:
            return exc.code


async def test_a_refund_closes_the_user_on_both_gateways(
    room: str, cluster_api: Api, cluster_gateways: list[Proc]
) -> None:
    await cluster_api.create_room(room, access=PAID)
    user = f"fan-{room}"
    async with cluster_api.client() as http:
        assert (await http.put(f"/api/rooms/{room}/tickets/{user}")).status_code == 200
    conns = [
        LiveroomClient(cluster_gateways[i % 2].ws_url, room, token(user), resume=False)
        for i in range(4)
    ]
    await connect_all(conns)
    assert {c.welcome["access"] for c in conns if c.welcome} == {"ticket"}
    t0 = time.monotonic()
    async with cluster_api.client() as http:
        assert (await http.delete(f"/api/rooms/{room}/tickets/{user}")).status_code == 200
    assert await asyncio.gather(*(_closed_with(c, 5) for c in conns)) == [4403] * 4
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(ClientError) as refused:
        await LiveroomClient(cluster_gateways[1].ws_url, room, token(user)).connect()
    assert refused.value.status == 403


async def test_a_flash_sale_sells_exactly_its_stock(
    room: str, cluster_api: Api, cluster_gateways: list[Proc]
) -> None:
    await cluster_api.create_room(room)
    buyers = [
        LiveroomClient(cluster_gateways[i % 2].ws_url, room, token(f"buyer{i}"), resume=False)
        for i in range(300)
    ]
    await connect_all(buyers)
    sale = await _post(
        cluster_api,
        f"/api/rooms/{room}/sales",
        {
            "item": "tea",
            "title": "Tea",
            "price_cents": 500,
            "stock": 100,
            "per_user_limit": 1,
            "duration_s": 600,
        },
    )

    async def attempt(c: LiveroomClient) -> str:
        try:
            await c.buy(sale["id"], 1, ref=f"r{next(_refs)}")
            return "ok"
        except ClientError as exc:
            return exc.code

    try:
        outcomes = await asyncio.gather(*(attempt(c) for c in buyers))
    finally:
        await close_all(buyers)
    assert outcomes.count("ok") == 100
    assert set(outcomes) == {"ok", "sold_out"}
    orders = await _get(cluster_api, f"/api/rooms/{room}/sales/{sale['id']}/orders")
    assert len(orders) == 100 and len({o["user"] for o in orders}) == 100
    record = await _get(cluster_api, f"/api/rooms/{room}/sales/{sale['id']}")
    assert (record["sold"], record["left"]) == (100, 0)


async def test_a_lottery_draws_itself_once(
    room: str, cluster_api: Api, cluster_gateways: list[Proc]
) -> None:
    await cluster_api.create_room(room)
    async with (
        LiveroomClient(cluster_gateways[1].ws_url, room, token("watch")) as watcher,
        LiveroomClient(cluster_gateways[0].ws_url, room, token("fan")) as fan,
    ):
        lottery = await _post(
            cluster_api,
            f"/api/rooms/{room}/lotteries",
            {"prize": "Tea", "winners": 1, "rule": {}, "duration_s": 1},
        )
        while (await fan.next_event(10))["type"] != "lottery.started":
            pass
        await fan.enter(lottery["id"])
        history = await collect_history(watcher, 2, timeout=15)
        assert [e["type"] for e in history] == ["lottery.started", "lottery.drawn"]
        assert history[1]["winners"] == ["fan"]
        assert await _history_until_quiet(watcher, 1.5) == []  # three schedulers, one draw
    record = await _get(cluster_api, f"/api/rooms/{room}/lotteries/{lottery['id']}")
    assert record["status"] == "drawn" and verify(record).ok


async def test_timers_open_and_end_a_sale_once(
    room: str, cluster_api: Api, cluster_gateways: list[Proc], cluster_redis: RedisCluster
) -> None:
    await cluster_api.create_room(room)
    viewers = [
        LiveroomClient(g.ws_url, room, token(f"v{i}"), resume=False)
        for i, g in enumerate(cluster_gateways)
    ]
    await connect_all(viewers)
    try:
        sale = await _post(
            cluster_api,
            f"/api/rooms/{room}/sales",
            {
                "item": "tea",
                "title": "Tea",
                "price_cents": 500,
                "stock": 5,
                "per_user_limit": 1,
                "starts_in_s": 1,
                "duration_s": 1,
            },
        )
        for v in viewers:
            seen = await collect_history(v, 2, timeout=10)
            assert [(e["type"], e["sale"]) for e in seen] == [
                ("sale.started", sale["id"]),
                ("sale.ended", sale["id"]),
            ]
        for v in viewers:  # three schedulers (the API and two gateways) ran the same timers
            assert await _history_until_quiet(v, 1.0) == []
    finally:
        await close_all(viewers)
    assert await cluster_redis.xlen(keys.events(RoomId(room))) == 2  # once each, in history
    assert (await _get(cluster_api, f"/api/rooms/{room}/sales/{sale['id']}"))["status"] == "ended"
    assert await cluster_redis.zscore(keys.timers(), f"sale.end|{room}|{sale['id']}") is None
