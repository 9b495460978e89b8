"""Where a room's video comes from, behind one interface.

- ``PatternSource``: a generated, moving test pattern (lavfi ``testsrc2``: moving shapes, a
  clock and a frame counter) with the frame number also written as a bar code along the
  bottom, so that a test can read it back from decoded video and tell frozen video at once.
- ``FileSource``: a media file (MPEG-TS or MP4 with H.264 baseline, WebM with VP8), demuxed
  without decoding and looped; its packets go to viewers as they are.
- ``IngestSource``: the video track of a host's WHIP session, decoded by aiortc.

``next()`` returns a ``SourceItem``: a raw frame (to be encoded by the room's encoders) or an
already encoded packet, with the room-clock time it belongs to. Raw sources are paced by
whoever produces them (the pattern's clock, the host's sender); file packets are paced here,
by their timestamps.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.frame import VideoFrame

from media.encoder import TIME_BASE

BARCODE_BITS = 24
BARCODE_ROWS = 16
_FILE_CODECS = {"h264": "H264", "vp8": "VP8"}


@dataclass(slots=True)
class SourceItem:
    at: float
    """Room-clock time of this frame (monotonic seconds)."""
    frame: VideoFrame | None = None
    """A raw frame to encode..."""
    packet: av.Packet | None = None
    """...or an encoded packet (file sources)."""
    keyframe: bool = False


class Source(Protocol):
    name: str
    """``pattern``, ``file`` or ``whip``."""
    codec: str | None
    """The codec of encoded sources (``H264``/``VP8``); None for raw sources."""

    async def next(self) -> SourceItem | None:
        """The next item, or None when the source has ended."""
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


class PatternSource:
    name = "pattern"
    codec = None

    def __init__(self, width: int, height: int, fps: int, worker: Executor) -> None:
        self.fps = fps
        self._worker = worker
        graph = av.filter.Graph()
        src = graph.add("testsrc2", f"size={width}x{height}:rate={fps}")
        fmt = graph.add("format", "yuv420p")
        self._sink = graph.add("buffersink")
        src.link_to(fmt)
        fmt.link_to(self._sink)
        graph.configure()
        self._graph = graph
        self._n = 0
        self._t0: float | None = None
        self.late = 0
        """Ticks skipped because the process could not keep up."""

    def _render(self, n: int) -> VideoFrame:
        frame = self._sink.pull()
        stamp_barcode(frame, n % (1 << BARCODE_BITS))
        return frame

    async def next(self) -> SourceItem | None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        at = self._t0 + self._n / self.fps
        if at > now:
            await asyncio.sleep(at - now)
        elif now - at > 2 / self.fps:
            # Behind by more than two frames: drop the missed ticks rather than burst them.
            missed = int((now - at) * self.fps)
            self.late += missed
            self._n += missed
            at = self._t0 + self._n / self.fps
        n = self._n
        self._n += 1
        frame = await loop.run_in_executor(self._worker, self._render, n)
        return SourceItem(at, frame=frame)

    def close(self) -> None:
        self._graph = None  # type: ignore[assignment]


# -- a media file ----------------------------------------------------------------------------


class FileSource:
    """Demuxes (never decodes) the first video stream of a file, paced by its timestamps."""

    name = "file"

    def __init__(self, path: str) -> None:
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
        self._demux = self._container.demux(self._stream)
        self._first: float | None = None
        self._last = 0.0
        self._offset = 0.0
        self._t0: float | None = None
        self.loops = 0

    def _packets(self) -> list[av.Packet]:
        for _ in range(2):
            for packet in self._demux:
                if packet.size == 0 or packet.pts is None and packet.dts is None:
                    continue
                return list(self._bsf.filter(packet)) if self._bsf else [packet]
            # End of file: loop, continuing the timeline after the last frame.
            self.loops += 1
            self._offset += self._last - (self._first or 0.0) + self._frame_s
            self._first = None
            self._container.seek(0, stream=self._stream)
            self._demux = self._container.demux(self._stream)
        return []

    async def next(self) -> SourceItem | None:
        packets: list[av.Packet] = []
        while not packets:
            packets = self._packets()  # local file reads: microseconds, not worth a thread
            if not packets and self.loops > 0 and self._first is None:
                return None  # a file without a single packet
        packet = packets[0]
        ts = float((packet.pts if packet.pts is not None else packet.dts) * self._tb)
        if self._first is None:
            self._first = ts
        self._last = ts
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        at = self._t0 + self._offset + (ts - self._first)
        if at > now:
            await asyncio.sleep(at - now)
        return SourceItem(at, packet=packet, keyframe=bool(packet.is_keyframe))

    def close(self) -> None:
        self._container.close()


# -- WHIP ingest -----------------------------------------------------------------------------


class IngestSource:
    """The host's video track; aiortc decodes it (once), the room encodes it (once)."""

    name = "whip"
    codec = None

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.dropped = 0

    async def next(self) -> SourceItem | None:
        try:
            frame = await self.track.recv()
        except MediaStreamError:
            return None
        # aiortc's receiver queue is unbounded: when the encoder is slower than the host, keep
        # only the newest decoded frame instead of letting the backlog grow.
        queue: asyncio.Queue | None = getattr(self.track, "_queue", None)
        while queue is not None and queue.qsize() > 0:
            newer = queue.get_nowait()
            if newer is None:
                queue.put_nowait(None)  # the end marker stays for the next call
                break
            frame = newer
            self.dropped += 1
        assert isinstance(frame, VideoFrame)
        return SourceItem(time.monotonic(), frame=frame)

    def close(self) -> None:
        self.track.stop()


def open_builtin(spec: dict, width: int, height: int, fps: int, worker: Executor) -> Source:
    """The built-in source a room was created with (``media`` in PROTOCOL.md §6)."""
    if spec.get("source") == "pattern":
        return PatternSource(width, height, fps, worker)
    if spec.get("source") == "file":
        return FileSource(str(spec.get("path", "")))
    raise ValueError(f"unknown media source {spec.get('source')!r}")


__all__ = [
    "TIME_BASE",
    "FileSource",
    "IngestSource",
    "PatternSource",
    "Source",
    "SourceItem",
    "open_builtin",
    "read_barcode",
    "stamp_barcode",
]
