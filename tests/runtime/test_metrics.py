"""`/metrics` after a scripted show equals what the show did; JSON logs parse line by line."""

from __future__ import annotations

import asyncio
import json

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId
from sdk.client import ClientError, ConnectionClosedByServer, LiveroomClient
from tests.gateway.helpers import close_all, connect_all
from tests.support import Api, token, unique

JSON_LOGS = {"LIVEROOM_LOG_FORMAT": "json", "LIVEROOM_LOG_LEVEL": "INFO"}


async def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``base``/metrics, by (name, labels), parsed by Prometheus's parser."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _post(api: Api, path: str, body: dict) -> dict:
    async with api.client() as http:
        r = await http.post(path, json=body)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def _outcome(coro: object) -> str:
    try:
        await coro  # type: ignore[misc]
        return "ok"
    except ClientError as exc:
        return exc.code


async def test_metrics_count_what_a_show_did_and_logs_are_json(
    api: Api, spawn, redis: Redis
) -> None:
    gw = spawn(env=JSON_LOGS)
    room = unique("show")
    await api.create_room(room)
    viewers = [LiveroomClient(gw.ws_url, room, token(f"m{i}"), resume=False) for i in range(4)]
    host = LiveroomClient(gw.ws_url, room, token("mhost", "host", rooms=[room]), resume=False)
    await connect_all([*viewers, host])
    before = await scrape(gw.ws_url.replace("ws://", "http://"))
    assert value(before, "liveroom_gateway_connections", room=room, access="free") == 4
    assert value(before, "liveroom_gateway_connections", room=room, access="host") == 1

    # The show: 3 danmaku, 1 too long, a like, a ping; a sale of 2 for 3 buyers; a ban.
    for i in range(3):
        assert await _outcome(viewers[i].danmaku(f"hi {i}")) == "ok"
    assert await _outcome(viewers[3].danmaku("x" * 500)) == "too_long"
    await viewers[0].like(5)
    await viewers[1].request({"op": "ping"})
    sale = await _post(
        api,
        f"/api/rooms/{room}/sales",
        {
            "item": "tea",
            "title": "Tea",
            "price_cents": 100,
            "stock": 2,
            "per_user_limit": 1,
            "duration_s": 60,
        },
    )
    bought = await asyncio.gather(
        *(_outcome(v.buy(sale["id"], 1, ref=f"b{i}")) for i, v in enumerate(viewers[:3]))
    )
    assert sorted(bought) == ["ok", "ok", "sold_out"]
    await _post(api, f"/api/rooms/{room}/bans", {"user": "m3"})
    try:
        while True:
            await viewers[3].next_event(5)
    except ConnectionClosedByServer as exc:
        assert exc.code == 4403
    await asyncio.sleep(0.2)

    after = await scrape(gw.ws_url.replace("ws://", "http://"))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("liveroom_gateway_ops_total", op="danmaku", outcome="ok") == 3
    assert delta("liveroom_gateway_ops_total", op="danmaku", outcome="too_long") == 1
    assert delta("liveroom_gateway_ops_total", op="like", outcome="ok") == 1
    assert delta("liveroom_gateway_ops_total", op="ping", outcome="ok") == 1
    assert delta("liveroom_gateway_ops_total", op="buy", outcome="ok") == 2
    assert delta("liveroom_gateway_ops_total", op="buy", outcome="sold_out") == 1
    assert delta("liveroom_sale_attempts_total", outcome="ok") == 2
    assert delta("liveroom_sale_attempts_total", outcome="sold_out") == 1
    assert delta("liveroom_gateway_closes_total", code="4403") == 1
    assert value(after, "liveroom_gateway_connections", room=room, access="free") == 3
    # the room's history (3 danmaku, the sale's events): the reader took each once from Redis
    history = await redis.xlen(keys.events(RoomId(room)))
    assert history >= 5 and delta("liveroom_gateway_events_in_total") == history
    # ... and delivered them to the 5 connections
    assert delta("liveroom_gateway_events_delivered_total") >= 4 * 5
    assert delta("liveroom_gateway_frames_written_total") > 0
    assert delta("liveroom_gateway_bytes_written_total") > delta(
        "liveroom_gateway_frames_written_total"
    )
    assert delta("liveroom_gateway_tick_seconds_count") > 0
    assert delta("liveroom_redis_trip_seconds_count") >= 5  # 3 danmaku, 2 buys at least
    assert value(after, "liveroom_process", role="gateway", pid=str(gw.proc.pid)) == 1

    # A lottery the host draws through the API: that process counts the draw, once.
    lottery = await _post(
        api,
        f"/api/rooms/{room}/lotteries",
        {"prize": "Tea", "winners": 1, "rule": {}, "duration_s": 600},
    )
    draws = value(await scrape(api.base_url), "liveroom_lottery_draws_total")
    await _post(api, f"/api/rooms/{room}/lotteries/{lottery['id']}/draw", {})
    assert value(await scrape(api.base_url), "liveroom_lottery_draws_total") == draws + 1
    await close_all([*viewers[:3], host])

    gw.stop()
    lines = gw.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert records and all(r["role"] == "gateway" and r["pid"] == gw.proc.pid for r in records)
    closed = [r for r in records if r.get("code") == 4403]
    assert len(closed) == 1 and closed[0]["user"] == "m3" and closed[0]["room"] == room
    assert closed[0]["conn"].startswith(closed[0]["conn"].split(":")[0] + ":")
