"""WHEP egress (§6) with real aiortc viewers against a real media process: frames that move,
one encoder per room however many viewers, viewer counts in Redis, file sources."""

from __future__ import annotations

import asyncio
import fractions
import time
from pathlib import Path

import av
import httpx
from redis.asyncio import Redis

from engine.ids import RoomId
from media.counts import media_viewers
from media.sources import PatternSource
from tests.media.support import WhepViewer, av_offsets, create_room, media_stats, wait_for
from tests.support import ADMIN, Proc, token, unique


async def test_viewer_decodes_two_seconds_of_moving_pattern(media_proc: Proc) -> None:
    room = unique("whep")
    await create_room(media_proc.http_url, room, media={"source": "pattern"})
    v = await WhepViewer(media_proc.http_url, room, token("alice")).start()
    try:
        assert v.location is not None and v.location.startswith("/whep/sessions/")
        await wait_for(
            lambda: _ready(len(v.frames) > 1 and v.frames[-1].at - v.frames[0].at >= 2.2),
            timeout=15,
        )
        frames = list(v.frames)
        span = frames[-1].at - frames[0].at
        counters = [f.counter for f in frames]
        # The pattern's frame number moves forward with time: nothing is frozen or replayed.
        assert counters == sorted(counters), counters[:50]
        assert counters[-1] - counters[0] >= 0.8 * 30 * span
        assert len({f.digest for f in frames}) >= 0.9 * len(frames)
        assert frames[0].size == (320, 240)
    finally:
        r = await v.delete()
        await v.close()
    assert r.status_code == 200 and r.json()["ended"] is True
    assert (await media_stats(media_proc.http_url, room))["viewers"] == 0


async def test_five_viewers_share_one_encoder(media_proc: Proc) -> None:
    room = unique("five")
    await create_room(media_proc.http_url, room, media={"source": "pattern"})
    viewers = [WhepViewer(media_proc.http_url, room, token(f"v{i}")) for i in range(5)]
    await asyncio.gather(*(v.start() for v in viewers))
    try:
        await asyncio.gather(*(v.wait_frames(20) for v in viewers))
        samples = []
        for _ in range(5):
            samples.append(await media_stats(media_proc.http_url, room))
            await asyncio.sleep(0.2)
        assert [s["viewers"] for s in samples] == [5] * 5
        assert [s["encoders"] for s in samples] == [1] * 5
        assert {s["codec"] for s in samples[-1]["sessions"]} == {"H264"}
        # Every viewer gets the same encoded stream: the same frame numbers, in order.
        seen = [{f.counter for f in v.frames} for v in viewers]
        assert set.intersection(*seen), "viewers saw disjoint frames"
        # The process-wide gauge agrees (it also counts other rooms' encoders, if any).
        async with httpx.AsyncClient(base_url=media_proc.http_url) as c:
            text = (await c.get("/metrics")).text
        process = await media_stats(media_proc.http_url)
        assert process["rooms"][room]["encoders"] == 1
        assert f"liveroom_media_encoders {float(process['encoders'])}" in text
    finally:
        await asyncio.gather(*(v.delete() for v in viewers))
        await asyncio.gather(*(v.close() for v in viewers))
    stats = await media_stats(media_proc.http_url, room)
    assert stats["viewers"] == 0 and stats["encoders"] == 0


async def test_a_viewer_hears_the_pattern_tone_and_sees_its_frames(media_proc: Proc) -> None:
    """Both tracks, decoded: the tone's energy and the moving frame counter, for >= 3 s."""
    room = unique("audio")
    await create_room(media_proc.http_url, room, media={"source": "pattern"})
    v = await WhepViewer(media_proc.http_url, room, token("ears"), audio=True).start()
    try:
        assert v.answer is not None
        audio = v.answer.split("m=audio", 1)[1].split("m=video", 1)[0]
        assert "a=sendonly" in audio and "opus/48000" in audio.lower()
        await v.wait_frames(1)
        t0 = time.monotonic()
        await asyncio.sleep(3.2)
        seen, heard = v.frames_after(t0), [h for h in v.sound if h.at > t0]
        assert len(seen) >= 60 and seen[-1].counter > seen[0].counter  # moving video
        assert sum(len(h.samples) for h in heard) >= 3 * 48_000 * 0.9  # >= 3 s of sound
        # The tone is at 0.2 of full scale (RMS 0.14) with a click each second: loud, and no
        # louder than the click. Silence would be ~0.
        assert 0.08 < v.loudness(t0) < 0.5
        stats = await media_stats(media_proc.http_url, room)
        assert stats["audio"]["viewers"] == 1 and stats["encoders"] == 1
    finally:
        await v.delete()
        await v.close()


async def test_sound_and_picture_are_in_step(media_proc: Proc) -> None:
    """The pattern clicks at each whole second of the room clock, when the frame counter passes
    a multiple of the frame rate. The viewer notes when each arrives (decoded): the click of
    second k against frame 30k is the audio-video offset a player would show."""
    room = unique("sync")
    await create_room(media_proc.http_url, room, media={"source": "pattern"})
    v = await WhepViewer(media_proc.http_url, room, token("lips"), audio=True).start()
    try:
        await v.wait_frames(1)
        await asyncio.sleep(5.5)
        offsets = av_offsets(v, fps=30)
        print("audio-video offsets (s):", offsets)
        assert len(offsets) >= 3, offsets
        worst = max(abs(o) for o in offsets)
        assert worst <= 0.080, f"audio-video offsets (s): {offsets}"
    finally:
        await v.delete()
        await v.close()


