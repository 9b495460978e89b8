"""Media test peers: an aiortc WHEP viewer that decodes and records what it sees, and an
aiortc WHIP publisher; both speak plain HTTP to a real media process."""

from __future__ import annotations

import asyncio
import time
import zlib
from array import array
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
    pts: int = 0
    """its RTP timestamp as the receiver maps it (90 kHz)"""


@dataclass
class Heard:
    at: float
    """monotonic time the audio frame was decoded"""
    pts: int
    """its RTP timestamp as the receiver maps it (48 kHz)"""
    samples: array
    """the first channel, signed 16-bit"""


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
    sound: list[Heard] = field(default_factory=list)
    sound_ended: asyncio.Event = field(default_factory=asyncio.Event)
    reports: dict[str, tuple[int, int]] = field(default_factory=dict)
    receivers: dict[str, object] = field(default_factory=dict)
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
        self._audio_task: asyncio.Task | None = None

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            loop = asyncio.get_running_loop()
            if track.kind == "video":
                self._task = loop.create_task(self._read(track))
            else:
                self._audio_task = loop.create_task(self._listen(track))

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
        for t in pc.getTransceivers():
            self._note_sender_reports(t.kind, t.receiver)
        return self

    def _note_sender_reports(self, kind: str, receiver: object) -> None:
        """Keep each stream's latest RTCP sender report (NTP time, RTP timestamp): what a
        browser uses to play sound and picture in step."""
        from aiortc.rtp import RtcpSrPacket

        handle = receiver._handle_rtcp_packet  # type: ignore[attr-defined]

        async def noted(packet: object) -> None:
            if isinstance(packet, RtcpSrPacket):
                info = packet.sender_info
                self.reports[kind] = (info.ntp_timestamp, info.rtp_timestamp)
            await handle(packet)

        receiver._handle_rtcp_packet = noted  # type: ignore[attr-defined]
        self.receivers[kind] = receiver

    def sender_time(self, kind: str, pts: int, rate: int) -> float:
        """The sender's wall-clock time (NTP seconds) of a decoded frame's ``pts``, through the
        stream's last sender report, as a browser computes it for lip sync."""
        ntp, sr_rtp = self.reports[kind]
        mapper = self.receivers[kind]._RTCRtpReceiver__timestamp_mapper  # aiortc internal
        rtp = (pts + mapper._origin) % (1 << 32)
        delta = (rtp - sr_rtp + (1 << 31)) % (1 << 32) - (1 << 31)  # signed, across wraps
        return (ntp >> 32) + (ntp & 0xFFFFFFFF) / (1 << 32) + delta / rate

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
                        frame.pts or 0,
                    )
                )
        except MediaStreamError:
            pass
        finally:
            self.ended.set()

    async def _listen(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                channels = len(frame.layout.channels)  # packed s16, interleaved
                pcm = array("h", bytes(frame.planes[0])[: 2 * frame.samples * channels])
                first = pcm[::channels]
                self.sound.append(Heard(time.monotonic(), frame.pts, first))
        except MediaStreamError:
            pass
        finally:
            self.sound_ended.set()

    def loudness(self, since: float = 0.0) -> float:
        """RMS of the sound heard after ``since``, in full scale (0..1)."""
        samples = [v for h in self.sound if h.at > since for v in h.samples]
        if not samples:
            return 0.0
        return (sum(v * v for v in samples) / len(samples)) ** 0.5 / 32768

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
        for task in (self._task, self._audio_task):
            if task is not None:
                task.cancel()
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


class ToneTrack(MediaStreamTrack):
    """A generated audio track: 20 ms frames of a tone, paced in real time."""

    kind = "audio"

    def __init__(self, hz: int) -> None:
        super().__init__()
        from media.audio import Tone

        self.tone = Tone(hz)
        self.n = 0
        self.t0: float | None = None

    async def recv(self):  # type: ignore[no-untyped-def]
        import fractions

        from av.audio.frame import AudioFrame

        from media.audio import PACKET_SAMPLES, RATE

        if self.t0 is None:
            self.t0 = time.monotonic()
        wait = self.t0 + self.n * PACKET_SAMPLES / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = AudioFrame(format="s16", layout="mono", samples=PACKET_SAMPLES)
        frame.planes[0].update(self.tone.samples(self.n * PACKET_SAMPLES).tobytes())
        frame.sample_rate = RATE
        frame.pts, frame.time_base = self.n * PACKET_SAMPLES, fractions.Fraction(1, RATE)
        self.n += 1
        return frame


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
    tone_hz: int | None = None
    """also publish a tone (aiortc encodes it to Opus) at this pitch"""
    obs: bool = False
    """send the offer in the shape OBS sends (audio first, H.264 + Opus; see obs_shaped)"""

    async def start(self) -> WhipPublisher:
        from aiortc import RTCRtpSender

        self.pc = pc = RTCPeerConnection(NO_ICE_SERVERS)
        self.track = NumberedTrack(self.base)
        if self.obs:
            sound = pc.addTransceiver(ToneTrack(self.tone_hz or 440), direction="sendonly")
            sound.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.name == "opus"]
            )
            video = pc.addTransceiver(self.track, direction="sendonly")
            video.setCodecPreferences(
                [
                    c
                    for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.name == "H264" and "42e01f" in str(c.parameters)
                ]
            )
        else:
            pc.addTransceiver(self.track, direction="sendonly")
            if self.tone_hz is not None:
                pc.addTransceiver(ToneTrack(self.tone_hz), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        self.offer = pc.localDescription.sdp
        if self.obs:
            self.offer = obs_shaped(self.offer)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=20) as c:
            r = await c.post(
                f"/whip/rooms/{self.room}",
                content=self.offer,
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


def av_offsets(v: WhepViewer, fps: int) -> list[float]:
    """Audio minus video, in seconds, for each click the viewer heard: the click's sender time
    against that of the frame whose counter is the matching multiple of ``fps`` (both through
    their streams' sender reports; the pattern clicks when its counter passes k * fps)."""
    from media.audio import RATE, click_onsets

    assert "audio" in v.reports and "video" in v.reports, "no sender reports yet"
    heard = sorted(v.sound, key=lambda h: h.pts)
    pcm = array("h")
    for h in heard:
        pcm.extend(h.samples)
    base = heard[0].pts
    video_pts = {f.counter: f.pts for f in v.frames}
    offsets = []
    for onset in click_onsets(pcm):
        click_at = v.sender_time("audio", base + onset, RATE)
        # Which second was it? The frame shown at the same sender time tells (to within 0.5 s).
        best = min(
            video_pts, key=lambda n: abs(v.sender_time("video", video_pts[n], 90_000) - click_at)
        )
        k = round(best / fps)
        if k * fps in video_pts:
            offsets.append(click_at - v.sender_time("video", video_pts[k * fps], 90_000))
    return offsets


def obs_shaped(offer: str) -> str:
    """Rewrite an aiortc offer (audio first, then H.264 video) into the shape OBS 30+ sends
    over WHIP (libdatachannel): Opus on payload type 111 with OBS's fmtp, H.264 on 96 with
    `profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1`, no header
    extensions, one SHA-256 fingerprint, and ICE and DTLS attributes at SESSION level (before
    the first m-line), `a=ice-options:ice2,trickle`, msid per track in `a=ssrc` lines."""
    lines = offer.split("\r\n")
    session_attrs: list[str] = []
    for prefix in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:sha-256"):
        session_attrs.append(next(line for line in lines if line.startswith(prefix)))
    session_attrs += ["a=setup:actpass", "a=ice-options:ice2,trickle"]
    out: list[str] = []
    kind = None
    for line in lines:
        if line.startswith("m="):
            if kind is None:
                out += session_attrs
            kind = line[2:].split()[0]
            pt = "111" if kind == "audio" else "96"
            line = " ".join(line.split()[:3] + [pt])
        elif line.startswith(("a=extmap", "a=ice-", "a=fingerprint", "a=setup", "a=msid:")):
            continue
        elif line.startswith("a=rtpmap:"):
            line = "a=rtpmap:111 opus/48000/2" if kind == "audio" else "a=rtpmap:96 H264/90000"
            if kind == "audio":
                line += (
                    "\r\na=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;"
                    "sprop-stereo=1;useinbandfec=1"
                )
        elif line.startswith("a=fmtp:"):
            line = (
                "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1"
            )
        elif line.startswith("a=rtcp-fb:"):
            line = "a=rtcp-fb:96 " + line.split(" ", 1)[1]
        elif line.startswith("a=ssrc:"):
            ssrc = line.split()[0]
            line += f"\r\n{ssrc} msid:obs-stream obs-stream-{kind}"
        out.append(line)
    return "\r\n".join(out)
