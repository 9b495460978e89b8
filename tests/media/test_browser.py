"""A real browser plays a room over WHEP: Debian's headless Chromium, driven by Playwright.

The page is served by another process (another origin), so the WHEP exchange also proves the
CORS preflight. `getStats()` must show `framesDecoded` rising, for H.264 and for VP8.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.media.support import create_room, media_stats
from tests.support import CHROMIUM, Proc, token, unique
from tests.support import CHROMIUM_ARGS as ARGS

OFFER_JS = """
  // Non-trickle WHIP/WHEP: gather every candidate, POST the offer, apply the answer.
  const offer = async (pc, url, token) => {
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
    return {status: res.status, location: res.headers.get('Location')};
  };
"""

WHEP_JS = (
    """
async ({url, token, codec}) => {
"""
    + OFFER_JS
    + """  const pc = new RTCPeerConnection();
  const tr = pc.addTransceiver('video', {direction: 'recvonly'});
  if (codec) {
    const caps = RTCRtpReceiver.getCapabilities('video').codecs;
    tr.setCodecPreferences(caps.filter(c => c.mimeType.toLowerCase() === 'video/' + codec));
  }
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = (e) => { video.srcObject = new MediaStream([e.track]); video.play(); };
  const res = await offer(pc, url, token);
  if (res.status !== 201) return res;
  window.pcs = (window.pcs || []).concat([pc]);
  return res;
}
"""
)

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


WHIP_JS = (
    """
async ({url, token}) => {
"""
    + OFFER_JS
    + """  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
  const res = await offer(pc, url, token);
  if (res.status !== 201) return res;
  window.publisher = pc;
  return {...res, kinds: stream.getTracks().map((t) => t.kind).sort()};
}
"""
)

LISTEN_JS = (
    """
async ({url, token}) => {
"""
    + OFFER_JS
    + """  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const stream = new MediaStream();
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  const ears = {peak: 0, frames: 0, kinds: []};
  window.ears = ears;
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    ears.kinds.push(e.track.kind);
    video.srcObject = stream;
    video.play();
    if (e.track.kind === 'audio') {
      // Chromium feeds a remote track to WebAudio only while a media element plays it.
      const ctx = new AudioContext();
      ctx.resume();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 2048;
      ctx.createMediaStreamSource(new MediaStream([e.track])).connect(analyser);
      const buf = new Float32Array(analyser.fftSize);
      setInterval(() => {
        analyser.getFloatTimeDomainData(buf);
        for (const v of buf) ears.peak = Math.max(ears.peak, Math.abs(v));
      }, 30);
    }
  };
  const count = () => { ears.frames += 1; video.requestVideoFrameCallback(count); };
  video.requestVideoFrameCallback(count);
  const res = await offer(pc, url, token);
  return res;
}
"""
)


async def test_chromium_publishes_camera_and_microphone_and_chromium_viewers_hear_it(
    media_proc: Proc,
) -> None:
    """A browser goes live over WHIP with its (fake) camera and microphone; another browser
    plays the room over WHEP and its WebAudio analyser hears the microphone's beep while the
    picture plays; a viewer joining later gets both too."""
    import asyncio
    import time

    playwright = pytest.importorskip("playwright.async_api")
    room = unique("mic")
    await create_room(media_proc.http_url, room)  # no built-in source: waits for WHIP
    host = token("studio", "host", rooms=[room])
    fake = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    locations: list[str] = []
    async with playwright.async_playwright() as p:
        studio = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS + fake)
        audience = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            sender = await studio.new_page()
            await sender.goto(media_proc.http_url + "/healthz")
            r = await sender.evaluate(
                WHIP_JS, {"url": f"{media_proc.http_url}/whip/rooms/{room}", "token": host}
            )
            assert r["status"] == 201, r
            assert r["kinds"] == ["audio", "video"]
            locations.append(r["location"])

            async def listener(user: str) -> object:
                page = await (await audience.new_context()).new_page()
                await page.goto(media_proc.http_url + "/healthz")
                r = await page.evaluate(
                    LISTEN_JS,
                    {"url": f"{media_proc.http_url}/whep/rooms/{room}", "token": token(user)},
                )
                assert r["status"] == 201, r
                locations.append(r["location"])
                return page

            async def hears_and_sees(page: object, timeout: float = 20) -> dict:
                deadline = time.monotonic() + timeout
                while True:
                    ears = await page.evaluate("window.ears")  # type: ignore[attr-defined]
                    if ears["peak"] > 0.05 and ears["frames"] > 30:
                        return ears
                    if time.monotonic() > deadline:
                        raise AssertionError(f"heard/saw too little: {ears}")
                    await asyncio.sleep(0.2)

            first = await listener("front-row")
            ears = await hears_and_sees(first)
            assert sorted(ears["kinds"]) == ["audio", "video"]
            stats = await media_stats(media_proc.http_url, room)
            assert stats["source"] == "whip" and stats["audio"]["packets"] > 0

            later = await listener("latecomer")
            await hears_and_sees(later)
        finally:
            async with httpx.AsyncClient(base_url=media_proc.http_url) as c:
                for location in locations:  # closing a browser is no DELETE: end them here
                    await c.delete(location)
            await studio.close()
            await audience.close()
    stats = await media_stats(media_proc.http_url, room)
    assert stats["viewers"] == 0 and stats["sessions"] == []
