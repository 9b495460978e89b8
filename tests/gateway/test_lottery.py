"""Lotteries end to end (§5): entry by keyword and like, eligibility, self-drawing, verify."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdk.client import ClientError, LiveroomClient
from tests.gateway.helpers import close_all, collect_history, connect_all
from tests.support import SECRET, Api, Proc, token, unique


async def create_lottery(api: Api, room: str, **fields: object) -> dict:
    body = {"prize": "A tea set", "winners": 5, "rule": {}, "duration_s": 600, **fields}
    async with api.client() as c:
        r = await c.post(f"/api/rooms/{room}/lotteries", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def get_lottery(api: Api, room: str, lottery: str) -> dict:
    async with api.client(token("anyone")) as c:
        r = await c.get(f"/api/rooms/{room}/lotteries/{lottery}")
    assert r.status_code == 200, r.text
    return r.json()


async def draw(api: Api, room: str, lottery: str) -> dict:
    async with api.client() as c:
        r = await c.post(f"/api/rooms/{room}/lotteries/{lottery}/draw")
    assert r.status_code == 200, r.text
    return r.json()


async def wait_started(c: LiveroomClient, lottery: str) -> None:
    while True:
        ev = await c.next_event(10)
        if ev["type"] == "lottery.started" and ev["lottery"] == lottery:
            return


async def test_keyword_and_like_rule_enters_exactly_those_who_did_both(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("lotto")
    await api.create_room(room)
    viewers = [LiveroomClient(gateways[i % 2].ws_url, room, token(f"v{i:03d}")) for i in range(200)]
    await connect_all(viewers)
    try:
        lottery = await create_lottery(api, room, winners=5, rule={"keyword": "666", "like": True})
        assert len(lottery["commit"]) == 64 and "seed" not in lottery
        await asyncio.gather(*(wait_started(v, lottery["id"]) for v in viewers))

        async def act(i: int, v: LiveroomClient) -> None:
            says, likes = i < 120, 100 <= i < 140
            if likes and i < 110:  # like first, then the keyword
                await v.like(3)
                await asyncio.sleep(0.4)
            if says:
                for k in range(1 + i % 3):  # some say it several times
                    await v.danmaku(f"666 go {k}" if k % 2 == 0 else f"GO 666! {k}")
            if likes and i >= 110:
                await asyncio.sleep(0.4)
                await v.like(1)

        await asyncio.gather(*(act(i, v) for i, v in enumerate(viewers)))
        await asyncio.sleep(0.8)  # likes are reported once per tick
        drawn = await draw(api, room, lottery["id"])
        record = await get_lottery(api, room, lottery["id"])
        both = sorted(f"v{i:03d}" for i in range(100, 120))
        assert record["entrants"] == both
        assert record["entrants_count"] == 20
        assert len(record["winners"]) == 5 and set(record["winners"]) <= set(both)
        assert drawn["winners"] == record["winners"]
        while (ev := await viewers[7].next_event(10))["type"] != "lottery.drawn":
            pass  # the room's danmaku and likes come first
        assert ev["winners"] == record["winners"] and ev["seed"] == record["seed"]
    finally:
        await close_all(viewers)


async def test_eligibility_and_closed(api: Api, gateways: list[Proc]) -> None:
    room = unique("elig")
    await api.create_room(
        room, access={"mode": "paid", "price_cents": 100, "tiers": ["vip"], "preview_seconds": 600}
    )
    senior, vip = unique("senior"), unique("vip")
    async with api.client() as c:
        for user, tier in ((senior, "senior"), (vip, "vip")):
            await c.put(f"/api/members/{user}", json={"tier": tier, "expires_at": None})
        await c.put(f"/api/rooms/{room}/tickets/holder")
    lottery = (await create_lottery(api, room, rule={"min_tier": "vip", "paid_only": True}))["id"]
    gw = gateways[0].ws_url
    cases = {
        token(unique("previewer")): "not_entitled",  # PROTOCOL §2: previews may not enter
        token(senior): "not_entitled",  # a senior is a preview viewer in a vip room
        token("holder"): "not_eligible",  # a ticket, but not a vip member
        token("h", "host", rooms=[room]): "not_eligible",  # hosts never enter
    }
    for tok, code in cases.items():
        async with LiveroomClient(gw, room, tok) as c:
            with pytest.raises(ClientError) as info:
                await c.enter(lottery)
            assert info.value.code == code
    async with LiveroomClient(gw, room, token(vip)) as c:
        assert (await c.enter(lottery))["lottery"] == lottery
        assert (await c.enter(lottery))["type"] == "ack"  # twice: still one entry
        await draw(api, room, lottery)
        with pytest.raises(ClientError) as info:
            await c.enter(lottery)
        assert info.value.code == "closed"
    record = await get_lottery(api, room, lottery)
    assert record["entrants"] == [vip] and record["winners"] == [vip]


async def test_a_lottery_draws_itself_once_with_several_processes(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("auto")
    await api.create_room(room)
    async with (
        LiveroomClient(gateways[1].ws_url, room, token("watch")) as w,
        LiveroomClient(gateways[0].ws_url, room, token("fan")) as fan,
    ):
        lottery = (await create_lottery(api, room, duration_s=1, winners=3))["id"]
        await wait_started(fan, lottery)
        await fan.enter(lottery)
        history = await collect_history(w, 2, timeout=15)  # started, then drawn
        assert [e["type"] for e in history] == ["lottery.started", "lottery.drawn"]
        assert history[1]["winners"] == ["fan"]
        await asyncio.sleep(1.5)  # three schedulers (api + 2 gateways) had every chance
        more = [e for e in w.welcomes]
        assert len(more) == 1
        with pytest.raises(asyncio.TimeoutError):
            extra = await collect_history(w, 1, timeout=1.0)
            raise AssertionError(f"drawn twice? {extra}")
    assert (await get_lottery(api, room, lottery))["status"] == "drawn"


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", "verify-lottery", *args],
        env={**os.environ, "LIVEROOM_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_verify_lottery_holds_on_a_real_draw_and_catches_tampering(
    api: Api, gateways: list[Proc], tmp_path: Path
) -> None:
    room = unique("verify")
    await api.create_room(room)
    lottery = (await create_lottery(api, room, winners=2))["id"]
    fans = [LiveroomClient(gateways[0].ws_url, room, token(f"f{i}")) for i in range(6)]
    await connect_all(fans)
    await asyncio.gather(*(f.enter(lottery) for f in fans))
    await close_all(fans)
    await draw(api, room, lottery)

    ok = await asyncio.to_thread(_verify, room, lottery, "--api", api.base_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout
    url = await asyncio.to_thread(_verify, f"{api.base_url}/api/rooms/{room}/lotteries/{lottery}")
    assert url.returncode == 0

    record = await get_lottery(api, room, lottery)
    loser = next(e for e in record["entrants"] if e not in record["winners"])
    tampered = {
        "entrant": {**record, "entrants": sorted([*record["entrants"][1:], "zz-intruder"])},
        "seed": {**record, "seed": "00" * 32},
        "winner": {**record, "winners": [record["winners"][0], loser]},
    }
    path = tmp_path / "good.json"
    path.write_text(json.dumps(record))
    assert (await asyncio.to_thread(_verify, "--file", str(path))).returncode == 0
    for name, bad in tampered.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad))
        r = await asyncio.to_thread(_verify, "--file", str(path))
        assert r.returncode == 1 and "FAILED" in r.stdout, (name, r.stdout)