async def test_media_viewers_are_counted_in_redis(media_proc: Proc, redis: Redis) -> None:
    room = unique("count")
    await create_room(media_proc.http_url, room, media={"source": "pattern"})
    v = await WhepViewer(media_proc.http_url, room, token("counted")).start()

    async def total() -> int:
        return await media_viewers(redis, RoomId(room), int(time.time() * 1000))

    async def api_count() -> int:
        async with httpx.AsyncClient(base_url=media_proc.http_url) as c:
            r = await c.get(f"/api/rooms/{room}", headers={"Authorization": f"Bearer {ADMIN}"})
        return r.json()["media_viewers"]

    try:
        assert await wait_for(lambda: _value(total(), 1), timeout=3)
        assert await api_count() == 1  # the room record shows it (PROTOCOL.md §3 counters)
    finally:
        await v.delete()
        await v.close()
    assert await wait_for(lambda: _value(total(), 0), timeout=3)
    assert await api_count() == 0


async def test_vp8_viewer_gets_vp8_while_h264_viewers_share_theirs(media_proc: Proc) -> None:
    room = unique("codecs")
    await create_room(media_proc.http_url, room, media={"source": "pattern"})
    h264 = await WhepViewer(media_proc.http_url, room, token("h"), codecs=("H264",)).start()
    vp8 = await WhepViewer(media_proc.http_url, room, token("v"), codecs=("VP8",)).start()
    either = await WhepViewer(media_proc.http_url, room, token("e")).start()
    try:
        await asyncio.gather(*(x.wait_frames(10) for x in (h264, vp8, either)))
        stats = await media_stats(media_proc.http_url, room)
        codecs = sorted(s["codec"] for s in stats["sessions"])
        # The viewer that takes either codec joins a running encoder instead of starting one.
        assert codecs == ["H264", "H264", "VP8"] or codecs == ["H264", "VP8", "VP8"]
        assert stats["encoders"] == 2
        assert "VP8/90000" in vp8.answer and "H264/90000" not in vp8.answer  # type: ignore[operator]
    finally:
        for x in (h264, vp8, either):
            await x.delete()
            await x.close()


def _write_file(path: Path, codec: str, seconds: float = 1.5) -> None:
    """A small file with the numbered pattern: H.264 baseline in MPEG-TS, or VP8 in WebM."""
    fps = 30
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if codec == "H264" else "libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.time_base = fractions.Fraction(1, fps)
        stream.codec_context.gop_size = fps
        if codec == "H264":
            stream.codec_context.profile = "Baseline"
            stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency"}
        else:
            stream.codec_context.options = {"deadline": "realtime", "cpu-used": "16"}
        src = PatternSource(320, 240, fps)
        for n in range(int(seconds * fps)):
            frame = src.render(n)
            frame.pts = n
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


async def test_file_rooms_loop_their_file_without_encoding(
    media_proc: Proc, tmp_path: Path
) -> None:
    for codec, name in (("H264", "clip.ts"), ("VP8", "clip.webm")):
        path = tmp_path / name
        _write_file(path, codec)
        room = unique("file")
        await create_room(media_proc.http_url, room, media={"source": "file", "path": str(path)})
        v = await WhepViewer(media_proc.http_url, room, token("f")).start()
        try:
            # 1.5 s file, watched for longer: it loops (frame numbers restart) and keeps going.
            await wait_for(
                lambda v=v: _ready(len(v.frames) > 1 and v.frames[-1].at - v.frames[0].at > 2.5),
                timeout=15,
            )
            counters = [f.counter for f in v.frames]
            assert any(b < a for a, b in zip(counters, counters[1:], strict=False)), "no loop"
            stats = await media_stats(media_proc.http_url, room)
            assert stats["source"] == "file" and stats["codec"] == codec
            assert stats["encoders"] == 0
            assert stats["sessions"][0]["codec"] == codec
        finally:
            await v.delete()
            await v.close()


async def _ready(value: bool) -> bool:
    return value


async def _value(coro, want: int) -> bool:  # type: ignore[no-untyped-def]
    return await coro == want


async def test_file_rooms_play_their_sound_too(media_proc: Proc, tmp_path: Path) -> None:
    """A file's sound reaches listeners: Opus from WebM as it is, AAC from MPEG-TS encoded to
    Opus once; the pictures still are not encoded at all."""
    from tests.media.test_sources import _write

    for name, video, sound in (("s.webm", "libvpx", "libopus"), ("s.ts", "libx264", "aac")):
        path = tmp_path / name
        _write(path, video, frames=60, sound=sound)
        room = unique("filesound")
        await create_room(media_proc.http_url, room, media={"source": "file", "path": str(path)})
        v = await WhepViewer(media_proc.http_url, room, token("fs"), audio=True).start()
        try:
            await v.wait_frames(10)
            await wait_for(lambda v=v: _ready(v.loudness() > 0.05), timeout=10)
            stats = await media_stats(media_proc.http_url, room)
            assert stats["encoders"] == 0 and stats["audio"]["packets"] > 0
        finally:
            await v.delete()
            await v.close()
