"""Resume with `since`: no gap, no duplicate; `recovered: false` when history cannot tell."""

from __future__ import annotations

import asyncio
import contextlib

from sdk.client import LiveroomClient
from tests.gateway.helpers import Talkers, collect_history, ids_in_order
from tests.support import Api, Proc, token, unique


async def test_resume_gets_exactly_the_missed_events_then_live(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique()
    await api.create_room(room)
    gw = gateways[0].ws_url
    async with Talkers(gw, room) as talker:
        await talker.say("before")
        a = LiveroomClient(gw, room, token("a"))
        await a.connect()
        await talker.say("seen by a")
        await collect_history(a, 1)
        cursor = a.cursor
        await a.drop()

        missed = [await talker.say(f"missed {i}") for i in range(50)]
        b = LiveroomClient(gw, room, token("a"), since=cursor)
        await b.connect()
        assert b.welcome is not None and b.welcome["recovered"] is True
        replayed = await collect_history(b, 50)
        assert [e["id"] for e in replayed] == missed
        live = await talker.say("live")
        after = await collect_history(b, 1)
        assert [e["id"] for e in after] == [live]
        with contextlib.suppress(asyncio.TimeoutError):
            extra = await collect_history(b, 1, timeout=0.5)
            raise AssertionError(f"duplicate or stray event {extra}")
        await b.close()


async def test_unknown_epoch_is_not_recovered(api: Api, gateways: list[Proc]) -> None:
    room = unique()
    await api.create_room(room)
    async with LiveroomClient(gateways[1].ws_url, room, token("x"), since="zzzz:0-0") as c:
        assert c.welcome is not None
        assert c.welcome["recovered"] is False
        assert c.welcome["epoch"] != "zzzz"
        assert c.welcome["last_id"] == "0-0"


async def test_id_older_than_retained_history_is_not_recovered(api: Api, spawn) -> None:
    gw = spawn(
        env={
            "LIVEROOM_HISTORY_KEEP_EVENTS": "10",
            "LIVEROOM_HISTORY_KEEP_SECONDS": "0",
            "LIVEROOM_DANMAKU_BURST": "100",
            "LIVEROOM_DANMAKU_RATE": "100",
        }
    )
    room = unique()
    await api.create_room(room)
    async with LiveroomClient(gw.ws_url, room, token("t")) as talker:
        ids = [(await talker.danmaku(f"m{i}"))["id"] for i in range(40)]
        epoch = talker.epoch
    old = LiveroomClient(gw.ws_url, room, token("o"), since=f"{epoch}:{ids[0]}")
    await old.connect()
    assert old.welcome is not None and old.welcome["recovered"] is False
    assert old.welcome["last_id"] == ids[-1]
    await old.close()
    recent = LiveroomClient(gw.ws_url, room, token("o"), since=f"{epoch}:{ids[-3]}")
    await recent.connect()
    assert recent.welcome is not None and recent.welcome["recovered"] is True
    assert [e["id"] for e in await collect_history(recent, 2)] == ids[-2:]
    await recent.close()


async def test_sigkill_of_a_gateway_loses_nothing_for_its_clients(api: Api, spawn) -> None:
    g1, g2 = spawn(), spawn()
    room = unique()
    await api.create_room(room)
    viewers = [LiveroomClient([g1.ws_url, g2.ws_url], room, token(f"v{i}")) for i in range(20)]
    await asyncio.gather(*(v.connect() for v in viewers))
    sent: list[str] = []
    async with Talkers(g2.ws_url, room) as talker:
        for i in range(30):
            sent.append(await talker.say(f"a{i}"))
        await asyncio.sleep(0.1)
        g1.kill()
        for i in range(30):
            sent.append(await talker.say(f"b{i}"))
            await asyncio.sleep(0.01)
        got = await asyncio.gather(*(collect_history(v, 60, 30) for v in viewers))
    for v, events in zip(viewers, got, strict=True):
        assert [e["id"] for e in events] == sent
        assert ids_in_order(events)
        assert 1006 in v.close_codes  # it really lost its gateway...
        assert v.welcomes[-1]["recovered"] is True  # ...and resumed on the other
    await asyncio.gather(*(v.close() for v in viewers))
