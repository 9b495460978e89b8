"""One room's media in this process: its source, its encoders, its feeds.

A room has at most one source at a time: the host's WHIP ingest when there is one, else the
room's built-in source (pattern or file), else nothing. Raw frames (pattern, WHIP) are encoded
once per codec that has viewers; encoded packets (file) go straight to the feed of their codec.
Switching sources (a new ingest replacing the old one) never touches the feeds, so viewers keep
their sessions and only see the next keyframe.

Producing runs in one thread per room (the *producer*): it waits for the source's next frame on
its own clock, encodes it for every watched codec, cuts the RTP payloads, and hands finished
frames to the event loop in one ``call_soon_threadsafe``. It never waits for the loop, so a loop
busy sending to hundreds of viewers delays frames by one loop iteration at most, and never
slows the frame rate. The loop owns the feeds and the set of encoders; the producer reads an
immutable snapshot of that set (``_work``), replaced whenever it changes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.ids import RoomId
from engine.settings import MediaSettings
from media.audio import PACKET_SAMPLES, RATE, OpusEncoder, RtpClock, ToneSource
from media.encoder import TIME_BASE, Packetizer, VideoEncoder
from media.fanout import EncodedFrame, Feed
from media.sources import IngestSource, Source, SourceItem, open_builtin

log = logging.getLogger("liveroom.media")

FeedKey = tuple[str, str | None]
"""(codec, owner): owner is None for the room's shared feed, a session id when encoding per
viewer (the benchmark's comparison mode)."""

Work = tuple[tuple[Feed, VideoEncoder | None, Packetizer], ...]


@dataclass(slots=True)
class RoomCounters:
    frames_in: int = 0
    frames_encoded: int = 0
    frames_dropped: int = 0
    encode_s: float = 0.0
    audio_packets: int = 0
    """Opus packets published to the room's sound feed (encoded here or passed through)."""
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
        self.audio_feed: Feed | None = None
        """The room's sound (Opus), one feed for every viewer whose offer has audio."""
        self._opus: OpusEncoder | None = None
        self._ingest_clock = RtpClock()
        self.counters = RoomCounters()
        self._builtin: Source | None = None
        self._work: Work = ()
        self._producer: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
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
            self._builtin = open_builtin(
                self.builtin_spec, s.width, s.height, s.fps, s.tone_hz, s.audio_bitrate
            )
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

    @property
    def late_ticks(self) -> int:
        return getattr(getattr(self._builtin, "clock", None), "late", 0)

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
        if key not in self.encoders and self._raw_source():
            self.encoders[key] = self._encoder(codec, feed)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._update_work()
        self._ensure_running()
        return feed

    def audio(self) -> Feed:
        """The feed of the room's sound, read by every viewer that takes audio. Whatever the
        source, it is Opus: encoded here once (the pattern's tone) or passed through."""
        if self.audio_feed is None:
            self.audio_feed = Feed("OPUS", self.settings.audio_queue_frames)
        return self.audio_feed

    def publish_ingest_audio(self, owner: str, payload: bytes, rtp_timestamp: int) -> None:
        """An Opus packet of a host's WHIP session (event loop): passed through untouched,
        on the room clock, to the viewers' shared feed; ignored once that ingest is replaced."""
        feed = self.audio_feed
        if owner != self.ingest_owner or feed is None or not feed.viewers or not payload:
            return
        ts = self._ingest_clock.room_timestamp(rtp_timestamp, time.monotonic() - self._clock0)
        feed.publish(EncodedFrame([payload], ts, True, len(payload)))
        self.counters.audio_packets += 1

    def _raw_source(self) -> bool:
        """Whether the current source needs encoders (pattern, WHIP; not files)."""
        src = self.source
        return src is None or src.codec is None

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
                self.encoders.pop(key, None)
        self._update_work()
        if not self.feeds and self.ingest is None:
            self._schedule_idle()

    def _update_work(self) -> None:
        """Publish a new snapshot of what the producer must make, for its next frame."""
        self._work = tuple(
            (feed, self.encoders.get(key), self.packetizers[key])
            for key, feed in self.feeds.items()
        )

    def _schedule_idle(self) -> None:
        if self._idle is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.settings.idle_stop_s, self._went_idle)

    def _went_idle(self) -> None:
        self._idle = None
        if not self.feeds and self.ingest is None:
            self._stop_producer()
            if self._builtin is not None:
                self._builtin.close()
                self._builtin = None
            self._on_idle(self)

    # -- WHIP ------------------------------------------------------------------------------------

    def set_ingest(self, owner: str, source: IngestSource) -> None:
        """A host's ingest becomes the room's source (replacing any other)."""
        old = self.ingest
        self.ingest, self.ingest_owner = source, owner
        self._ingest_clock = RtpClock()  # a new publisher: its own timestamp origin
        source.start()
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
        if not self.feeds:
            self._schedule_idle()

    # -- the producer ----------------------------------------------------------------------------

    def _restart(self) -> None:
        """A new source: raw ones need an encoder per watched codec, encoded ones none."""
        self._stop_producer()
        raw = self._raw_source()
        for key, feed in self.feeds.items():
            if raw:
                if key not in self.encoders:
                    self.encoders[key] = self._encoder(key[0], feed)
                self.encoders[key].force_keyframe()
            else:
                self.encoders.pop(key, None)
        self._update_work()
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self.closed or self._producer is not None:
            return
        if self.ingest is None and not self.feeds:
            return  # a built-in source runs only while someone watches
        src = self.source
        if src is None:
            return
        self._loop = asyncio.get_running_loop()
        self._generation += 1
        self._stop = stop = threading.Event()
        self.counters.sources.append(src.name)
        start_clocks = getattr(src, "start_clocks", None)
        if start_clocks is not None:
            start_clocks(time.monotonic())  # the pattern's frames and tone, on one clock
        self._producer = threading.Thread(
            target=self._produce,
            args=(src, stop, self._generation),
            name=f"media-{self.room}"[:15],
            daemon=True,
        )
        self._producer.start()
        if src.audio is not None:
            if self._opus is None:
                self._opus = OpusEncoder(self.settings.audio_bitrate)
            threading.Thread(
                target=self._produce_audio,
                args=(src.audio, self._opus, stop, self._generation),
                name=f"audio-{self.room}"[:15],
                daemon=True,
            ).start()

    def _stop_producer(self) -> None:
        # The thread notices at its next wait (at most one frame); it is not joined here, so
        # the event loop never blocks on it. Its last frames, if any, are ignored by generation.
        if self._stop is not None:
            self._stop.set()
        self._producer, self._stop = None, None
        self._generation += 1

    def _produce(self, src: Source, stop: threading.Event, generation: int) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while not stop.is_set():
                item = src.next(stop)
                if item is None:
                    break
                self.counters.frames_in += 1
                frames = self._make(src, item)
                if frames:
                    loop.call_soon_threadsafe(self._publish, generation, frames)
        except Exception:
            log.exception("media source of room %s failed", self.room)
        if not stop.is_set():  # the source ended by itself (a host's ingest went away)
            try:
                loop.call_soon_threadsafe(self._source_ended, generation, src)
            except RuntimeError:
                pass  # the loop is closed: the process is stopping

    def _produce_audio(
        self, src: ToneSource, opus: OpusEncoder, stop: threading.Event, generation: int
    ) -> None:
        """Producer thread of the room's own sound: 20 ms frames on the room clock, encoded
        once (only while someone listens), then handed on like a file's sound (``_make``)."""
        loop = self._loop
        assert loop is not None
        try:
            while not stop.is_set():
                item = src.next(stop)
                if item is None:
                    break
                feed = self.audio_feed
                if feed is None or not feed.viewers:
                    continue
                frames = self._make(src, SourceItem(item.at, sound=opus.encode(item.frame)))
                if frames:
                    loop.call_soon_threadsafe(self._publish, generation, frames)
        except Exception:
            log.exception("the sound of room %s failed", self.room)

    def _pts(self, at: float) -> int:
        pts = max(round((at - self._clock0) * TIME_BASE.denominator), self._last_pts + 1)
        self._last_pts = pts
        return pts

    def _make(self, src: Source | ToneSource, item: SourceItem) -> list[tuple[Feed, EncodedFrame]]:
        """Producer thread: the encoded frames of one source item, for every watched feed."""
        if item.sound is not None:  # a file's sound: Opus already, on the room clock
            feed = self.audio_feed
            if feed is None or not feed.viewers:
                return []
            ts = round((item.at - self._clock0) * RATE)
            self.counters.audio_packets += len(item.sound)
            return [
                (feed, EncodedFrame([p], ts + k * PACKET_SAMPLES, True, len(p)))
                for k, p in enumerate(item.sound)
            ]
        work = self._work
        if not any(feed.viewers for feed, _, _ in work):
            self.counters.frames_dropped += 1
            return []
        if item.packet is not None:
            data = bytes(item.packet)
            pts = self._pts(item.at)
            return [
                (feed, EncodedFrame(pk.payloads(data), pts, item.keyframe, len(data)))
                for feed, enc, pk in work
                if enc is None and feed.codec == src.codec
            ]
        frame = item.frame
        assert frame is not None
        if item.at - self._last_raw_at < 0.9 / self.settings.fps:
            self.counters.frames_dropped += 1  # a host sending above our frame rate
            return []
        self._last_raw_at = item.at
        pts = self._pts(item.at)
        s = self.settings
        if frame.width > s.width or frame.height > s.height:
            scale = min(s.width / frame.width, s.height / frame.height)
            frame = frame.reformat(
                width=int(frame.width * scale) // 2 * 2,
                height=int(frame.height * scale) // 2 * 2,
                format="yuv420p",
            )
        t0 = time.perf_counter()
        out = []
        for feed, enc, pk in work:
            if enc is None or not feed.viewers:
                continue
            for packet, key in enc.encode(frame, pts):
                out.append((feed, EncodedFrame(pk.payloads(bytes(packet)), pts, key, packet.size)))
        self.counters.encode_s += time.perf_counter() - t0
        self.counters.frames_encoded += len(out)
        return out

    def _publish(self, generation: int, frames: list[tuple[Feed, EncodedFrame]]) -> None:
        if generation != self._generation or self.closed:
            return  # a stopped producer's last frame
        for feed, frame in frames:
            feed.publish(frame)

    def _source_ended(self, generation: int, src: Source) -> None:
        if generation != self._generation or self.closed:
            return
        self._producer, self._stop = None, None
        if src is self.ingest and self.ingest_owner is not None:
            self.clear_ingest(self.ingest_owner)

    async def close(self) -> None:
        self.closed = True
        self._stop_producer()
        if self._idle is not None:
            self._idle.cancel()
        if self.ingest is not None:
            self.ingest.close()
        if self._builtin is not None:
            self._builtin.close()
        for feed in (*self.feeds.values(), *([self.audio_feed] if self.audio_feed else [])):
            for track in list(feed.viewers):
                track.stop()
        self.feeds.clear()
        self.audio_feed = None
        self.encoders.clear()
        self.packetizers.clear()
        self._work = ()

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
            "audio": {
                "viewers": len(self.audio_feed.viewers) if self.audio_feed else 0,
                "packets": self.counters.audio_packets,
            },
            "late_ticks": self.late_ticks,
            "frames_in": self.counters.frames_in,
            "frames_encoded": self.counters.frames_encoded,
            "encode_ms_per_frame": round(
                1000 * self.counters.encode_s / max(1, self.counters.frames_encoded), 3
            ),
        }
