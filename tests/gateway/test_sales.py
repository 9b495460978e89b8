"""Flash sales over real WebSocket connections: no oversell, idempotent refs, tier prices."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from redis.asyncio import Redis

from engine import keys
from engine.ids import RoomId
from sdk.client import ClientError, LiveroomClient
from tests.gateway.helpers import close_all, collect_history, connect_all
from tests.support import Api, Proc, token, unique

_refs = itertools.count()


async def create_sale(api: Api, room: str, **fields: object) -> dict:
    body = {
        "item": "sku-1",
        "title": "Tea set",
        "price_cents": 1000,
        "stock": 100,
        "per_user_limit": 1,
        "duration_s": 600,
        **fields,
    }
    async with api.client() as c:
        r = await c.post(f"/api/rooms/{room}/sales", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def get_sale(api: Api, room: str, sale: str) -> dict:
    async with api.client() as c:
        r = await c.get(f"/api/rooms/{room}/sales/{sale}")
    assert r.status_code == 200, r.text
    return r.json()


async def get_orders(api: Api, room: str, sale: str) -> list[dict]:
    async with api.client() as c:
        r = await c.get(f"/api/rooms/{room}/sales/{sale}/orders")
    assert r.status_code == 200, r.text
    return r.json()


async def attempt(c: LiveroomClient, sale: str, qty: int = 1, ref: str | None = None) -> dict:
    """The ack or error of one buy, as a dict (errors are answers here, not failures)."""
    try:
        return await c.buy(sale, qty, ref=ref or f"ref{next(_refs)}")
    except ClientError as exc:
        return {"type": "error", "code": exc.code}


async def test_1000_buyers_stock_100_sell_exactly_100(
    api: Api, gateways: list[Proc], redis: Redis
) -> None:
    room = unique("rush")
    await api.create_room(room)
    buyers = [
        LiveroomClient(gateways[i % 2].ws_url, room, token(f"b{i}"), resume=False)
        for i in range(1000)
    ]
    await connect_all(buyers)
    sale = (await create_sale(api, room, stock=100, per_user_limit=1))["id"]
    observations: list[dict] = []
    done = asyncio.Event()

    async def observe() -> None:  # the HTTP view, and the raw counters as often as possible
        while not done.is_set():
            observations.append(await get_sale(api, room, sale))
            for _ in range(20):
                sold, left = await redis.hmget(keys.sale(RoomId(room), sale), "sold", "left")
                observations.append({"sold": int(sold), "left": int(left)})

    watcher = asyncio.ensure_future(observe())
    try:
        # each buyer presses twice with different refs: the limit must hold too
        results = await asyncio.gather(*(attempt(c, sale) for c in buyers for _ in range(2)))
    finally:
        done.set()
        await watcher
        await close_all(buyers)
    wins = [r for r in results if r["type"] == "ack"]
    codes = sorted({r["code"] for r in results if r["type"] == "error"})
    assert len(wins) == 100
    assert codes in (["limit_reached", "sold_out"], ["sold_out"])
    assert sum(r["type"] == "error" and r["code"] == "sold_out" for r in results) >= 900
    final = await get_sale(api, room, sale)
    assert (final["sold"], final["left"], final["status"]) == (100, 0, "ended")
    assert len(observations) >= 20
    for o in [*observations, final]:
        assert o["left"] >= 0 and o["sold"] + o["left"] == 100
    orders = await get_orders(api, room, sale)
    assert len(orders) == 100 and len({o["user"] for o in orders}) == 100
    assert sorted(o["id"] for o in orders) == sorted(w["order"]["id"] for w in wins)


async def test_stock_1_and_2000_racers_one_winner(api: Api, gateways: list[Proc]) -> None:
    room = unique("race")
    await api.create_room(room)
    racers = [
        LiveroomClient(gateways[i % 2].ws_url, room, token(f"r{i}"), resume=False)
        for i in range(2000)
    ]
    for i in range(0, 2000, 500):
        await connect_all(racers[i : i + 500])
    try:
        sale = (await create_sale(api, room, stock=1))["id"]
        results = await asyncio.gather(*(attempt(c, sale) for c in racers))
    finally:
        await close_all(racers)
    assert sum(r["type"] == "ack" for r in results) == 1
    assert len(await get_orders(api, room, sale)) == 1


async def test_same_ref_50_times_across_gateways_and_drops_one_order(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("idem")
    await api.create_room(room)
    sale = (await create_sale(api, room, stock=10, per_user_limit=5))["id"]
    answers: list[dict] = []
    for round_ in range(5):  # 5 connections, alternating gateways; each dropped after use
        c = LiveroomClient(gateways[round_ % 2].ws_url, room, token("eager"), resume=False)
        await c.connect()
        answers += await asyncio.gather(*(c.buy(sale, 2, ref="press-1") for _ in range(10)))
        await c.drop()
    assert len(answers) == 50
    assert all(a == answers[0] for a in answers)
    assert answers[0]["order"]["qty"] == 2
    orders = await get_orders(api, room, sale)
    assert len(orders) == 1 and orders[0]["ref"] == "press-1"
    assert (await get_sale(api, room, sale))["sold"] == 2


async def test_tier_prices(api: Api, gateways: list[Proc]) -> None:
    room = unique("tiers")
    await api.create_room(room)
    vip, senior = unique("vip"), unique("senior")
    async with api.client() as c:
        for user, tier in ((vip, "vip"), (senior, "senior")):
            r = await c.put(f"/api/members/{user}", json={"tier": tier, "expires_at": None})
            assert r.status_code == 200
    sale = (
        await create_sale(
            api, room, price_cents=1000, per_user_limit=5, tier_prices={"senior": 900, "vip": 750}
        )
    )["id"]
    paid = {}
    for user in (vip, senior, "plain-viewer"):
        async with LiveroomClient(gateways[0].ws_url, room, token(user)) as c:
            paid[user] = (await c.buy(sale, 3, ref="r"))["order"]
    assert paid[vip]["unit_price_cents"] == 750
    assert paid[senior]["unit_price_cents"] == 900
    assert paid["plain-viewer"]["unit_price_cents"] == 1000
    for o in paid.values():
        assert o["total_cents"] == 3 * o["unit_price_cents"]
    assert (await get_sale(api, room, sale))["revenue_cents"] == 3 * (750 + 900 + 1000)


async def test_bad_buys_get_clear_codes_and_record_nothing(api: Api, gateways: list[Proc]) -> None:
    room = unique("badbuy")
    await api.create_room(room)
    sale = (await create_sale(api, room, stock=5, per_user_limit=2))["id"]
    closed = (await create_sale(api, room, stock=5))["id"]
    async with api.client() as c:
        assert (await c.post(f"/api/rooms/{room}/sales/{closed}/end")).json()["status"] == "ended"
    later = (await create_sale(api, room, stock=5, starts_in_s=3600))["id"]
    async with LiveroomClient(gateways[1].ws_url, room, token("clumsy")) as c:
        cases = [
            ({"sale": sale, "qty": 0}, "bad_request"),
            ({"sale": sale, "qty": -3}, "bad_request"),
            ({"sale": sale, "qty": 10**12}, "bad_request"),
            ({"sale": sale, "qty": "2"}, "bad_request"),
            ({"sale": sale, "qty": 3}, "limit_reached"),
            ({"sale": "nope", "qty": 1}, "not_open"),
            ({"sale": closed, "qty": 1}, "not_open"),
            ({"sale": later, "qty": 1}, "not_open"),
        ]
        for i, (fields, code) in enumerate(cases):
            with pytest.raises(ClientError) as info:
                await c.request({"op": "buy", "ref": f"bad{i}", **fields})
            assert info.value.code == code, (fields, info.value)
        await c.send({"op": "buy", "sale": sale, "qty": 1})  # no ref: a resend can't match it
        while (ev := await c.next_event(5))["type"] != "error" or "ref" in ev:
            pass  # (earlier replies are in the event queue too)
        assert ev["code"] == "bad_request" and "ref" in ev["message"]
    for s in (sale, closed, later):
        assert await get_orders(api, room, s) == []
        assert (await get_sale(api, room, s))["sold"] == 0


async def test_viewers_see_started_stock_soldout_and_ended(api: Api, gateways: list[Proc]) -> None:
    room = unique("events")
    await api.create_room(room)
    async with (
        LiveroomClient(gateways[0].ws_url, room, token("watcher")) as w,
        LiveroomClient(gateways[1].ws_url, room, token("buyer")) as b,
    ):
        sale = (await create_sale(api, room, stock=3, per_user_limit=3))["id"]
        await b.buy(sale, 1, ref="a")
        seen: list[dict] = []
        while not any(e["type"] == "sale.stock" and e["left"] == 2 for e in seen):
            seen.append(await w.next_event(3))
        await b.buy(sale, 2, ref="b")
        while seen[-1]["type"] != "sale.ended":
            seen.append(await w.next_event(3))
        history = [e for e in seen if "id" in e and e["type"].startswith("sale.")]
        assert [e["type"] for e in history] == ["sale.started", "sale.soldout", "sale.ended"]
        assert history[0]["sale"] == sale and history[0]["title"] == "Tea set"
        assert history[2]["sold"] == 3
    async with LiveroomClient(gateways[0].ws_url, room, token("late")) as late:
        assert late.welcome is not None and late.welcome["room"]["sale"] is None
    sale2 = (await create_sale(api, room, stock=7))["id"]
    async with LiveroomClient(gateways[0].ws_url, room, token("late2")) as late:
        snap = late.welcome["room"]["sale"]  # type: ignore[index]
        assert snap["id"] == sale2 and snap["left"] == 7 and snap["status"] == "open"


async def test_a_sale_opens_and_ends_by_itself(api: Api, gateways: list[Proc]) -> None:
    room = unique("timed")
    await api.create_room(room)
    async with LiveroomClient(gateways[0].ws_url, room, token("w")) as w:
        sale = (await create_sale(api, room, starts_in_s=1, duration_s=1))["id"]
        assert (await get_sale(api, room, sale))["status"] == "scheduled"
        events = await collect_history(w, 2, timeout=10)
        assert [e["type"] for e in events] == ["sale.started", "sale.ended"]
        assert events[1]["sold"] == 0
    assert (await get_sale(api, room, sale))["ended_by"] == "time"
