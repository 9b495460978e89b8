"""Bad WHEP/WHIP requests get a clear 4xx with the JSON error body, and leave nothing behind:
no session, no encoder, no peer connection (no new sockets in the media process)."""

from __future__ import annotations

import asyncio
import os

import httpx
from aiortc import RTCPeerConnection

from tests.media.support import NO_ICE_SERVERS, WhepViewer, create_room, media_stats
from tests.support import Proc, token, unique


async def _offer(*kinds_directions: tuple[str, str], audio_codec: str | None = None) -> str:
    from aiortc import RTCRtpSender

    pc = RTCPeerConnection(NO_ICE_SERVERS)
    for kind, direction in kinds_directions:
        t = pc.addTransceiver(kind, direction=direction)
        if kind == "audio" and audio_codec is not None:
            caps = RTCRtpSender.getCapabilities("audio").codecs
            t.setCodecPreferences([c for c in caps if c.name.upper() == audio_codec])
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def _fds(proc: Proc) -> int:
    return len(os.listdir(f"/proc/{proc.proc.pid}/fd"))


async def test_bad_offers_get_clear_4xx_and_leak_nothing(media_proc: Proc) -> None:
    url = media_proc.http_url
    room = unique("bad")
    await create_room(url, room, media={"source": "pattern"})
    good = await _offer(("video", "recvonly"))
    audio_only = await _offer(("audio", "recvonly"))
    sends_video = await _offer(("video", "sendonly"))
    no_ice = "\r\n".join(
        line for line in good.split("\r\n") if not line.startswith(("a=ice-ufrag", "a=ice-pwd"))
    )
    huge = "v=0\r\n" + "a=x-padding:" + "x" * (1 << 20) + "\r\n"
    auth = {"Authorization": f"Bearer {token('mallory')}"}
    host = token("bad-host", "host", rooms=[room])
    sdp = {**auth, "Content-Type": "application/sdp"}

    async def chunks() -> object:
        for _ in range(64):
            yield b"a=x-padding:" + b"y" * 4096 + b"\r\n"

    before = _fds(media_proc)
    cases = [
        ("POST", f"/whep/rooms/{room}", sdp, "hello, I am not SDP", 400, "bad_sdp"),
        ("POST", f"/whep/rooms/{room}", sdp, "v=0\r\nm=video abc\r\n", 400, "bad_sdp"),
        ("POST", f"/whep/rooms/{room}", sdp, b"v=0\r\n\xff\xfe", 400, "bad_sdp"),
        ("POST", f"/whep/rooms/{room}", sdp, no_ice, 400, "bad_sdp"),
        ("POST", f"/whep/rooms/{room}", sdp, audio_only, 422, "no_video"),
        ("POST", f"/whep/rooms/{room}", sdp, sends_video, 422, "no_video"),
        ("POST", f"/whep/rooms/{room}", sdp, huge, 413, "too_large"),
        ("POST", f"/whep/rooms/{room}", sdp, chunks(), 413, "too_large"),
        ("POST", f"/whep/rooms/{room}", {**auth, "Content-Type": "application/json"}, good, 415,
         "unsupported_media_type"),
        ("POST", f"/whep/rooms/{room}", {"Content-Type": "application/sdp"}, good, 401,
         "unauthorized"),
        ("DELETE", "/whep/sessions/no-such-session", {}, None, 404, "not_found"),
        ("DELETE", "/whip/sessions/no-such-session", {}, None, 404, "not_found"),
        ("PATCH", "/whep/sessions/anything", sdp, "a=candidate:x", 405, "not_supported"),
        ("GET", f"/whep/rooms/{room}", auth, None, 405, "method_not_allowed"),
        ("POST", f"/whip/rooms/{room}", sdp, await _offer(("video", "sendonly")), 403,
         "forbidden"),
        ("POST", f"/whip/rooms/{room}", {**sdp, "Authorization": f"Bearer {host}"},
         await _offer(("video", "sendonly"), ("audio", "sendonly"), audio_codec="PCMU"), 422,
         "unsupported_codec"),
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        for method, path, headers, body, status, code in cases:
            r = await c.request(method, path, headers=headers, content=body)
            assert r.status_code == status, (method, path, code, r.status_code, r.text[:300])
            assert r.json()["error"] == code, r.text
            assert r.json()["message"]
            assert r.headers["access-control-allow-origin"] == "*"

    stats = await media_stats(url)
    assert stats["sessions"] == {"whep": 0, "whip": 0}
    assert room not in stats["rooms"]
    await asyncio.sleep(0.2)
    assert _fds(media_proc) <= before + 2  # no UDP sockets from half-made peer connections

    # The same process still serves a good offer afterwards.
    v = await WhepViewer(url, room, token("after")).start()
    await v.wait_frames(3)
    await v.delete()
    await v.close()
    assert (await media_stats(url))["sessions"]["whep"] == 0


async def test_cors_preflight_and_headers(media_proc: Proc) -> None:
    async with httpx.AsyncClient(base_url=media_proc.http_url) as c:
        for path in ("/whep/rooms/any", "/whep/sessions/any", "/whip/rooms/any"):
            r = await c.options(
                path,
                headers={
                    "Origin": "http://elsewhere.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )
            assert r.status_code == 204
            assert r.headers["access-control-allow-origin"] == "*"
            assert "POST" in r.headers["access-control-allow-methods"]
            assert "DELETE" in r.headers["access-control-allow-methods"]
            assert "authorization" in r.headers["access-control-allow-headers"].lower()
            assert "location" in r.headers["access-control-expose-headers"].lower()


async def test_delete_twice_is_404_the_second_time(media_proc: Proc) -> None:
    room = unique("twice")
    await create_room(media_proc.http_url, room, media={"source": "pattern"})
    v = await WhepViewer(media_proc.http_url, room, token("twice")).start()
    assert (await v.delete()).status_code == 200
    r = await v.delete()
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    await v.close()


async def test_a_viewer_without_opus_still_gets_the_picture(media_proc: Proc) -> None:
    """Rooms speak Opus only: an offer whose audio has no Opus gets its audio answered
    `inactive`, and video as always (nothing refused that could be served)."""
    import httpx as _httpx

    url = media_proc.http_url
    room = unique("pcmu")
    await create_room(url, room, media={"source": "pattern"})
    offer = await _offer(("video", "recvonly"), ("audio", "recvonly"), audio_codec="PCMU")
    headers = {"Authorization": f"Bearer {token('old-phone')}", "Content-Type": "application/sdp"}
    async with _httpx.AsyncClient(base_url=url, timeout=10) as c:
        r = await c.post(f"/whep/rooms/{room}", headers=headers, content=offer)
        assert r.status_code == 201, r.text
        audio = r.text.split("m=audio", 1)[1].split("m=video", 1)[0]
        assert "a=inactive" in audio
        assert (await c.delete(r.headers["location"])).status_code == 200
