"""Where a room's video comes from, behind one interface.

- ``PatternSource``: a generated, moving test pattern (lavfi ``testsrc2``: moving shapes, a
  clock and a frame counter) with the frame number also written as a bar code along the
  bottom, so that a test can read it back from decoded video and tell frozen video at once.
- ``FileSource``: a media file (MPEG-TS or MP4 with H.264 baseline, WebM with VP8), demuxed
  without decoding and looped; its packets go to viewers as they are, and its sound beside
  them as Opus (passed on, or encoded once from AAC).
- ``IngestSource``: the video track of a host's WHIP session, decoded by aiortc.

A source is read by its room's producer thread, never by the event loop: ``next(stop)`` blocks
until the next item is due (the pattern's clock, the file's timestamps, the host's next frame)
and returns a ``SourceItem``, a raw frame to encode or an encoded packet, with the room-clock
time it belongs to; or None when ``stop`` is set or the source has ended. Pacing on the
thread's own clock keeps the frame rate steady however busy the event loop is with sending.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.frame import VideoFrame

from media.audio import PACKET_SAMPLES, PACKETS_PER_S, RATE, OpusEncoder, Tone, ToneSource

BARCODE_BITS = 24
BARCODE_ROWS = 16
MAX_LATE_S = 0.5
"""A paced source this far behind its clock skips the missed frames instead of bursting them."""
_FILE_CODECS = {"h264": "H264", "vp8": "VP8"}


@dataclass(slots=True)
class SourceItem:
    at: float
    """Room-clock time of this frame (monotonic seconds)."""
    frame: VideoFrame | None = None
    """A raw frame to encode..."""
    packet: av.Packet | None = None
    """...or an encoded packet (file sources)..."""
    keyframe: bool = False
    sound: list[bytes] | None = None
    """...or Opus packets of 20 ms each, the first at ``at`` (a file's sound)."""


class Source(Protocol):
    name: str
    """``pattern``, ``file`` or ``whip``."""
    codec: str | None
    """The codec of encoded sources (``H264``/``VP8``); None for raw sources."""
    audio: ToneSource | None
    """Sound made on a producer thread of its own (the pattern's tone), or None: a WHIP
    host's sound is passed through as it arrives, and files play without sound."""

    def next(self, stop: threading.Event) -> SourceItem | None:
        """The next item, when it is due (producer thread); None when stopped or ended."""
        ...

    def close(self) -> None: ...


# -- the test pattern ------------------------------------------------------------------------


def stamp_barcode(frame: VideoFrame, value: int) -> None:
    """Write ``value`` into the bottom rows of the luma plane, MSB first, one bit per block."""
    plane = frame.planes[0]
    width, height, stride = frame.width, frame.height, plane.line_size
    block = width // BARCODE_BITS
    row = b"".join(
        (b"\xeb" if (value >> (BARCODE_BITS - 1 - i)) & 1 else b"\x10") * block
        for i in range(BARCODE_BITS)
    )
    row = row.ljust(width, b"\x10")
    buf = memoryview(plane)
    for y in range(height - BARCODE_ROWS, height):
        buf[y * stride : y * stride + width] = row


def read_barcode(frame: VideoFrame) -> int:
    """The value ``stamp_barcode`` wrote, read back from a decoded frame (tests, benchmarks)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    block = frame.width // BARCODE_BITS
    y = frame.height - BARCODE_ROWS // 2
    data = bytes(plane)
    base = y * plane.line_size
    value = 0
    for i in range(BARCODE_BITS):
        value = (value << 1) | (data[base + i * block + block // 2] > 128)
    return value


class Paced:
    """A fixed-rate clock for a producer thread: waits for tick ``n``, skips when far behind."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.n = 0
        self.t0: float | None = None
        """Time of tick 0; set by the first ``wait``, or by ``start`` to share it."""
        self.late = 0
        """Ticks skipped because the producer was stalled for more than ``MAX_LATE_S``."""

    def start(self, t0: float) -> None:
        """Put tick 0 at ``t0`` unless the clock already runs (clocks that must stay in step,
        a room's video and sound, start at the same ``t0``)."""
        if self.t0 is None:
            self.t0 = t0

    def wait(self, stop: threading.Event) -> float | None:
        """Block until the next tick; return its time, or None if ``stop`` was set."""
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        at = self.t0 + self.n / self.fps
        if at > now:
            if stop.wait(at - now):
                return None
        elif now - at > MAX_LATE_S:
            missed = int((now - at) * self.fps)
            self.late += missed
            self.n += missed
            at = self.t0 + self.n / self.fps
        self.n += 1
        return None if stop.is_set() else at


class PatternSource:
    name = "pattern"
    codec = None

    def __init__(self, width: int, height: int, fps: int, tone_hz: int = 440) -> None:
        self.clock = Paced(fps)
        self.audio: ToneSource | None = ToneSource(Tone(tone_hz), Paced(PACKETS_PER_S))
        """The pattern's sound, on a clock that starts with the video's (``start_clocks``)."""
        graph = av.filter.Graph()
        src = graph.add("testsrc2", f"size={width}x{height}:rate={fps}")
        fmt = graph.add("format", "yuv420p")
        self._sink = graph.add("buffersink")
        src.link_to(fmt)
        fmt.link_to(self._sink)
        graph.configure()
        self._graph = graph
        self._lock = threading.Lock()  # a graph is pulled by one thread at a time

    @property
    def late(self) -> int:
        return self.clock.late

    def start_clocks(self, t0: float) -> None:
        """Frame ``n`` at ``t0 + n / fps`` and the sound's second ``k`` at ``t0 + k``."""
        self.clock.start(t0)
        if self.audio is not None:
            self.audio.clock.start(t0)  # type: ignore[attr-defined]

    def render(self, n: int) -> VideoFrame:
        with self._lock:
            frame = self._sink.pull()
        stamp_barcode(frame, n % (1 << BARCODE_BITS))
        return frame

    def next(self, stop: threading.Event) -> SourceItem | None:
        at = self.clock.wait(stop)
        if at is None:
            return None
        return SourceItem(at, frame=self.render(self.clock.n - 1))

    def close(self) -> None:
        pass


# -- a media file ----------------------------------------------------------------------------


class FileSource:
    """Demuxes (never decodes) the first video stream of a file, paced by its timestamps, and
    its first audio stream beside it: Opus (WebM) is passed on as it is; any other codec (AAC
    in MP4 or MPEG-TS) is decoded and encoded to Opus once, for every listener."""

    name = "file"
    audio = None  # (the sound comes interleaved with the video, as ``SourceItem.sound``)

    def __init__(self, path: str, audio_bitrate: int = 64_000) -> None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no media file at {path}")
        self.path = str(p)
        self._container = av.open(self.path)
        streams = self._container.streams.video
        if not streams:
            raise ValueError(f"{path} has no video stream")
        self._stream = streams[0]
        name = self._stream.codec_context.name
        if name not in _FILE_CODECS:
            raise ValueError(f"{path}: video is {name}; H.264 or VP8 is required")
        self.codec: str | None = _FILE_CODECS[name]
        self._bsf = None
        if name == "h264" and self._container.format.name.split(",")[0] in ("mov", "mp4"):
            # MP4 carries H.264 length-prefixed; RTP packetization needs Annex B start codes.
            self._bsf = av.BitStreamFilterContext("h264_mp4toannexb", self._stream)
        self._tb = self._stream.time_base or fractions.Fraction(1, 90_000)
        rate = self._stream.average_rate or self._stream.guessed_rate or 30
        self._frame_s = float(1 / rate)
        sounds = self._container.streams.audio
        self._sound = sounds[0] if sounds else None
        self._transcode: _ToOpus | None = None
        if self._sound is not None and self._sound.codec_context.name != "opus":
            self._transcode = _ToOpus(audio_bitrate)
        self._demux = self._container.demux(*self._streams())
        self._first: float | None = None
        self._last = 0.0
        self._offset = 0.0
        self._t0: float | None = None
        self._lock = threading.Lock()
        self.loops = 0

    def _streams(self) -> list[av.stream.Stream]:
        return [self._stream] + ([self._sound] if self._sound is not None else [])

    def _packets(self) -> tuple[list[av.Packet], bool]:
        """The next packets (one, or what the bitstream filter makes of it), and whether they
        are sound."""
        for _ in range(2):
            for packet in self._demux:
                if packet.size == 0 or packet.pts is None and packet.dts is None:
                    continue
                if packet.stream is not self._stream:
                    return [packet], True
                return (list(self._bsf.filter(packet)) if self._bsf else [packet]), False
            # End of file: loop, continuing the timeline after the last frame.
            self.loops += 1
            self._offset += self._last - (self._first or 0.0) + self._frame_s
            self._first, self._last = None, 0.0
            self._container.seek(0, stream=self._stream)
            self._demux = self._container.demux(*self._streams())
        return [], False

    def next(self, stop: threading.Event) -> SourceItem | None:
        while True:
            with self._lock:
                packets, sound = self._packets()
                if not packets:
                    return None  # a file without a single packet
                packet = packets[0]
                tb = packet.time_base or self._tb
                ts = float((packet.pts if packet.pts is not None else packet.dts) * tb)
                if self._first is None:
                    self._first = ts
                self._last = max(self._last, ts)
                now = time.monotonic()
                if self._t0 is None:
                    self._t0 = now
                at = self._t0 + self._offset + (ts - self._first)
                opus = None
                if sound:
                    opus = self._transcode.encode(packet) if self._transcode else [bytes(packet)]
            if sound and not opus:
                continue  # (a codec's first packets may make no sound yet)
            if at > now and stop.wait(at - now):
                return None
            if sound:
                return SourceItem(at, sound=opus)
            return SourceItem(at, packet=packet, keyframe=bool(packet.is_keyframe))

    def close(self) -> None:
        with self._lock:
            self._container.close()


class _ToOpus:
    """A file's sound in another codec (AAC...), decoded and encoded to Opus once."""

    def __init__(self, bitrate: int) -> None:
        self._resample = av.AudioResampler(
            format="s16", layout="mono", rate=RATE, frame_size=PACKET_SAMPLES
        )
        self._opus = OpusEncoder(bitrate)

    def encode(self, packet: av.Packet) -> list[bytes]:
        out: list[bytes] = []
        for frame in packet.decode():
            frame.pts = None  # the resampler re-times; the room clock comes from ``at``
            for chunk in self._resample.resample(frame):
                out += self._opus.encode(chunk)
        return out


# -- WHIP ingest -----------------------------------------------------------------------------


class IngestSource:
    """The host's video track; aiortc decodes it (once), the room encodes it (once).

    A task on the event loop moves decoded frames from the track into a one-frame slot; the
    producer thread takes the newest. When the encoder is slower than the host, older frames
    are replaced, never queued (aiortc's own receiver queue is unbounded)."""

    name = "whip"
    codec = None
    audio = None

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self._cond = threading.Condition()
        self._frame: tuple[float, VideoFrame] | None = None
        self._ended = False
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump(), name="whip-ingest")

    async def _pump(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                with self._cond:
                    if self._frame is not None:
                        self.dropped += 1
                    self._frame = (time.monotonic(), frame)  # type: ignore[assignment]
                    self._cond.notify()
        except (MediaStreamError, asyncio.CancelledError):
            pass
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify()

    @property
    def ended(self) -> bool:
        return self._ended

    def next(self, stop: threading.Event) -> SourceItem | None:
        with self._cond:
            while self._frame is None and not self._ended and not stop.is_set():
                self._cond.wait(0.1)
            if self._frame is None:
                return None
            at, frame = self._frame
            self._frame = None
        return SourceItem(at, frame=frame)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.track.stop()


def open_builtin(
    spec: dict, width: int, height: int, fps: int, tone_hz: int = 440, audio_bitrate: int = 64_000
) -> Source:
    """The built-in source a room was created with (``media`` in PROTOCOL.md §6)."""
    if spec.get("source") == "pattern":
        return PatternSource(width, height, fps, tone_hz)
    if spec.get("source") == "file":
        return FileSource(str(spec.get("path", "")), audio_bitrate)
    raise ValueError(f"unknown media source {spec.get('source')!r}")
