"""Entitlement per media session (§2, §6): refusals before any peer connection, previews that
end, refunds and membership removals that stop a viewer's frames within a second, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from tests.media.conftest import MEDIA_ENV
from tests.media.support import Refusal, WhepViewer, create_room, media_stats
from tests.support import ADMIN, Proc, token, unique

PAID = {"mode": "paid", "price_cents": 500, "tiers": ["vip"], "preview_seconds": 0}


async def _refusal(url: str, room: str, tok: str | None) -> tuple[int, dict]:
    with pytest.raises(Refusal) as info:
        await WhepViewer(url, room, tok).start()
    body = info.value.body
    assert isinstance(body, dict), body
    return info.value.status, body


async def _admin(url: str, method: str, path: str, body: dict | None = None) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        r = await c.request(method, path, json=body)
    assert r.status_code == 200, r.text


async def test_refusals_come_before_any_peer_connection(media_proc: Proc) -> None:
    url = media_proc.http_url
    paid, plain = unique("paid"), unique("plain")
    await create_room(url, paid, media={"source": "pattern"}, access=PAID)
    await create_room(url, plain)  # no `media`: waits for WHIP

    status, body = await _refusal(url, paid, None)
    assert (status, body["error"]) == (401, "unauthorized") and body["message"]
    status, body = await _refusal(url, paid, "not-a-token")
    assert (status, body["error"]) == (401, "unauthorized")
    status, body = await _refusal(url, paid, token("nobody"))
    assert (status, body["error"]) == (403, "not_entitled")
    status, body = await _refusal(url, unique("nosuch"), token("nobody"))
    assert (status, body["error"]) == (404, "not_found")
    status, body = await _refusal(url, plain, token("nobody"))
    assert (status, body["error"]) == (409, "not_publishing")
    ended = unique("ended")
    await create_room(url, ended, media={"source": "pattern"})
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        assert (await c.post(f"/api/rooms/{ended}/end")).status_code == 200
    status, body = await _refusal(url, ended, token("late"))
    assert (status, body["error"]) == (409, "not_publishing")
    stats = await media_stats(url)
    assert stats["sessions"] == {"whep": 0, "whip": 0}
    assert paid not in stats["rooms"] and plain not in stats["rooms"]


async def test_preview_session_stops_at_preview_end(media_proc: Proc) -> None:
    url = media_proc.http_url
    room = unique("preview")
    await create_room(url, room, media={"source": "pattern"}, access={**PAID, "preview_seconds": 3})
    viewer = unique("peek")
    t0 = time.time()
    v = await WhepViewer(url, room, token(viewer), audio=True).start()
    try:
        await v.wait_frames(10)
        assert v.sound, "a preview hears the room too"
        stats = await media_stats(url, room)
        [session] = stats["sessions"]
        assert session["access"] == "preview"
        ends_at = session["ends_at"]
        assert t0 + 2 < ends_at <= t0 + 3.5
        await asyncio.sleep(ends_at - time.time() + 1.5)
        mono_end = time.monotonic() - (time.time() - ends_at)
        assert v.frames_after(mono_end + 0.5) == []
        assert [h for h in v.sound if h.at > mono_end + 0.5] == [], "sound after the preview"
        assert v.frames_after(mono_end - 1.0), "frames stopped long before the preview ended"
        status, body = await _refusal(url, room, token(viewer))
        assert (status, body["error"]) == (403, "not_entitled")
    finally:
        await v.close()
    assert (await media_stats(url, room))["viewers"] == 0


async def _stops_within_a_second(
    url: str, room: str, v: WhepViewer, revoke: Callable[[], object]
) -> None:
    await v.wait_frames(10)
    assert not v.audio or v.sound, "no sound before the revocation"
    t = time.monotonic()
    await revoke()  # type: ignore[misc]
    await asyncio.sleep(2.0)
    late = v.frames_after(t + 1.0)
    assert late == [], f"{len(late)} frames arrived more than 1 s after the revocation"
    heard = [h for h in v.sound if h.at > t + 1.0]
    assert heard == [], f"{len(heard)} audio frames arrived more than 1 s after the revocation"
    assert (await media_stats(url, room))["viewers"] == 0


async def test_refund_stops_frames_within_a_second_and_refuses_new_sessions(
    media_proc: Proc,
) -> None:
    url = media_proc.http_url
    room = unique("refund")
    await create_room(url, room, media={"source": "pattern"}, access=PAID)
    buyer = unique("buyer")
    await _admin(url, "PUT", f"/api/rooms/{room}/tickets/{buyer}")
    v = await WhepViewer(url, room, token(buyer), audio=True).start()
    try:
        await _stops_within_a_second(
            url, room, v, lambda: _admin(url, "DELETE", f"/api/rooms/{room}/tickets/{buyer}")
        )
    finally:
        await v.close()
    status, body = await _refusal(url, room, token(buyer))
    assert (status, body["error"]) == (403, "not_entitled")


async def test_membership_removal_stops_frames_within_a_second(media_proc: Proc) -> None:
    url = media_proc.http_url
    room = unique("member")
    await create_room(url, room, media={"source": "pattern"}, access=PAID)
    vip = unique("vip")
    await _admin(url, "PUT", f"/api/members/{vip}", {"tier": "vip", "expires_at": None})
    v = await WhepViewer(url, room, token(vip), audio=True).start()
    try:
        await _stops_within_a_second(
            url, room, v, lambda: _admin(url, "DELETE", f"/api/members/{vip}")
        )
    finally:
        await v.close()


async def test_ticket_grant_keeps_a_preview_session_beyond_its_preview(media_proc: Proc) -> None:
    url = media_proc.http_url
    room = unique("upgrade")
    await create_room(url, room, media={"source": "pattern"}, access={**PAID, "preview_seconds": 2})
    user = unique("upgrader")
    v = await WhepViewer(url, room, token(user)).start()
    try:
        await v.wait_frames(5)
        await _admin(url, "PUT", f"/api/rooms/{room}/tickets/{user}")
        await asyncio.sleep(3.0)
        t = time.monotonic()
        await asyncio.sleep(0.5)
        assert v.frames_after(t), "the ticket holder's session ended with the preview"
        [session] = (await media_stats(url, room))["sessions"]
        assert session["access"] == "ticket"
    finally:
        await v.delete()
        await v.close()


async def test_session_limits_per_user_and_per_process(spawn: Callable[..., Proc]) -> None:
    proc = spawn(
        "media",
        env={
            **MEDIA_ENV,
            "LIVEROOM_MEDIA_MAX_SESSIONS": "2",
            "LIVEROOM_MEDIA_MAX_SESSIONS_PER_USER": "1",
        },
    )
    url = proc.http_url
    room = unique("limits")
    await create_room(url, room, media={"source": "pattern"})
    first = await WhepViewer(url, room, token("lim1")).start()
    try:
        status, body = await _refusal(url, room, token("lim1"))
        assert (status, body["error"]) == (429, "rate_limited")
        second = await WhepViewer(url, room, token("lim2")).start()
        status, body = await _refusal(url, room, token("lim3"))
        assert (status, body["error"]) == (503, "unavailable")
        await second.delete()
        await second.close()
        third = await WhepViewer(url, room, token("lim3")).start()  # a slot came free
        await third.delete()
        await third.close()
    finally:
        await first.delete()
        await first.close()
    assert (await media_stats(url))["sessions"]["whep"] == 0
