"""The shared frame ring (pure): viewers start at a keyframe, a lagging viewer skips to the
next keyframe at the live edge, and memory never grows with a viewer's lag."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from media.fanout import EncodedFrame, Feed, FrameRing, SharedPacker, ViewerTrack, attach_sender
from media.rtc import codec_preferences


def _frame(name: str, key: bool = False) -> EncodedFrame:
    return EncodedFrame([name.encode()], 0, key, len(name))


def _ring(frames: str, capacity: int = 8) -> FrameRing[str]:
    """Frames named by letters; upper case are keyframes."""
    ring: FrameRing[str] = FrameRing(capacity)
    for f in frames:
        ring.publish(f, f.isupper())
    return ring


def _drain(ring: FrameRing[str], cur) -> str:  # type: ignore[no-untyped-def]
    out = ""
    while (f := ring.read(cur)) is not None:
        out += f
    return out


def test_a_new_viewer_starts_at_the_next_keyframe() -> None:
    ring = _ring("Abc")
    cur = ring.cursor()
    assert ring.read(cur) is None  # frames before joining are not replayed
    for f in "deFgh":
        ring.publish(f, f.isupper())
    assert _drain(ring, cur) == "Fgh"
    assert cur.delivered == 3 and cur.skips == 0


def test_viewers_read_the_same_frames_independently() -> None:
    ring = _ring("")
    a, b = ring.cursor(), ring.cursor()
    for f in "Abcd":
        ring.publish(f, f.isupper())
    assert _drain(ring, a) == "Abcd"
    ring.publish("e", False)
    assert _drain(ring, b) == "Abcde"
    assert _drain(ring, a) == "e"


def test_a_lagging_viewer_skips_to_the_next_keyframe_at_the_live_edge() -> None:
    ring = _ring("", capacity=4)
    cur = ring.cursor()
    ring.publish("A", True)
    assert ring.read(cur) == "A"
    for f in "bcdEfgh":  # 7 frames behind with room for 4: "b" is gone
        ring.publish(f, f.isupper())
    assert ring.read(cur) is None
    assert cur.skips == 1 and cur.need_key
    # Even though "E" is still held, the viewer waits for a fresh keyframe: no stale burst.
    assert ring.read(cur) is None
    for f in "iJk":
        ring.publish(f, f.isupper())
    assert _drain(ring, cur) == "Jk"


def test_memory_is_bounded_by_the_ring_not_by_viewers_or_lag() -> None:
    ring = _ring("", capacity=16)
    cursors = [ring.cursor() for _ in range(1000)]
    for i in range(10_000):
        ring.publish(str(i), i % 30 == 0)
    assert len(ring._frames) == 16
    assert all(c.next_seq == 0 for c in cursors)  # a cursor is an int, whatever its lag


def test_ring_needs_room_for_two_frames() -> None:
    with pytest.raises(ValueError):
        FrameRing(1)


async def test_viewer_tracks_wait_and_wake_together() -> None:
    asked: list[int] = []
    feed = Feed("H264", 8, request_keyframe=lambda: asked.append(1))
    tracks = [ViewerTrack(feed) for _ in range(3)]
    pending = [asyncio.ensure_future(t.recv()) for t in tracks]
    await asyncio.sleep(0)
    assert asked == [1, 1, 1]  # each joining viewer asks (the encoder rate-limits)
    feed.publish(_frame("delta"))
    await asyncio.sleep(0)
    assert not any(p.done() for p in pending)
    key = _frame("KEY", True)
    feed.publish(key)
    assert await asyncio.gather(*pending) == [key] * 3
    tracks[0].stop()
    assert tracks[0] not in feed.viewers and len(feed.viewers) == 2
    for t in tracks[1:]:
        t.stop()


async def test_a_viewer_sender_writes_shared_payloads_without_encoding() -> None:
    """aiortc's sender takes our frames as they are: the same payload objects, no encoder."""
    asked: list[int] = []
    feed = Feed("H264", 8, request_keyframe=lambda: asked.append(1))
    pc = RTCPeerConnection()
    track = ViewerTrack(feed)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    transceiver.setCodecPreferences(codec_preferences("H264"))
    sender = transceiver.sender
    attach_sender(sender, feed)
    assert isinstance(sender._RTCRtpSender__encoder, SharedPacker)  # type: ignore[attr-defined]
    codec = [c for c in sender.getCapabilities("video").codecs if c.mimeType == "video/H264"][0]
    pending = asyncio.ensure_future(sender._next_encoded_frame(codec))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    frame = EncodedFrame([b"nal-1", b"nal-2"], 123_000, True, 10)
    feed.publish(frame)
    encoded = await pending
    assert encoded.payloads is frame.payloads and encoded.timestamp == 123_000
    sender._send_keyframe()  # a PLI from this viewer reaches the room encoder
    assert asked == [1, 1]
    track.stop()
    await pc.close()
