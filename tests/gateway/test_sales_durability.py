"""Confirmed orders survive a Redis crash (AOF, appendfsync always) and a gateway crash."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from engine.settings import Settings
from runtime.redis_server import RedisServer
from sdk.client import ClientError, ConnectionClosedByServer, LiveroomClient
from tests.gateway.test_sales import create_sale, get_orders, get_sale
from tests.support import Api, Proc, token, unique


async def _after_restart(call):  # type: ignore[no-untyped-def]
    """The first calls after a Redis restart may meet a dead pooled connection: the API
    answers 503 `unavailable` (never 500) and the next call works."""
    for _ in range(50):
        try:
            return await call()
        except AssertionError as exc:
            assert "503" in str(exc) or "unavailable" in str(exc), exc
            await asyncio.sleep(0.2)
    raise AssertionError("the API never recovered after the Redis restart")


async def test_acknowledged_orders_survive_sigkill_of_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True, fsync="always").start()
    procs = [Proc(server.url, role, tmp_path) for role in ("api", "gateway")]
    api, gw = Api(procs[0].http_url), procs[1]
    try:
        room = unique("durable")
        await api.create_room(room)
        sale = (await create_sale(api, room, stock=1000, per_user_limit=1000))["id"]
        async with LiveroomClient(gw.ws_url, room, token("collector"), resume=False) as c:
            acked = [(await c.buy(sale, 1, ref=f"o{i}"))["order"]["id"] for i in range(50)]
            server.stop(kill=True)  # right after the 50th ack
            server.start()  # same port, same data dir: replays the AOF

            orders = await _after_restart(lambda: get_orders(api, room, sale))
            assert [o["id"] for o in orders] == acked
            s = await _after_restart(lambda: get_sale(api, room, sale))
            assert (s["sold"], s["left"]) == (50, 950)

            # The gateway found Redis again by itself, and buy.lua was loaded again.
            async def buy_again() -> dict:
                for _ in range(50):
                    with contextlib.suppress(ClientError):
                        return await c.buy(sale, 1, ref="after-restart")
                    await asyncio.sleep(0.2)
                raise AssertionError("buys never worked again after the Redis restart")

            later = await buy_again()
            assert later["order"]["qty"] == 1
            assert (await c.buy(sale, 1, ref="o0"))["order"]["id"] == acked[0]  # still idempotent
        s = await _after_restart(lambda: get_sale(api, room, sale))
        assert (s["sold"], s["left"]) == (51, 949)
    finally:
        for p in procs:
            p.stop()
        server.stop()


async def test_gateway_sigkill_mid_sale_every_order_is_known_to_its_buyer(api: Api, spawn) -> None:
    g1, g2 = spawn(), spawn()
    room = unique("crash")
    await api.create_room(room)
    sale = (await create_sale(api, room, stock=100_000, per_user_limit=1000))["id"]
    buyers = [f"buyer{i}" for i in range(20)]
    sent: dict[str, list[str]] = {b: [] for b in buyers}
    acked: dict[tuple[str, str], str] = {}

    async def shop(user: str) -> None:
        c = LiveroomClient(g1.ws_url, room, token(user), resume=False)
        await c.connect()
        with contextlib.suppress(
            ClientError,
            ConnectionClosedByServer,
            asyncio.TimeoutError,
            ConnectionError,
            OSError,
            ConnectionClosed,
        ):
            for k in range(10_000):
                ref = f"{user}-{k}"
                sent[user].append(ref)
                ack = await c.request({"op": "buy", "sale": sale, "qty": 1, "ref": ref}, timeout=3)
                acked[(user, ref)] = ack["order"]["id"]
                # A player's pace, not a bot's: the resend below goes out at once, and a
                # fast machine would otherwise send past the connection's message burst
                # (those messages are dropped undecoded, and their requests time out).
                await asyncio.sleep(0.02)
        await c.drop()

    shoppers = [asyncio.ensure_future(shop(u)) for u in buyers]
    await asyncio.sleep(1.0)
    g1.kill()
    await asyncio.gather(*shoppers)
    assert len(acked) > 20

    # Every buyer resends every ref it ever sent, through the surviving gateway.
    learned: dict[tuple[str, str], str] = {}
    for user in buyers:
        assert len(sent[user]) < Settings().msg_burst  # the resend fits one burst
        async with LiveroomClient(g2.ws_url, room, token(user)) as c:
            answers = await asyncio.gather(
                *(c.request({"op": "buy", "sale": sale, "qty": 1, "ref": r}) for r in sent[user]),
                return_exceptions=True,
            )
        for ref, a in zip(sent[user], answers, strict=True):
            assert not isinstance(a, BaseException), a
            learned[(user, ref)] = a["order"]["id"]
    for key, order_id in acked.items():
        assert learned[key] == order_id  # same answer as before the crash
    orders = await get_orders(api, room, sale)
    assert {o["id"] for o in orders} == set(learned.values())
    assert len(orders) == len(learned)  # one order per ref, none unknown to its buyer
