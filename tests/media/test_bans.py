"""Bans end media sessions like refunds (§3 bans, §6): the same entitlement check, the same
revocations stream."""

from __future__ import annotations

from tests.media.support import WhepViewer, create_room
from tests.media.test_access import _admin, _refusal, _stops_within_a_second
from tests.support import Proc, token, unique


async def test_ban_stops_frames_within_a_second_and_refuses_new_sessions(
    media_proc: Proc,
) -> None:
    url = media_proc.http_url
    room = unique("mban")
    await create_room(url, room, media={"source": "pattern"})
    user = unique("troll")
    v = await WhepViewer(url, room, token(user), audio=True).start()
    try:
        await _stops_within_a_second(
            url, room, v, lambda: _admin(url, "POST", f"/api/rooms/{room}/bans", {"user": user})
        )
    finally:
        await v.close()
    status, body = await _refusal(url, room, token(user))
    assert (status, body["error"]) == (403, "banned")
    await _admin(url, "DELETE", f"/api/rooms/{room}/bans/{user}")
    again = await WhepViewer(url, room, token(user)).start()
    try:
        await again.wait_frames(5)
    finally:
        await again.delete()
        await again.close()
