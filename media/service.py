"""The media role: WHEP egress and WHIP ingest with aiortc, one encoder per room.

``MediaService`` owns the process's media sessions and rooms. It admits a session only after
the same checks as the WebSocket gateway (token, room, ``EntitlementCheck``, limits), so a
refused request never creates a peer connection. It follows the revocations stream and ends
the sessions whose access ended within a second, ends previews at ``preview_ends_at``, and
reports its viewer count per room to Redis (``media_viewers``) for the room's stats.

It never encodes per viewer (unless told to for the benchmark's comparison) and never blocks
the event loop on a codec: encoding runs in each room's producer thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from fastapi import FastAPI
from redis.exceptions import RedisError

from engine import keys, scripts
from engine.access import decode_revocation
from engine.bus import RoomReader, last_id
from engine.errors import Forbidden, LiveroomError, NotEntitled, NotFound
from engine.ids import RoomId, is_valid_id
from engine.rooms import Room, RoomStatus
from engine.services import Services
from engine.settings import MediaSettings
from engine.tokens import Identity
from media import metrics
from media.errors import BadSdp, NotPublishing, UnsupportedCodec
from media.fanout import AudioViewerTrack, ViewerTrack, attach_sender
from media.http import mount_routes
from media.room import RoomMedia
from media.rtc import codec_preferences, fast_clock, opus_only, tap_receiver
from media.sdp import WHEP_DIRECTIONS, WHIP_DIRECTIONS, choose_codec, read_offer
from media.sessions import MediaSession, SessionBook, SessionKind, new_session_id
from media.sources import IngestSource

log = logging.getLogger("liveroom.media")


class MediaService:
    def __init__(self, services: Services) -> None:
        settings, redis = services.settings, services.redis
        self.settings = settings
        # Checked here, not in Settings.check: only a process that runs media refuses bad media
        # settings (LIVEROOM_MEDIA_*), as it did when this role read them itself.
        self.media: MediaSettings = settings.media.check()
        self.redis = redis
        self.id = "media-" + uuid.uuid4().hex[:10]
        self.store = services.rooms
        self.access = services.access
        self.book = SessionBook(self.media.max_sessions, self.media.max_sessions_per_user)
        self.rooms: dict[RoomId, RoomMedia] = {}
        self._reader_redis = services.reader_client()
        self.reader = RoomReader(self._reader_redis, redis, self.id, lambda *_: None, settings)
        self._online = scripts.register(redis, "online")
        self._reported: set[RoomId] = set()
        self._report_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retired = {"frames_encoded": 0, "viewer_skips": 0}
        self.revocations_seen = 0
        ice = [u.strip() for u in self.media.ice_servers.split(",") if u.strip()]
        self._rtc_config = RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in ice])
        self.started = False
        fast_clock()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # aioice narrates every connectivity check at INFO: one line per candidate pair.
        logging.getLogger("aioice").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        after = await last_id(self.redis, keys.revocations())
        self.reader.follow(keys.revocations(), after, self._on_revocations)
        self.reader.start()
        self._report_task = asyncio.get_running_loop().create_task(
            self._report_loop(), name="media-counts"
        )
        metrics.watch(self)
        self.started = True
        log.info("media %s ready (codecs %s)", self.id, ",".join(self.media.codec_list()))

    async def stop(self) -> None:
        metrics.unwatch(self)
        await asyncio.gather(
            *(self.close_session(s.id, "server stopping") for s in self.book.all()),
            return_exceptions=True,
        )
        for rm in list(self.rooms.values()):
            await rm.close()
        self.rooms.clear()
        if self._report_task is not None:
            self._report_task.cancel()
            try:
                await self._report_task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self._report_counts(final=True)  # our viewers leave the counts now, not at ttl
        except (RedisError, OSError):
            pass
        await self.reader.stop()
        await self._reader_redis.aclose()
        for t in list(self._tasks):
            t.cancel()

    def mount(self, app: FastAPI) -> None:
        mount_routes(app, self)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- rooms -----------------------------------------------------------------------------

    async def load_room(self, room: str) -> Room:
        if not is_valid_id(room):
            raise NotFound(f"no room {room[:64]!r}")
        return await self.store.get(RoomId(room))

    def _room_media(self, room: Room) -> RoomMedia:
        rm = self.rooms.get(room.id)
        if rm is None:
            rm = RoomMedia(room.id, self.media, room.media, on_idle=self._room_idle)
            self.rooms[room.id] = rm
        else:
            rm.set_builtin(room.media)
        return rm

    def _room_idle(self, rm: RoomMedia) -> None:
        if self.rooms.get(rm.room) is rm and not self.book.in_room(rm.room):
            del self.rooms[rm.room]
            self._retired["frames_encoded"] += rm.counters.frames_encoded
            self._spawn(rm.close())

    # -- WHEP --------------------------------------------------------------------------------

    async def open_whep(self, room_id: str, identity: Identity, body: bytes) -> tuple[str, str]:
        """Admit a viewer and answer its offer: (session id, SDP answer)."""
        room = await self.load_room(room_id)
        now = time.time()
        decision = await self.access.check(room, identity, now=now)
        self.book.admit(room.id, identity.user)
        existing = self.rooms.get(room.id)
        if room.status is RoomStatus.ENDED:
            raise NotPublishing("the room has ended")
        if room.media is None and (existing is None or existing.ingest is None):
            raise NotPublishing("nothing is published in this room yet (waiting for WHIP)")
        offer = read_offer(body, directions=WHEP_DIRECTIONS)
        rm = self._room_media(room)
        try:
            allowed = rm.allowed_codecs()
        except Exception as exc:  # a missing or unplayable file: av raises many kinds
            if not self.book.in_room(room.id):
                self.rooms.pop(room.id, None)
                await rm.close()
            raise NotPublishing(f"the room's media source cannot be played: {exc}") from None
        codec = choose_codec(offer.video_codecs, allowed, rm.running_codecs())

        s = MediaSession(
            new_session_id(), SessionKind.WHEP, room.id, identity, decision.kind, now, codec
        )
        self.book.add(s)  # counted from here: limits hold across the awaits below
        try:
            s.pc = pc = RTCPeerConnection(self._rtc_config)
            s.feed = feed = rm.feed(codec, owner=s.id)
            s.track = track = ViewerTrack(feed)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences(codec))
            attach_sender(transceiver.sender, feed, lean=self.media.lean_sender)
            if offer.wants_opus:  # the room's sound: the same shared packets for every viewer
                audio = rm.audio()
                s.audio_track = AudioViewerTrack(audio)
                sound = pc.addTransceiver(s.audio_track, direction="sendonly")
                sound.setCodecPreferences(opus_only())
                attach_sender(sound.sender, audio, lean=self.media.lean_sender)
            self._watch(s)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer.text, "offer"))
            except Exception as exc:
                if "codec" in str(exc).lower() or "send parameters" in str(exc):
                    raise UnsupportedCodec(f"no usable {codec} in the offer") from None
                raise BadSdp(f"the offer was refused: {exc}"[:200]) from None
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription.sdp
            if self.book.get(s.id) is not s:  # ended meanwhile (a refund, a preview's end)
                raise NotEntitled(f"the session ended while it was set up: {s.end_reason}")
        except BaseException as exc:
            await self.close_session(s.id, "setup failed")
            if isinstance(exc, Exception) and not isinstance(exc, LiveroomError):
                log.exception("WHEP setup failed")
                raise LiveroomError(f"the session could not be set up: {exc}"[:200]) from None
            raise
        self._arm_ends(s, decision.preview_ends_at)
        self._arm_connect_timeout(s)
        return s.id, answer

    def _arm_ends(self, s: MediaSession, preview_ends_at: float | None) -> None:
        """End the session when its preview or its token runs out, whichever comes first."""
        if s.end_timer is not None:
            s.end_timer.cancel()
            s.end_timer = None
        s.ends_at = None
        ends = [
            (t, why)
            for t, why in ((preview_ends_at, "preview over"), (s.identity.exp, "token expired"))
            if t is not None
        ]
        if ends:
            s.ends_at, why = min(ends)
            self._arm_end(s, s.ends_at, why)

    def _watch(self, s: MediaSession) -> None:
        pc = s.pc

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close_session(s.id, f"connection {pc.connectionState}")

    def _arm_end(self, s: MediaSession, at: float, reason: str) -> None:
        loop = asyncio.get_running_loop()
        s.end_timer = loop.call_later(max(0.0, at - time.time()), self._end_soon, s.id, reason)

    def _arm_connect_timeout(self, s: MediaSession) -> None:
        def check() -> None:
            if s.pc is not None and s.pc.connectionState != "connected":
                self._end_soon(s.id, "connect timeout")

        s.connect_timer = asyncio.get_running_loop().call_later(self.media.connect_timeout_s, check)

    def _end_soon(self, sid: str, reason: str) -> None:
        self._spawn(self.close_session(sid, reason))

    async def close_session(self, sid: str, reason: str) -> bool:
        """End a session (idempotent); False if there was none."""
        s = self.book.remove(sid)
        if s is None:
            return False
        s.end_reason = reason
        for timer in (s.end_timer, s.connect_timer):
            if timer is not None:
                timer.cancel()
        rm = self.rooms.get(s.room)
        if s.track is not None:
            cursor = getattr(s.track, "cursor", None)
            if cursor is not None:
                self._retired["viewer_skips"] += cursor.skips
            s.track.stop()
        if s.audio_track is not None:
            s.audio_track.stop()
        if rm is not None:
            if s.kind is SessionKind.WHIP:
                rm.clear_ingest(s.id)
            elif s.feed is not None:
                rm.release(s.feed)
        if s.pc is not None:
            try:
                await s.pc.close()
            except Exception:
                log.exception("closing the peer connection of %s", sid)
        log.info("media session %s (%s, %s) ended: %s", sid, s.kind, s.room, reason)
        return True

    # -- WHIP --------------------------------------------------------------------------------

    async def open_whip(self, room_id: str, identity: Identity, body: bytes) -> tuple[str, str]:
        """A host publishes the room's stream; it replaces the room's previous ingest."""
        room = await self.load_room(room_id)
        if not identity.controls(room.id, room.owner):
            raise Forbidden("only this room's hosts and admins may publish to it")
        if room.status is RoomStatus.ENDED:
            raise NotPublishing("the room has ended")
        offer = read_offer(body, directions=WHIP_DIRECTIONS)
        choose_codec(offer.video_codecs, self.media.codec_list())
        if offer.has_audio and not offer.wants_opus:
            raise UnsupportedCodec(
                f"a room's sound is Opus; the offer's audio is {', '.join(offer.audio_codecs)}"
            )
        now = time.time()
        s = MediaSession(new_session_id(), SessionKind.WHIP, room.id, identity, "host", now)
        self.book.add(s)
        rm = self._room_media(room)
        try:
            s.pc = pc = RTCPeerConnection(self._rtc_config)
            self._watch(s)
            if offer.wants_opus:
                # Opus only, and passed through: the receiver's packets go straight to the
                # room's sound feed, never to a decoder.
                sound = pc.addTransceiver("audio", direction="recvonly")
                sound.setCodecPreferences(opus_only())
                tap_receiver(
                    sound.receiver,
                    lambda payload, ts: rm.publish_ingest_audio(s.id, payload, ts),
                )

            @pc.on("track")
            def _track(track: MediaStreamTrack) -> None:
                if track.kind == "video" and s.track is None and self.book.get(s.id) is s:
                    s.track = track
                    rm.set_ingest(s.id, IngestSource(track))
                elif track.kind != "audio":
                    self._spawn(_drain(track))  # a second video track must not pile up

            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer.text, "offer"))
            except Exception as exc:
                raise BadSdp(f"the offer was refused: {exc}"[:200]) from None
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription.sdp
        except BaseException:
            await self.close_session(s.id, "setup failed")
            raise
        for old in self.book.in_room(room.id, SessionKind.WHIP):
            if old.id != s.id:
                self._spawn(self.close_session(old.id, "replaced by a new ingest"))
        self._arm_connect_timeout(s)
        return s.id, answer

    # -- revocations -------------------------------------------------------------------------

    def _on_revocations(self, entries: list) -> None:
        """Reader callback: re-check every session of the users concerned, now."""
        for _, fields in entries:
            self.revocations_seen += 1
            try:
                r = decode_revocation(fields)
            except Exception:
                log.warning("undecodable revocation entry")
                continue
            for s in self.book.of_user(r.user):
                if s.kind is SessionKind.WHEP and (r.room is None or r.room == s.room):
                    self._spawn(self._recheck(s, r.reason))

    async def _recheck(self, s: MediaSession, reason: str) -> None:
        now = time.time()
        try:
            room = await self.store.get(s.room)
            decision = await self.access.check(room, s.identity, now=now)
        except LiveroomError as exc:
            await self.close_session(s.id, f"access ended: {reason or exc.message}")
            return
        except Exception:
            log.exception("access re-check failed; ending the session to be safe")
            await self.close_session(s.id, "access could not be confirmed")
            return
        if decision.kind != s.access and self.book.get(s.id) is s:
            s.access = decision.kind
            self._arm_ends(s, decision.preview_ends_at)

    # -- counts ------------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        interval = self.settings.counter_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._report_counts()
            except (RedisError, OSError) as exc:
                log.warning("media viewer counts not reported: %s", exc)

    async def _report_counts(self, *, final: bool = False) -> None:
        counts = {} if final else dict(self.book.viewers_by_room())
        rooms = set(counts) | self._reported
        if not rooms:
            return
        now_ms = int(time.time() * 1000)
        ttl = self.settings.online_ttl_ms

        def build(p: Any) -> None:
            for room in rooms:
                room_keys = [keys.media_viewers(room), keys.media_viewers_expiry(room)]
                args = [self.id, counts.get(room, 0), now_ms, ttl]
                scripts.queue(p, self._online, room_keys, args)

        await scripts.run_pipeline(self.redis, build, [self._online])
        self._reported = {r for r, n in counts.items() if n > 0}

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        rooms = {room: rm.describe() for room, rm in self.rooms.items()}
        return {
            "id": self.id,
            "sessions": {"whep": self.book.whep, "whip": self.book.whip},
            "encoders": sum(rm.encoder_count for rm in self.rooms.values()),
            "frames_encoded": self._retired["frames_encoded"]
            + sum(rm.counters.frames_encoded for rm in self.rooms.values()),
            "viewer_skips": self._retired["viewer_skips"]
            + sum(r["feeds"][f]["skips"] for r in rooms.values() for f in r["feeds"]),
            "revocations_seen": self.revocations_seen,
            "rooms": rooms,
        }

    def room_stats(self, room: RoomId) -> dict[str, Any]:
        rm = self.rooms.get(room)
        base = rm.describe() if rm is not None else {"source": None, "viewers": 0, "encoders": 0}
        return {
            "room": room,
            **base,
            "sessions": [s.public() for s in self.book.in_room(room)],
        }


async def _drain(track: MediaStreamTrack) -> None:
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass
