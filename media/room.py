"""One room's media in this process: its source, its encoders, its feeds.

A room has at most one source at a time: the host's WHIP ingest when there is one, else the
room's built-in source (pattern or file), else nothing. Raw frames (pattern, WHIP) are encoded
once per codec that has viewers; encoded packets (file) go straight to the feed of their codec.
Switching sources (a new ingest replacing the old one) never touches the feeds, so viewers keep
their sessions and only see the next keyframe.

All encoding for a room happens in one worker thread, so that a codec context is never used by
two threads and the event loop only hands frames over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from av.video.frame import VideoFrame

from engine.ids import RoomId
from media.encoder import TIME_BASE, Packetizer, VideoEncoder
from media.fanout import EncodedFrame, Feed
from media.settings import MediaSettings
from media.sources import IngestSource, Source, SourceItem, open_builtin

log = logging.getLogger("liveroom.media")

FeedKey = tuple[str, str | None]
"""(codec, owner): owner is None for the room's shared feed, a session id when encoding per
viewer (the benchmark's comparison mode)."""


@dataclass(slots=True)
class RoomCounters:
    frames_in: int = 0
    frames_encoded: int = 0
    frames_dropped: int = 0
    encode_s: float = 0.0
    sources: list[str] = field(default_factory=list)


class RoomMedia:
    def __init__(
        self,
        room: RoomId,
        settings: MediaSettings,
        builtin: dict | None,
        *,
        on_idle: Callable[[RoomMedia], None] = lambda _: None,
    ) -> None:
        self.room = room
        self.settings = settings
        self.builtin_spec = builtin
        self.feeds: dict[FeedKey, Feed] = {}
        self.encoders: dict[FeedKey, VideoEncoder] = {}
        self.packetizers: dict[FeedKey, Packetizer] = {}
        self.ingest: IngestSource | None = None
        self.ingest_owner: str | None = None
        self.counters = RoomCounters()
        self._builtin: Source | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"media-{room}"[:15])
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._on_idle = on_idle
        self._clock0 = time.monotonic()
        self._last_pts = -1
        self._last_raw_at = -1e9
        self.closed = False

    # -- what the room offers --------------------------------------------------------------

    @property
    def source(self) -> Source | None:
        """The source viewers get now."""
        if self.ingest is not None:
            return self.ingest
        return self._builtin_source()

    def _builtin_source(self) -> Source | None:
        if self._builtin is None and self.builtin_spec is not None:
            s = self.settings
            self._builtin = open_builtin(self.builtin_spec, s.width, s.height, s.fps, self._worker)
        return self._builtin

    @property
    def publishing(self) -> bool:
        return self.ingest is not None or self.builtin_spec is not None

    def allowed_codecs(self) -> tuple[str, ...]:
        """Codecs a new viewer may get: an encoded source fixes its own."""
        src = self.source
        if src is not None and src.codec is not None:
            return (src.codec,)
        return self.settings.codec_list()

    def running_codecs(self) -> set[str]:
        return {codec for (codec, _), feed in self.feeds.items() if feed.viewers}

    @property
    def encoder_count(self) -> int:
        return len(self.encoders)

    @property
    def viewer_count(self) -> int:
        return sum(len(f.viewers) for f in self.feeds.values())

    def set_builtin(self, spec: dict | None) -> None:
        if spec == self.builtin_spec:
            return
        old, self._builtin, self.builtin_spec = self._builtin, None, spec
        if old is not None:
            old.close()
        self._restart()

    # -- viewers -------------------------------------------------------------------------------

    def feed(self, codec: str, owner: str | None = None) -> Feed:
        """The feed a new viewer of ``codec`` reads (created with its encoder if needed)."""
        key: FeedKey = (codec, None if self.settings.shared_encoder else owner)
        feed = self.feeds.get(key)
        if feed is None:
            feed = Feed(codec, self.settings.viewer_queue_frames)
            self.feeds[key] = feed
            self.packetizers[key] = Packetizer(codec)
        if key not in self.encoders and self._needs_encoder(codec):
            self.encoders[key] = self._encoder(codec, feed)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._ensure_running()
        return feed

    def _needs_encoder(self, codec: str) -> bool:
        src = self.source
        return src is None or src.codec is None  # raw sources (and WHIP yet to come) encode

    def _encoder(self, codec: str, feed: Feed) -> VideoEncoder:
        enc = VideoEncoder(codec, self.settings)
        feed._request_keyframe = lambda: enc.request_keyframe(time.monotonic())
        return enc

    def release(self, feed: Feed) -> None:
        """Called when a viewer of ``feed`` left: drop feeds and encoders nobody watches."""
        for key, f in list(self.feeds.items()):
            if f is feed and not f.viewers:
                del self.feeds[key]
                self.packetizers.pop(key, None)
                enc = self.encoders.pop(key, None)
                if enc is not None:
                    self._worker.submit(enc.close)
        if not self.viewer_count and self.ingest is None:
            self._schedule_idle()

    def _schedule_idle(self) -> None:
        if self._idle is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.settings.idle_stop_s, self._went_idle)

    def _went_idle(self) -> None:
        self._idle = None
        if not self.viewer_count and self.ingest is None:
            self._stop_task()
            if self._builtin is not None:
                self._builtin.close()
                self._builtin = None
            self._on_idle(self)

    # -- WHIP ------------------------------------------------------------------------------------

    def set_ingest(self, owner: str, source: IngestSource) -> None:
        """A host's ingest becomes the room's source (replacing any other)."""
        old = self.ingest
        self.ingest, self.ingest_owner = source, owner
        if old is not None:
            old.close()
        self._restart()

    def clear_ingest(self, owner: str) -> None:
        """The ingest of session ``owner`` ended (a newer one may already have replaced it)."""
        if self.ingest_owner != owner:
            return
        if self.ingest is not None:
            self.ingest.close()
        self.ingest, self.ingest_owner = None, None
        self._restart()
        if not self.viewer_count:
            self._schedule_idle()

    # -- the pipeline --------------------------------------------------------------------------

    def _restart(self) -> None:
        self._stop_task()
        for key, feed in self.feeds.items():
            # A new source: raw ones need encoders for every watched codec, encoded ones none.
            if self._needs_encoder(key[0]):
                if key not in self.encoders:
                    self.encoders[key] = self._encoder(key[0], feed)
                self.encoders[key].force_keyframe()
            else:
                enc = self.encoders.pop(key, None)
                if enc is not None:
                    self._worker.submit(enc.close)
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self.closed or (self._task is not None and not self._task.done()):
            return
        if self.ingest is None and not self.feeds:
            return  # a built-in source runs only while someone watches
        if self.source is None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"media-room-{self.room}"
        )

    def _stop_task(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        src = self.source
        if src is None:
            return
        self.counters.sources.append(src.name)
        try:
            while True:
                item = await src.next()
                if item is None:
                    break
                self.counters.frames_in += 1
                if item.packet is not None:
                    self._deliver_packet(item)
                elif item.frame is not None:
                    await self._encode(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("media source of room %s failed", self.room)
        if src is self.ingest and self.ingest_owner is not None:
            self.clear_ingest(self.ingest_owner)

    def _pts(self, at: float) -> int:
        pts = max(round((at - self._clock0) * TIME_BASE.denominator), self._last_pts + 1)
        self._last_pts = pts
        return pts

    def _deliver_packet(self, item: SourceItem) -> None:
        packet = item.packet
        assert packet is not None
        pts = self._pts(item.at)
        data = bytes(packet)
        for key, feed in self.feeds.items():
            if key[0] == self.source.codec and feed.viewers:  # type: ignore[union-attr]
                payloads = self.packetizers[key].payloads(data)
                feed.publish(EncodedFrame(payloads, pts, item.keyframe, len(data)))

    async def _encode(self, item: SourceItem) -> None:
        frame = item.frame
        assert frame is not None
        work = [
            (e, self.feeds[k], self.packetizers[k])
            for k, e in self.encoders.items()
            if self.feeds[k].viewers
        ]
        if not work:
            self.counters.frames_dropped += 1
            return
        if item.at - self._last_raw_at < 0.9 / self.settings.fps:
            self.counters.frames_dropped += 1  # a host sending above our frame rate
            return
        self._last_raw_at = item.at
        pts = self._pts(item.at)
        s = self.settings

        def encode_all() -> tuple[list[tuple[Feed, list[EncodedFrame]]], float]:
            t0 = time.perf_counter()
            f = frame
            if f.width > s.width or f.height > s.height:
                scale = min(s.width / f.width, s.height / f.height)
                f = f.reformat(
                    width=int(f.width * scale) // 2 * 2,
                    height=int(f.height * scale) // 2 * 2,
                    format="yuv420p",
                )
            out = []
            for enc, feed, packetizer in work:
                frames = [
                    EncodedFrame(packetizer.payloads(bytes(p)), pts, key, p.size)
                    for p, key in enc.encode(f, pts)
                ]
                out.append((feed, frames))
            return out, time.perf_counter() - t0

        loop = asyncio.get_running_loop()
        results, spent = await loop.run_in_executor(self._worker, encode_all)
        self.counters.encode_s += spent
        for feed, frames in results:
            for encoded in frames:
                feed.publish(encoded)
                self.counters.frames_encoded += 1

    async def close(self) -> None:
        self.closed = True
        self._stop_task()
        if self._idle is not None:
            self._idle.cancel()
        if self.ingest is not None:
            self.ingest.close()
        if self._builtin is not None:
            self._builtin.close()
        for feed in self.feeds.values():
            for track in list(feed.viewers):
                track.stop()
        self.feeds.clear()
        self.encoders.clear()
        self.packetizers.clear()
        self._worker.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict:
        src = self.source
        return {
            "source": src.name if src is not None else None,
            "codec": src.codec if src is not None else None,
            "viewers": self.viewer_count,
            "encoders": self.encoder_count,
            "feeds": {
                f"{codec}{'' if owner is None else ':' + owner}": {
                    "viewers": len(feed.viewers),
                    "frames": feed.frames,
                    "skips": sum(t.cursor.skips for t in feed.viewers if t.cursor is not None),
                }
                for (codec, owner), feed in self.feeds.items()
            },
            "late_ticks": getattr(self._builtin, "late", 0),
            "frames_in": self.counters.frames_in,
            "frames_encoded": self.counters.frames_encoded,
            "encode_ms_per_frame": round(
                1000 * self.counters.encode_s / max(1, self.counters.frames_encoded), 3
            ),
        }


__all__ = ["FeedKey", "RoomMedia", "VideoFrame"]
