"""A room's sound: Opus at 48 kHz in 20 ms packets, encoded at most once per room.

- ``Tone`` is the pure core of the pattern's sound: sample ``i`` of a sine tone, with a click
  (10 ms of a loud 1 kHz burst) at every whole second of the room clock. The pattern's frame
  ``n`` is shown at second ``n / fps`` of the same clock, so frame ``k * fps`` and the ``k``-th
  click belong together: a viewer that measures both measures its audio-video offset.
- ``ToneSource`` paces the tone on a producer thread (``Paced`` at 50 packets/s, sharing its
  start with the video clock); ``OpusEncoder`` encodes it (libopus, once per room).
- ``RtpClock`` maps a WHIP publisher's audio RTP timestamps onto the room clock, so that its
  Opus packets are passed through untouched (no decode, no re-encode) with timestamps that
  stay in step with the room's video.
"""

from __future__ import annotations

import fractions
import functools
import math
import threading
from array import array
from dataclasses import dataclass

import av
from av.audio.frame import AudioFrame

RATE = 48_000
"""The Opus clock (RTP audio timestamps count samples at this rate)."""
PACKET_SAMPLES = 960
"""20 ms: one Opus packet."""
PACKETS_PER_S = RATE // PACKET_SAMPLES
CLICK_SAMPLES = 480
"""10 ms of click at each whole second."""
CLICK_HZ = 1_000
TONE_LEVEL = 0.2
CLICK_LEVEL = 0.9
TIME_BASE = fractions.Fraction(1, RATE)


@dataclass(frozen=True, slots=True)
class Tone:
    """The pattern's sound as a pure function of the sample index (no I/O, no clock)."""

    hz: int = 440

    def samples(self, start: int, count: int = PACKET_SAMPLES) -> array:
        """Mono signed 16-bit samples ``start .. start + count``. The sound repeats every
        second (an integer tone over a whole second), so it is one table, sliced."""
        second = _one_second(self.hz)
        i = start % RATE
        out = second[i : i + count]
        while len(out) < count:
            out += second[: count - len(out)]
        return out


@functools.lru_cache(maxsize=8)
def _one_second(hz: int) -> array:
    w_tone, w_click = 2 * math.pi * hz / RATE, 2 * math.pi * CLICK_HZ / RATE
    return array(
        "h",
        (
            int(
                32767
                * (
                    CLICK_LEVEL * math.sin(w_click * i)
                    if i < CLICK_SAMPLES
                    else TONE_LEVEL * math.sin(w_tone * i)
                )
            )
            for i in range(RATE)
        ),
    )


def click_onsets(samples: list[float] | array, threshold: float = 0.5) -> list[int]:
    """Sample indexes where a click starts (a run above ``threshold`` of full scale after at
    least 0.5 s below it): what a tester reads back from decoded sound."""
    limit = threshold * 32767 if isinstance(samples, array) else threshold
    onsets: list[int] = []
    quiet_since = -RATE
    for i, v in enumerate(samples):
        if abs(v) >= limit:
            if i - quiet_since >= RATE // 2:
                onsets.append(i)
            quiet_since = i
    return onsets


@dataclass(slots=True)
class AudioItem:
    at: float
    """Room-clock time of the packet's first sample (monotonic seconds)."""
    frame: AudioFrame


class ToneSource:
    """The pattern's sound, paced on a producer thread: one 20 ms frame per tick."""

    def __init__(self, tone: Tone, clock: object) -> None:
        self.tone = tone
        self.clock = clock  # a ``media.sources.Paced`` at 50 ticks/s, started with the video

    def next(self, stop: threading.Event) -> AudioItem | None:
        at = self.clock.wait(stop)  # type: ignore[attr-defined]
        if at is None:
            return None
        n = self.clock.n - 1  # type: ignore[attr-defined]
        frame = AudioFrame(format="s16", layout="mono", samples=PACKET_SAMPLES)
        frame.planes[0].update(self.tone.samples(n * PACKET_SAMPLES).tobytes())
        frame.sample_rate = RATE
        return AudioItem(at, frame)


class OpusEncoder:
    """One libopus context for a room's sound: 20 ms mono frames in, one packet each out."""

    def __init__(self, bitrate: int) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.bit_rate = bitrate
        ctx.format = "s16"
        ctx.layout = "mono"
        ctx.sample_rate = RATE
        ctx.time_base = TIME_BASE
        ctx.options = {"application": "audio", "frame_duration": "20"}
        self._ctx = ctx
        self._lock = threading.Lock()
        self._n = 0
        self.packets = 0

    def encode(self, frame: AudioFrame) -> list[bytes]:
        with self._lock:
            frame.pts = self._n * PACKET_SAMPLES
            frame.time_base = TIME_BASE
            self._n += 1
            out = [bytes(p) for p in self._ctx.encode(frame)]
            self.packets += len(out)
            return out


class RtpClock:
    """A publisher's RTP timestamps (48 kHz, random origin) on the room clock: the first packet
    is placed at its arrival time, every later one keeps the publisher's own spacing (silence
    suppression and packet sizes included)."""

    def __init__(self) -> None:
        self._offset: int | None = None

    def room_timestamp(self, rtp_timestamp: int, arrival_s: float) -> int:
        """``arrival_s``: seconds on the room clock when the packet arrived."""
        if self._offset is None:
            self._offset = round(arrival_s * RATE) - rtp_timestamp
        return (rtp_timestamp + self._offset) % (1 << 32)
