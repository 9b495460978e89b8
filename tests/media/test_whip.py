"""WHIP ingest (§6): a host's aiortc track reaches the room's WHEP viewers, decoded once and
encoded once; a new ingest replaces the old one while viewers keep their sessions."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.media.support import (
    Refusal,
    WhepViewer,
    WhipPublisher,
    create_room,
    media_stats,
    wait_for,
)
from tests.support import Proc, token, unique

SECOND = 100_000  # frame numbers of the second publisher start here


async def test_whip_ingest_reaches_viewers_and_survives_replacement(media_proc: Proc) -> None:
    url = media_proc.http_url
    room = unique("live")
    await create_room(url, room)  # no built-in source: the room waits for WHIP
    host = token("host1", "host", rooms=[room])

    with pytest.raises(Refusal) as info:
        await WhepViewer(url, room, token("early")).start()
    assert info.value.status == 409 and info.value.body["error"] == "not_publishing"  # type: ignore[index]

    first = await WhipPublisher(url, room, host, base=0).start()
    viewer = await WhepViewer(url, room, token("watcher")).start()
    second: WhipPublisher | None = None
    try:
        await viewer.wait_frames(30)
        assert all(f.counter < SECOND for f in viewer.frames)
        stats = await media_stats(url, room)
        assert stats["source"] == "whip" and stats["encoders"] == 1

        second = await WhipPublisher(url, room, host, base=SECOND).start()
        t = time.monotonic()
        await wait_for(
            lambda: _ready(any(f.counter >= SECOND for f in viewer.frames_after(t))), timeout=10
        )
        switched = min(f.at for f in viewer.frames_after(t) if f.counter >= SECOND) - t
        n = len(viewer.frames)
        await asyncio.sleep(1.0)
        assert len(viewer.frames) >= n + 20, "frames stopped after the switch"
        assert viewer.frames[-1].counter >= SECOND
        stats = await media_stats(url, room)
        assert stats["sessions"] and {s["kind"] for s in stats["sessions"]} == {"whep", "whip"}
        assert [s["id"] for s in stats["sessions"] if s["kind"] == "whep"] == [
            viewer.location.rsplit("/", 1)[1]  # type: ignore[union-attr]
        ]
        assert len([s for s in stats["sessions"] if s["kind"] == "whip"]) == 1
        assert switched < 5, switched
        # The replaced publisher's session is gone: its DELETE finds nothing.
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.delete(first.location)).status_code == 404  # type: ignore[arg-type]
    finally:
        await viewer.delete()
        await viewer.close()
        await first.close()
        if second is not None:
            async with httpx.AsyncClient(base_url=url) as c:
                assert (await c.delete(second.location)).status_code == 200  # type: ignore[arg-type]
            await second.close()
    stats = await media_stats(url)
    assert stats["sessions"] == {"whep": 0, "whip": 0}


async def test_a_hosts_opus_reaches_viewers_and_a_late_viewer_gets_both(
    media_proc: Proc,
) -> None:
    """WHIP with sound: the host's Opus packets are passed through (one packet in, the same
    packet out to every listener); a viewer joining later gets picture and sound too; a new
    ingest (the host coming back) keeps the viewers' sessions, sound included."""
    url = media_proc.http_url
    room = unique("sound")
    await create_room(url, room)
    host = token("host2", "host", rooms=[room])
    first = await WhipPublisher(url, room, host, tone_hz=440).start()
    early = await WhepViewer(url, room, token("early-ear"), audio=True).start()
    late = back = None
    try:
        await early.wait_frames(10)
        await wait_for(lambda: _ready(early.loudness() > 0.05), timeout=10)
        late = await WhepViewer(url, room, token("late-ear"), audio=True).start()
        await late.wait_frames(10)
        t = time.monotonic()
        await asyncio.sleep(1.5)
        for v in (early, late):
            assert len(v.frames_after(t)) >= 20
            assert v.loudness(t) > 0.05  # the host's tone (0.14 RMS), not silence
        stats = await media_stats(url, room)
        assert stats["audio"]["viewers"] == 2 and stats["audio"]["packets"] > 50

        back = await WhipPublisher(url, room, host, base=SECOND, tone_hz=440).start()
        t = time.monotonic()
        await wait_for(
            lambda: _ready(any(f.counter >= SECOND for f in early.frames_after(t))), timeout=10
        )
        t = time.monotonic()
        await asyncio.sleep(1.0)
        assert early.loudness(t) > 0.05 and late.loudness(t) > 0.05
    finally:
        for v in (early, late):
            if v is not None:
                await v.delete()
                await v.close()
        for p in (first, back):
            if p is not None:
                await p.close()


async def test_an_obs_shaped_offer_goes_live_and_the_host_may_leave_and_come_back(
    media_proc: Proc,
) -> None:
    """OBS 30+ speaks WHIP through libdatachannel: audio first (Opus, 111), H.264 (96), ICE and
    DTLS at session level. Such an offer is taken; a viewer sees and hears it; the host stops
    streaming (DELETE) and starts again, and the viewer's session lasts through both."""
    url = media_proc.http_url
    room = unique("obs")
    await create_room(url, room)
    host = token("obs-host", "host", rooms=[room])
    first = await WhipPublisher(url, room, host, obs=True).start()
    assert first.offer.index("m=audio") < first.offer.index("m=video")
    assert "a=ice-ufrag" not in first.offer.split("m=audio")[1]  # session level only
    viewer = await WhepViewer(url, room, token("obs-fan"), audio=True).start()
    again: WhipPublisher | None = None
    try:
        await viewer.wait_frames(10)
        await wait_for(lambda: _ready(viewer.loudness() > 0.05), timeout=10)
        async with httpx.AsyncClient(base_url=url) as c:  # the host stops streaming
            assert (await c.delete(first.location)).status_code == 200  # type: ignore[arg-type]
        await first.close()
        await asyncio.sleep(2.0)
        stats = await media_stats(url, room)
        assert stats["viewers"] == 1 and stats["source"] is None  # still watching, nothing on

        again = await WhipPublisher(url, room, host, base=SECOND, obs=True).start()
        t = time.monotonic()
        await wait_for(
            lambda: _ready(any(f.counter >= SECOND for f in viewer.frames_after(t))), timeout=10
        )
        t = time.monotonic()
        await asyncio.sleep(1.0)
        assert len(viewer.frames_after(t)) >= 15 and viewer.loudness(t) > 0.05
    finally:
        await viewer.delete()
        await viewer.close()
        if again is not None:
            await again.close()


async def test_only_hosts_publish(media_proc: Proc) -> None:
    url = media_proc.http_url
    room = unique("nohost")
    await create_room(url, room)
    for tok in (token("viewer"), token("other", "host", rooms=["elsewhere"])):
        with pytest.raises(Refusal) as info:
            await WhipPublisher(url, room, tok).start()
        assert info.value.status == 403
    with pytest.raises(Refusal) as info:
        await WhipPublisher(url, unique("nosuch"), token("h", "admin")).start()
    assert info.value.status == 404
    assert (await media_stats(url))["sessions"]["whip"] == 0


async def _ready(value: bool) -> bool:
    return value
