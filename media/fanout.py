"""Encode once, send many: one room stream's encoded frames, read by every viewer's sender.

``FrameRing`` is the pure core: the last ``capacity`` encoded frames of a stream, numbered, and
a ``Cursor`` per viewer. A viewer's backlog is the distance from its cursor to the newest frame,
so it is bounded by ``capacity`` without a copy per viewer: a viewer that falls further behind
(its next frame was overwritten) is moved to the live edge and waits for the next keyframe,
instead of growing memory or pacing the room. New viewers also start at a keyframe.

``Feed`` and ``ViewerTrack`` are the asyncio side: a feed wakes every waiting viewer once per
published frame; a viewer track is what aiortc's ``RTCRtpSender`` reads. Frames are published
already cut into RTP payloads (``EncodedFrame``), and each viewer's sender is given a
``SharedPacker`` in place of its encoder, so a sender neither encodes nor re-cuts: it only adds
its own RTP header and SRTP. aiortc's ``MediaRelay`` keeps an unbounded queue per consumer;
this must never do that.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.rtc import take_over_sender

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded frame of a room stream, cut into RTP payloads once for every viewer."""

    payloads: list[bytes]
    timestamp: int
    """RTP timestamp (90 kHz room clock); each sender adds its own random origin."""
    keyframe: bool
    size: int


class SharedPacker:
    """Stands in for the encoder of a viewer's ``RTCRtpSender`` (aiortc calls ``pack`` for
    anything that is not a raw frame): frames come encoded and cut, so packing is handing over.
    """

    def pack(self, frame: EncodedFrame) -> tuple[list[bytes], int]:
        return frame.payloads, frame.timestamp

    def encode(self, frame: object, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise TypeError("a shared feed never hands raw frames to a viewer's sender")


def attach_sender(sender: RTCRtpSender, feed: Feed, *, lean: bool = True) -> None:
    """Make ``sender`` a pure writer of ``feed``: no encoder of its own (aiortc creates one
    lazily, only if none is set), and keyframe requests (PLI/FIR) go to the room's encoder,
    which rate-limits them. With ``lean`` (the default) it also runs ``shared_sender``'s
    leaner RTP loop: header, SRTP, send. All are aiortc 1.x internals (media/rtc.py), covered
    by the media tests."""
    take_over_sender(sender, SharedPacker(), feed.request_keyframe, lean=lean)


@dataclass(slots=True)
class Cursor:
    """Where one viewer is in a stream."""

    next_seq: int
    """Number of the next frame this viewer wants."""
    need_key: bool = True
    """Waiting for a keyframe (new viewer, or one that fell behind)."""
    skips: int = 0
    """How often this viewer fell behind and skipped to a keyframe."""
    delivered: int = 0
    """Frames handed to this viewer."""


class FrameRing(Generic[T]):
    """The last ``capacity`` frames of one encoded stream (no I/O, no clock)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("a frame ring holds at least 2 frames")
        self.capacity = capacity
        self._frames: deque[tuple[T, bool]] = deque(maxlen=capacity)
        self.next_seq = 0
        """Number the next published frame gets."""

    @property
    def first_seq(self) -> int:
        """Number of the oldest frame still held."""
        return self.next_seq - len(self._frames)

    def publish(self, frame: T, keyframe: bool) -> int:
        self._frames.append((frame, keyframe))
        self.next_seq += 1
        return self.next_seq - 1

    def cursor(self) -> Cursor:
        """A cursor for a viewer joining now: it starts at the next keyframe."""
        return Cursor(self.next_seq)

    def read(self, cur: Cursor) -> T | None:
        """The viewer's next frame, or None when it must wait for one."""
        first = self.first_seq
        if cur.next_seq < first:
            # Fell behind by more than the ring holds: skip to the live edge, next keyframe.
            cur.skips += 1
            cur.need_key = True
            cur.next_seq = self.next_seq
            return None
        if cur.need_key:
            for seq in range(cur.next_seq, self.next_seq):
                frame, key = self._frames[seq - first]
                if key:
                    cur.need_key = False
                    cur.next_seq = seq + 1
                    cur.delivered += 1
                    return frame
            cur.next_seq = self.next_seq
            return None
        if cur.next_seq >= self.next_seq:
            return None
        frame, _ = self._frames[cur.next_seq - first]
        cur.next_seq += 1
        cur.delivered += 1
        return frame


class Feed:
    """One encoded stream of a room (a codec), shared by its viewers' tracks."""

    def __init__(
        self,
        codec: str,
        capacity: int,
        request_keyframe: Callable[[], None] = lambda: None,
    ) -> None:
        self.codec = codec
        self.ring: FrameRing[EncodedFrame] = FrameRing(capacity)
        self.viewers: set[ViewerTrack] = set()
        self._changed = asyncio.Event()
        self._request_keyframe = request_keyframe
        self.frames = 0

    def publish(self, frame: EncodedFrame) -> None:
        self.ring.publish(frame, frame.keyframe)
        self.frames += 1
        # Event.set() resolves every waiter's own future; clear() re-arms it for the next frame.
        self._changed.set()
        self._changed.clear()

    async def wait(self) -> None:
        await self._changed.wait()

    def wake(self) -> None:
        self._changed.set()
        self._changed.clear()

    def request_keyframe(self) -> None:
        """A viewer needs a keyframe now (join, PLI/FIR, skip); the encoder rate-limits these."""
        self._request_keyframe()


class ViewerTrack(MediaStreamTrack):
    """What one viewer's ``RTCRtpSender`` reads: the feed's packets, from its own cursor."""

    kind = "video"

    def __init__(self, feed: Feed) -> None:
        super().__init__()
        self.feed = feed
        self.cursor: Cursor | None = None
        self.first_frame_at: float | None = None
        feed.viewers.add(self)

    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        feed = self.feed
        if self.cursor is None:
            # Start at the live edge once the sender runs (after ICE and DTLS), not when the
            # session was created: the frames in between were never sendable.
            self.cursor = feed.ring.cursor()
            feed.request_keyframe()
        cur = self.cursor
        while True:
            skips = cur.skips
            frame = feed.ring.read(cur)
            if frame is not None:
                if self.first_frame_at is None:
                    self.first_frame_at = time.monotonic()
                return frame
            if cur.skips != skips:
                feed.request_keyframe()
            await feed.wait()
            if self.readyState != "live":
                raise MediaStreamError

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self.feed.viewers.discard(self)
            self.feed.wake()


class AudioViewerTrack(ViewerTrack):
    """The room's sound for one viewer: the same shared feed, read the same way (every Opus
    packet stands alone, so a lagging listener resumes at the live edge at once)."""

    kind = "audio"
