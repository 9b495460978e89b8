"""Media test peers: an aiortc WHEP viewer that decodes and records what it sees, and an
aiortc WHIP publisher; both speak plain HTTP to a real media process."""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass, field

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.sources import read_barcode

NO_ICE_SERVERS = RTCConfiguration(iceServers=[])


@dataclass
class Seen:
    at: float
    """monotonic time the frame was decoded"""
    counter: int
    """the test pattern's frame number (bar code)"""
    digest: int
    """crc32 of the luma plane: tells whether the picture changed"""
    size: tuple[int, int]


@dataclass
class Refusal(Exception):
    status: int
    body: dict | str

    def __str__(self) -> str:
        return f"{self.status}: {self.body}"


@dataclass
class WhepViewer:
    """One viewer: offers recvonly video, decodes everything it receives."""

    base_url: str
    room: str
    token: str | None
    codecs: tuple[str, ...] = ()
    """restrict the offer to these codecs (e.g. ("VP8",)); empty: aiortc's defaults"""
    audio: bool = False
    frames: list[Seen] = field(default_factory=list)
    location: str | None = None
    answer: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> WhepViewer:
        self.pc = pc = RTCPeerConnection(NO_ICE_SERVERS)
        t = pc.addTransceiver("video", direction="recvonly")
        if self.codecs:
            from aiortc import RTCRtpReceiver

            caps = RTCRtpReceiver.getCapabilities("video").codecs
            t.setCodecPreferences(
                [c for c in caps if c.mimeType.split("/")[1].upper() in self.codecs]
            )
        if self.audio:
            pc.addTransceiver("audio", direction="recvonly")
        self._task: asyncio.Task | None = None

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._task = asyncio.get_running_loop().create_task(self._read(track))

        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with httpx.AsyncClient(base_url=self.base_url, timeout=20) as c:
            r = await c.post(
                f"/whep/rooms/{self.room}", content=pc.localDescription.sdp, headers=headers
            )
        if r.status_code != 201:
            await pc.close()
            try:
                body: dict | str = r.json()
            except ValueError:
                body = r.text
            raise Refusal(r.status_code, body)
        self.location = r.headers["location"]
        self.answer = r.text
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        return self

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                y = bytes(frame.planes[0])
                self.frames.append(
                    Seen(
                        time.monotonic(),
                        read_barcode(frame),
                        zlib.crc32(y),
                        (frame.width, frame.height),
                    )
                )
        except MediaStreamError:
            pass
        finally:
            self.ended.set()

    async def wait_frames(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.frames)} of {n} frames in {timeout}s")
            await asyncio.sleep(0.05)

    def frames_after(self, t: float) -> list[Seen]:
        return [f for f in self.frames if f.at > t]

    async def delete(self) -> httpx.Response:
        assert self.location is not None
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as c:
            return await c.delete(self.location)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()


async def create_room(
    api_url: str,
    room: str,
    *,
    media: dict | None = None,
    access: dict | None = None,
    tok: str | None = None,
) -> dict:
    from tests.support import ADMIN

    body: dict = {"id": room, "title": "media test"}
    if media is not None:
        body["media"] = media
    if access is not None:
        body["access"] = access
    headers = {"Authorization": f"Bearer {tok or ADMIN}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=10) as c:
        r = await c.post("/api/rooms", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def media_stats(base_url: str, room: str | None = None) -> dict:
    from tests.support import ADMIN

    path = "/media/stats" if room is None else f"/media/rooms/{room}"
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as c:
        r = await c.get(path)
    assert r.status_code == 200, r.text
    return r.json()


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


class NumberedTrack(MediaStreamTrack):
    """A generated video track whose frames carry ``base + n`` in the bar code."""

    kind = "video"

    def __init__(self, base: int, width: int = 320, height: int = 240) -> None:
        super().__init__()
        from aiortc.mediastreams import VideoStreamTrack

        from media.sources import PatternSource

        self.base = base
        self._clock = VideoStreamTrack()  # only for its 30 fps pacing and timestamps
        self._pattern = PatternSource(width, height, 30)
        self.sent = 0

    async def recv(self):  # type: ignore[no-untyped-def]
        pts, time_base = await self._clock.next_timestamp()
        frame = self._pattern.render(self.base + self.sent)
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


@dataclass
class WhipPublisher:
    base_url: str
    room: str
    token: str
    base: int = 0
    location: str | None = None

    async def start(self) -> WhipPublisher:
        self.pc = pc = RTCPeerConnection(NO_ICE_SERVERS)
        self.track = NumberedTrack(self.base)
        pc.addTransceiver(self.track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=self.base_url, timeout=20) as c:
            r = await c.post(
                f"/whip/rooms/{self.room}",
                content=pc.localDescription.sdp,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {self.token}",
                },
            )
        if r.status_code != 201:
            await pc.close()
            raise Refusal(r.status_code, r.json())
        self.location = r.headers["location"]
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        return self

    async def close(self) -> None:
        await self.pc.close()
