"""Configuration of the media role: one frozen dataclass, read from the environment at the edge.

Fields are read from ``LIVEROOM_MEDIA_<FIELD>`` (e.g. ``LIVEROOM_MEDIA_WIDTH=640``); anything
the process-wide ``Settings`` already holds (secret, Redis, counter intervals) is taken from
there, never duplicated here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from engine.errors import LiveroomError

CODECS = ("H264", "VP8")


@dataclass(frozen=True, slots=True)
class MediaSettings:
    # -- what a room's encoder produces (test pattern and WHIP ingest)
    width: int = 1280
    """Width of the generated test pattern (WHIP ingest keeps the host's size)."""
    height: int = 720
    """Height of the generated test pattern."""
    fps: int = 30
    """Frame rate of the test pattern, and the most a WHIP ingest is encoded at."""
    bitrate: int = 1_500_000
    """Target bits per second of each room encoder."""
    keyframe_interval_s: float = 1.0
    """Seconds between keyframes: how long a new or lagging viewer waits at most (1-2 s)."""
    codecs: str = "H264,VP8"
    """Video codecs offered, most preferred first (H264 = constrained baseline)."""
    vp8_cpu_used: int = 12
    """libvpx speed (higher is faster and blurrier; 16 is the fastest)."""
    encoder_threads: int = 1
    """Threads per encoder (0: the codec decides). One media process per core wants 1: more
    threads on one core only contend, and 720p30 ultrafast H.264 takes ~5 ms per frame."""
    shared_encoder: bool = True
    """One encoder per room and codec, shared by every viewer. False encodes per viewer: only
    for the benchmark's comparison, never in production."""

    # -- fan-out
    viewer_queue_frames: int = 30
    """Frames a viewer may fall behind the room before it skips to the next keyframe."""
    keyframe_request_gap_s: float = 0.5
    """Least time between keyframes forced by joins and PLIs (keyframe storms are costly)."""

    # -- limits
    max_sessions: int = 500
    """WHEP sessions one media process holds before answering 503."""
    max_sessions_per_user: int = 3
    """WHEP sessions one user may hold in one room (429 beyond)."""
    max_sdp_bytes: int = 64 * 1024
    """Largest SDP body accepted (413 beyond)."""
    connect_timeout_s: float = 20.0
    """A session whose ICE/DTLS does not connect in this time is ended."""
    idle_stop_s: float = 5.0
    """A built-in source keeps running this long after its last viewer leaves."""

    # -- network
    ice_servers: str = ""
    """Comma-separated STUN/TURN URLs for the server's ICE agent (empty: host candidates)."""

    def codec_list(self) -> tuple[str, ...]:
        return tuple(c.strip().upper() for c in self.codecs.split(",") if c.strip())

    def check(self) -> MediaSettings:
        if not self.codec_list() or any(c not in CODECS for c in self.codec_list()):
            raise LiveroomError(f"media codecs must be among {', '.join(CODECS)}")
        if not 1 <= self.fps <= 60:
            raise LiveroomError("media fps must be 1-60")
        if self.width % 2 or self.height % 2 or not (16 <= self.width <= 3840):
            raise LiveroomError("media width and height must be even, 16-3840")
        if not 0.2 <= self.keyframe_interval_s <= 10:
            raise LiveroomError("media keyframe interval must be 0.2-10 s")
        if self.viewer_queue_frames < 2:
            raise LiveroomError("media viewer queue must hold at least 2 frames")
        return self

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.fps * self.keyframe_interval_s))

    def with_(self, **changes: Any) -> MediaSettings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> MediaSettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        defaults = cls()
        for f in fields(cls):
            raw = env.get("LIVEROOM_MEDIA_" + f.name.upper())
            if raw is None:
                continue
            typ = type(getattr(defaults, f.name))
            if typ is bool:
                values[f.name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            else:
                values[f.name] = typ(raw)
        return cls(**values).check()
