"""A room's blocked words, replaced at runtime (§3 `PUT /api/rooms/{room}/words`, §4
`blocked`): every gateway applies the new list to the next danmaku, beside the deployment's
own `blocked_words`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sdk.client import ClientError, LiveroomClient
from tests.support import Api, Proc, token, unique


async def _put_words(api: Api, room: str, words: list, tok: str) -> dict:
    async with api.client(tok) as c:
        r = await c.put(f"/api/rooms/{room}/words", json={"blocked": words})
    assert r.status_code == 200, r.text
    return r.json()


async def _refused(c: LiveroomClient, text: str) -> str | None:
    """The error code a danmaku gets, or None when it is acked."""
    try:
        await c.danmaku(text)
    except ClientError as exc:
        return exc.code
    return None


async def _until(c: LiveroomClient, text: str, want: str | None, t0: float) -> float:
    """Resend ``text`` until its answer is ``want``; seconds since ``t0``."""
    while (got := await _refused(c, text)) != want:
        assert time.monotonic() - t0 < 3, f"{text!r}: still {got!r}, not {want!r}, after 3 s"
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


async def test_words_replaced_at_runtime_apply_on_every_gateway(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique("words")
    await api.create_room(room)
    host = token(unique("host"), "host", rooms=[room])
    a = LiveroomClient(gateways[0].ws_url, room, token(unique("a")), resume=False)
    b = LiveroomClient(gateways[1].ws_url, room, token(unique("b")), resume=False)
    await asyncio.gather(a.connect(), b.connect())
    # Both gateways have loaded the room's (empty) list before it changes.
    assert await _refused(a, "no spoilers yet") is None
    assert await _refused(b, "the ending is near") is None

    t0 = time.monotonic()
    got = await _put_words(api, room, ["Spoiler", " ENDING ", "spoiler"], host)
    assert got == {"room": room, "blocked": ["ending", "spoiler"]}
    took = max(
        await _until(a, "big SPOILER ahead", "blocked", t0),
        await _until(b, "the Ending is sad", "blocked", t0),
    )
    assert took <= 1.5, f"the new words took {took:.2f} s to apply"
    assert await _refused(b, "a spoiler") == "blocked"
    assert await _refused(a, "an innocent remark") is None

    # A room that is new to a gateway loads the current list with its first viewer.
    async with LiveroomClient(gateways[1].ws_url, room, token(unique("c")), resume=False) as c:
        assert await _refused(c, "spoiler!") == "blocked"
    async with api.client(host) as h:
        r = await h.get(f"/api/rooms/{room}/words")
    assert r.status_code == 200 and r.json()["blocked"] == ["ending", "spoiler"]

    # Removing a word allows it again, on both gateways.
    t0 = time.monotonic()
    assert (await _put_words(api, room, ["ending"], host))["blocked"] == ["ending"]
    took = max(await _until(a, "spoiler again", None, t0), await _until(b, "spoilers ok", None, t0))
    assert took <= 1.5
    assert await _refused(a, "the END of it: ending") == "blocked"
    await _put_words(api, room, [], host)
    await _until(b, "happy ending", None, time.monotonic())
    await asyncio.gather(a.close(), b.close())


async def test_deployment_words_add_to_the_rooms_list(api: Api, spawn: Callable[..., Proc]) -> None:
    gw = spawn(env={"LIVEROOM_BLOCKED_WORDS": "scam"})
    room = unique("both")
    await api.create_room(room)
    host = token(unique("host"), "host", rooms=[room])
    await _put_words(api, room, ["spoiler"], host)
    async with LiveroomClient(gw.ws_url, room, token(unique("u")), resume=False) as c:
        assert await _refused(c, "a SCAM") == "blocked"
        assert await _refused(c, "a spoiler") == "blocked"
        await _put_words(api, room, [], host)
        await _until(c, "a spoiler", None, time.monotonic())
        assert await _refused(c, "still a scam") == "blocked"


async def test_words_are_for_hosts_and_bounded(api: Api) -> None:
    room = unique("wperm")
    await api.create_room(room)
    for tok in (token("v"), token("elsewhere", "host", rooms=["another-room"])):
        async with api.client(tok) as c:
            r = await c.put(f"/api/rooms/{room}/words", json={"blocked": ["x"]})
            assert r.status_code == 403 and r.json()["error"] == "forbidden"
            assert (await c.get(f"/api/rooms/{room}/words")).status_code == 403
    async with api.client() as c:
        for body in (
            {"blocked": ["w"] * 501},
            {"blocked": ["x" * 51]},
            {"blocked": [""]},
            {"blocked": [1]},
            {"blocked": "spoiler"},
            {},
        ):
            r = await c.put(f"/api/rooms/{room}/words", json=body)
            assert r.status_code == 422 and r.json()["error"] == "invalid", str(body)[:80]
        r = await c.put(f"/api/rooms/{room}/words", json={"blocked": [f"w{i}" for i in range(500)]})
        assert r.status_code == 200 and len(r.json()["blocked"]) == 500
        spec = (await c.get("/openapi.json")).json()
    blocked = spec["components"]["schemas"]["WordsIn"]["properties"]["blocked"]
    assert blocked["maxItems"] == 500
    assert (blocked["items"]["minLength"], blocked["items"]["maxLength"]) == (1, 50)


@pytest.mark.parametrize("words", [["  "], [" x ", "X"]])
async def test_blank_words_are_dropped_and_duplicates_merged(api: Api, words: list[str]) -> None:
    room = unique("wnorm")
    await api.create_room(room)
    got = await _put_words(api, room, words, token("h", "host", rooms=[room]))
    assert got["blocked"] == [w.strip().casefold() for w in words if w.strip()][:1]
