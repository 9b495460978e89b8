"""A real browser plays a room over WHEP: Debian's headless Chromium, driven by Playwright.

The page is served by another process (another origin), so the WHEP exchange also proves the
CORS preflight. `getStats()` must show `framesDecoded` rising, for H.264 and for VP8.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.media.support import create_room, media_stats
from tests.support import Proc, token, unique

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]

WHEP_JS = """
async ({url, token, codec}) => {
  const pc = new RTCPeerConnection();
  const tr = pc.addTransceiver('video', {direction: 'recvonly'});
  if (codec) {
    const caps = RTCRtpReceiver.getCapabilities('video').codecs;
    tr.setCodecPreferences(caps.filter(c => c.mimeType.toLowerCase() === 'video/' + codec));
  }
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = (e) => { video.srcObject = new MediaStream([e.track]); video.play(); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
    setTimeout(resolve, 3000);
  });
  const res = await fetch(url, {
    method: 'POST',
    headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token},
    body: pc.localDescription.sdp,
  });
  const text = await res.text();
  if (res.status !== 201) return {status: res.status, body: text};
  await pc.setRemoteDescription({type: 'answer', sdp: text});
  window.pcs = (window.pcs || []).concat([pc]);
  return {status: res.status, location: res.headers.get('Location')};
}
"""

STATS_JS = """
async (i) => {
  const stats = await window.pcs[i].getStats();
  let frames = 0, codec = null, width = 0, codecId = null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      frames = r.framesDecoded || 0; width = r.frameWidth || 0; codecId = r.codecId;
    }
  });
  if (codecId) codec = stats.get(codecId).mimeType;
  return {frames, codec, width, state: window.pcs[i].connectionState};
}
"""


@pytest_asyncio.fixture
async def page() -> AsyncIterator[object]:
    playwright = pytest.importorskip("playwright.async_api")
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_chromium_plays_a_room_over_whep(
    media_proc: Proc, api_proc: Proc, page: object
) -> None:
    room = unique("browser")
    await create_room(media_proc.http_url, room, media={"source": "pattern"})
    await page.goto(api_proc.http_url + "/healthz")  # type: ignore[attr-defined]
    url = f"{media_proc.http_url}/whep/rooms/{room}"
    codecs, locations = {}, []
    try:
        for i, codec in enumerate(("h264", "vp8")):
            r = await page.evaluate(  # type: ignore[attr-defined]
                WHEP_JS, {"url": url, "token": token(f"browser{i}"), "codec": codec}
            )
            assert r["status"] == 201, r
            assert r["location"].startswith("/whep/sessions/")
            locations.append(r["location"])
            first = await _frames_after(page, i, 0, timeout=15)
            later = await _frames_after(page, i, first["frames"] + 30, timeout=10)
            assert later["frames"] > first["frames"] >= 1
            assert later["width"] == 320 and later["state"] == "connected"
            codecs[codec] = later["codec"]
        assert codecs == {"h264": "video/H264", "vp8": "video/VP8"}
        stats = await media_stats(media_proc.http_url, room)
        assert stats["viewers"] == 2 and stats["encoders"] == 2
    finally:
        async with httpx.AsyncClient(base_url=media_proc.http_url) as c:
            for location in locations:
                assert (await c.delete(location)).status_code == 200
    assert (await media_stats(media_proc.http_url, room))["viewers"] == 0


async def _frames_after(page: object, i: int, n: int, timeout: float) -> dict:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        s = await page.evaluate(STATS_JS, i)  # type: ignore[attr-defined]
        if s["frames"] > n:
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"framesDecoded stuck at {s['frames']} (wanted > {n}): {s}")
        await asyncio.sleep(0.2)
