"""Paid rooms (§2): entitlement per connection; refunds, membership changes and preview ends
cut access on every gateway within a second."""

from __future__ import annotations

import asyncio
import time

import pytest

from sdk.client import ClientError, ConnectionClosedByServer, LiveroomClient
from tests.support import Api, Proc, token, unique

PAID = {"mode": "paid", "price_cents": 990, "tiers": ["vip"], "preview_seconds": 0}


async def _status(gw: Proc, room: str, tok: str) -> str | int:
    """`welcome.access`, or the HTTP status of the refusal."""
    c = LiveroomClient(gw.ws_url, room, tok, resume=False)
    try:
        await c.connect()
    except ClientError as exc:
        assert exc.status is not None
        return exc.status
    assert c.welcome is not None
    kind = c.welcome["access"]
    await c.close()
    return kind


async def _closed_with(c: LiveroomClient, timeout: float) -> tuple[int | None, float]:
    t0 = time.monotonic()
    while True:
        try:
            await c.next_event(timeout - (time.monotonic() - t0))
        except ConnectionClosedByServer as exc:
            return exc.code, time.monotonic() - t0


async def _put(api: Api, path: str, body: dict | None = None) -> None:
    async with api.client() as c:
        r = await c.put(path, json=body)
    assert r.status_code == 200, r.text


async def _delete(api: Api, path: str) -> dict:
    async with api.client() as c:
        r = await c.delete(path)
    assert r.status_code == 200, r.text
    return r.json()


async def test_paid_room_entitlement_matrix(api: Api, gateways: list[Proc]) -> None:
    room = unique("paid")
    await api.create_room(room, access=PAID)
    gw = gateways[0]
    assert await _status(gw, room, token("nobody")) == 403
    await _put(api, f"/api/rooms/{room}/tickets/buyer")
    assert await _status(gw, room, token("buyer")) == "ticket"
    vip, senior = unique("vip"), unique("senior")
    await _put(api, f"/api/members/{vip}", {"tier": "vip", "expires_at": None})
    await _put(api, f"/api/members/{senior}", {"tier": "senior", "expires_at": None})
    assert await _status(gw, room, token(vip)) == "member"
    assert await _status(gw, room, token(senior)) == 403
    expired = unique("lapsed")
    await _put(api, f"/api/members/{expired}", {"tier": "vip", "expires_at": time.time() - 5})
    assert await _status(gw, room, token(expired)) == 403
    assert await _status(gw, room, token("h", "host", rooms=[room])) == "host"
    assert await _status(gw, room, token("other-host", "host", rooms=["x"])) == 403
    assert await _status(gw, room, token("boss", "admin")) == "host"


async def test_preview_ends_with_4403_and_is_not_restarted_by_reconnecting(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("preview")
    await api.create_room(room, access={**PAID, "preview_seconds": 2})
    senior = unique("senior")  # under-tier members preview like anyone else
    await _put(api, f"/api/members/{senior}", {"tier": "senior", "expires_at": None})
    c = LiveroomClient(gateways[0].ws_url, room, token(senior), resume=False)
    await c.connect()
    assert c.welcome is not None and c.welcome["access"] == "preview"
    ends = c.welcome["preview_ends_at"]
    assert ends == pytest.approx(time.time() + 2, abs=1.0)
    with pytest.raises(ClientError) as info:
        await c.danmaku("can I chat?")
    assert info.value.code == "not_entitled"
    with pytest.raises(ClientError) as info:
        await c.request({"op": "buy", "sale": "s1", "qty": 1, "ref": "b"})
    assert info.value.code == "not_entitled"

    # Reconnecting on the other gateway keeps the same preview clock.
    again = LiveroomClient(gateways[1].ws_url, room, token(senior), resume=False)
    await again.connect()
    assert again.welcome is not None and again.welcome["preview_ends_at"] == ends
    code, _ = await _closed_with(c, 5)
    assert code == 4403
    assert (await _closed_with(again, 5))[0] == 4403
    assert await _status(gateways[0], room, token(senior)) == 403


async def test_refund_closes_every_connection_on_every_gateway_within_a_second(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("refund")
    await api.create_room(room, access=PAID)
    user = unique("fan")
    await _put(api, f"/api/rooms/{room}/tickets/{user}")
    conns = [
        LiveroomClient(gateways[i % 2].ws_url, room, token(user), resume=False) for i in range(3)
    ]
    await asyncio.gather(*(c.connect() for c in conns))
    bystander = LiveroomClient(gateways[0].ws_url, room, token("h", "host", rooms=[room]))
    await bystander.connect()

    t0 = time.monotonic()
    assert (await _delete(api, f"/api/rooms/{room}/tickets/{user}"))["revoked"] is True
    closed = await asyncio.gather(*(_closed_with(c, 5) for c in conns))
    for code, _ in closed:
        assert code == 4403
    assert time.monotonic() - t0 < 1.0  # every one of the 3, refund call included
    assert await _status(gateways[1], room, token(user)) == 403
    # the host's connection was not touched
    await bystander.request({"op": "ping"})

    await _put(api, f"/api/rooms/{room}/tickets/{user}")
    assert await _status(gateways[1], room, token(user)) == "ticket"
    await bystander.close()


async def test_membership_removal_closes_member_connections(api: Api, gateways: list[Proc]) -> None:
    room = unique("members")
    await api.create_room(room, access=PAID)
    vip = unique("vip")
    await _put(api, f"/api/members/{vip}", {"tier": "vip", "expires_at": None})
    c = LiveroomClient(gateways[1].ws_url, room, token(vip), resume=False)
    await c.connect()
    assert c.welcome is not None and c.welcome["access"] == "member"
    await _delete(api, f"/api/members/{vip}")
    code, took = await _closed_with(c, 5)
    assert code == 4403 and took < 1.0


async def test_ticket_bought_during_preview_upgrades_the_connection(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("upgrade")
    await api.create_room(room, access={**PAID, "preview_seconds": 2})
    user = unique("late-buyer")
    c = LiveroomClient(gateways[0].ws_url, room, token(user), resume=False)
    await c.connect()
    await _put(api, f"/api/rooms/{room}/tickets/{user}")
    await asyncio.sleep(0.5)
    ack = await c.danmaku("I paid")  # no longer a preview viewer
    assert ack["type"] == "ack"
    await asyncio.sleep(2.0)  # past the preview's end: still connected
    await c.request({"op": "ping"})
    await c.close()


async def test_token_expiring_mid_session_closes_4401(api: Api, gateways: list[Proc]) -> None:
    room = unique()
    await api.create_room(room)
    c = LiveroomClient(gateways[0].ws_url, room, token("brief", ttl=2), resume=False)
    await c.connect()
    code, _ = await _closed_with(c, 10)
    assert code == 4401
