"""A room's video encoder: raw frames in, encoded packets out (H.264 constrained baseline, VP8).

``encode`` runs in the room's producer thread (libx264 and libvpx release the GIL); everything
else is called from the event loop. Output packets carry ``pts`` on the room clock in
``TIME_BASE`` (90 kHz, the RTP video clock), so they are RTP timestamps as they are, and a
source switch (a new WHIP ingest) never makes time go backwards.
"""

from __future__ import annotations

import fractions
import threading

import av
from av.video.frame import PictureType, VideoFrame

from engine.settings import MediaSettings
from media.rtc import h264_payloads, vp8_payloads

TIME_BASE = fractions.Fraction(1, 90_000)

_LIBRARY = {"H264": "libx264", "VP8": "libvpx"}


class Packetizer:
    """RTP payloads of one encoded stream, cut once for every viewer (aiortc's own cutting,
    which it would otherwise repeat in every viewer's sender)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._picture_id = 0

    def payloads(self, data: bytes) -> list[bytes]:
        if self.codec == "H264":
            return h264_payloads(data)
        # VP8 descriptors number pictures: one sequence per stream, the same for all viewers
        # (a viewer that skips frames sees a gap, like packet loss, and resumes at a keyframe).
        self._picture_id = (self._picture_id + 1) % (1 << 15)
        return vp8_payloads(data, self._picture_id)


class VideoEncoder:
    """One codec context for one room stream; re-created when the input size changes."""

    def __init__(self, codec: str, settings: MediaSettings) -> None:
        if codec not in _LIBRARY:
            raise ValueError(f"no encoder for {codec}")
        self.codec = codec
        self.settings = settings
        self._ctx: av.VideoCodecContext | None = None
        self._size: tuple[int, int] | None = None
        self._want_key = True
        self._last_forced = -1e9
        self._lock = threading.Lock()
        self.frames = 0
        self.keyframes = 0
        self.bytes = 0

    def request_keyframe(self, now: float) -> bool:
        """Force the next frame to be a keyframe, at most once per ``keyframe_request_gap_s``
        (a room of joining viewers must not turn into a stream of keyframes)."""
        if now - self._last_forced < self.settings.keyframe_request_gap_s:
            return False
        self._last_forced = now
        self._want_key = True
        return True

    def force_keyframe(self) -> None:
        """The next frame is a keyframe whatever the rate limit (a source switch)."""
        self._want_key = True

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        s = self.settings
        ctx = av.CodecContext.create(_LIBRARY[self.codec], "w")
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = fractions.Fraction(s.fps, 1)
        ctx.bit_rate = s.bitrate
        ctx.gop_size = s.gop_frames
        if s.encoder_threads:
            ctx.thread_count = s.encoder_threads
        if self.codec == "H264":
            ctx.profile = "Baseline"  # x264's baseline is constrained baseline (42e0..)
            g = s.gop_frames
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "forced-idr": "1",
                "x264-params": f"keyint={g}:min-keyint={g}:scenecut=0:repeat-headers=1",
            }
        else:
            # aiortc's VP8 rate control (CBR, small buffer), at a configurable speed.
            ctx.qmin = 2
            ctx.qmax = 56
            ctx.options = {
                "bufsize": str(s.bitrate),
                "cpu-used": str(s.vp8_cpu_used),
                "deadline": "realtime",
                "lag-in-frames": "0",
                "minrate": str(s.bitrate),
                "maxrate": str(s.bitrate),
                "noise-sensitivity": "4",
                "overshoot-pct": "15",
                "partitions": "0",
                "static-thresh": "1",
                "undershoot-pct": "100",
                "error-resilient": "1",
            }
        self._size = (width, height)
        self._want_key = True
        return ctx

    def encode(self, frame: VideoFrame, pts: int) -> list[tuple[av.Packet, bool]]:
        """Encode one frame (producer thread); return ``(packet, is_keyframe)`` pairs."""
        with self._lock:
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            if self._ctx is None or self._size != (frame.width, frame.height):
                self._ctx = self._open(frame.width, frame.height)
            key, self._want_key = self._want_key, False
            frame.pts = pts
            frame.time_base = TIME_BASE
            # Sources may hand frames marked I (lavfi does); only our requests force keyframes.
            frame.pict_type = PictureType.I if key else PictureType.NONE
            out: list[tuple[av.Packet, bool]] = []
            for packet in self._ctx.encode(frame):
                packet.pts = pts
                packet.dts = pts
                packet.time_base = TIME_BASE
                is_key = bool(packet.is_keyframe)
                out.append((packet, is_key))
                self.frames += 1
                self.keyframes += is_key
                self.bytes += packet.size
            return out

    def close(self) -> None:
        with self._lock:
            self._ctx = None
