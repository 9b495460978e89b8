"""The room bus: history events on Redis Streams.

``RoomBus`` appends and replays; ``RoomReader`` is the ONE reader task of a process, blocking on
the streams of every room that has local viewers and handing each batch to a callback. Nothing
here knows about connections; the gateway decides who gets what.

On a Redis Cluster one XREAD cannot span streams of different hash slots (every room has its
own), so there the reader polls instead: each round is one read (XRANGE after the cursor) per
stream, every node's share sent at once, back to back while events come and with a short,
growing wait while none do (``Settings.cluster_poll_ms``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from engine import keys, scripts
from engine.codec import Event, pack_stored, unpack_stored
from engine.ids import ZERO_ID, EventId, RoomId, stream_id_key
from engine.settings import Settings
from engine.store import is_cluster
from engine.tasks import TaskSet, cancel_and_wait

log = logging.getLogger("liveroom.bus")


@dataclass(frozen=True, slots=True)
class StreamHead:
    """What a joining connection needs to know about a room's history."""

    last_id: EventId
    """Newest id ever written (``0-0`` for a room without events)."""
    first_id: EventId | None
    """Oldest retained id, or None when nothing is retained."""
    complete: bool
    """True when nothing was ever trimmed."""

    def can_resume_after(self, since: EventId) -> bool:
        """Whether every event after ``since`` is still retained."""
        s = stream_id_key(since)
        if s > stream_id_key(self.last_id):
            return False  # an id from the future is not one of ours
        if self.complete or self.first_id is None:
            return True
        return s >= stream_id_key(self.first_id)


def _decode_entries(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Event]:
    out: list[Event] = []
    for raw_id, fields in entries:
        ev = unpack_stored(fields[b"e"])
        ev["id"] = raw_id.decode()
        out.append(ev)
    return out


async def last_id(redis: Redis, key: str) -> str:
    """The newest id ever written to a stream, ``0-0`` when there is none."""
    try:
        info = await redis.xinfo_stream(key)
    except ResponseError:
        return ZERO_ID
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else last


def published(reply: list) -> tuple[EventId, bool]:
    """``publish.lua``'s answer: (the event's id, whether this call appended it)."""
    raw, fresh = reply
    return EventId(raw.decode() if isinstance(raw, bytes) else raw), bool(fresh)


class RoomBus:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._publish = scripts.guarded(redis, "publish")

    async def publish(self, room: RoomId, event: Event) -> EventId:
        """Append a history event; its stream id is its event id."""
        return (await self._append(room, event, None))[0]

    async def publish_once(
        self, room: RoomId, event: Event, user: str, ref: str
    ) -> tuple[EventId, bool]:
        """Append the event of ``user``'s op ``ref`` at most once for ``danmaku_ref_ttl_s``:
        a resend (a client after a timeout, or redis-py after a broken connection) gets the
        first call's id back. Returns (id, whether this call published it)."""
        return await self._append(room, event, (user, ref))

    @property
    def publish_script(self) -> scripts.GuardedScript:
        """``publish.lua``, for a caller that pipelines many (``engine.pipeline``)."""
        return self._publish

    def publish_call(
        self, room: RoomId, event: Event, user: str | None = None, ref: str | None = None
    ) -> tuple[list[str], list[object]]:
        """The keys and args of one ``publish.lua`` call; with ``user`` and ``ref``, at most
        once per (room, user, ref) for ``danmaku_ref_ttl_s``."""
        s = self.settings
        keys_ = [keys.events(room)]
        args: list[object] = [
            pack_stored(event),
            s.history_keep_events,
            s.history_keep_seconds,
            s.history_hard_cap,
        ]
        if user is not None and ref:
            keys_.append(keys.danmaku_ref(room, user, ref))
            args.append(s.danmaku_ref_ttl_s)
        return keys_, args

    async def _append(
        self, room: RoomId, event: Event, dedupe: tuple[str, str] | None
    ) -> tuple[EventId, bool]:
        keys_, args = self.publish_call(room, event, *(dedupe or (None, None)))
        return published(await self._publish(keys=keys_, args=args))

    async def head(self, room: RoomId) -> StreamHead:
        try:
            info = await self.redis.xinfo_stream(keys.events(room))
        except ResponseError:  # no such key: a room without events yet
            return StreamHead(ZERO_ID, None, True)
        last = info["last-generated-id"]
        first = info.get("first-entry")
        added = info.get("entries-added")
        return StreamHead(
            last_id=EventId(last.decode() if isinstance(last, bytes) else last),
            first_id=EventId(first[0].decode()) if first else None,
            complete=added is not None and int(added) == int(info["length"]),
        )

    async def after(self, room: RoomId, after: EventId, count: int) -> list[Event]:
        """Up to ``count`` retained events with ids greater than ``after``, oldest first."""
        entries = await self.redis.xrange(keys.events(room), min=f"({after}", count=count)
        return _decode_entries(entries)


class RoomReader:
    """One ``XREAD BLOCK`` loop for every room with local viewers in this process."""

    def __init__(
        self,
        redis: Redis,
        poke: Redis,
        gateway_id: str,
        on_events: Callable[[RoomId, list[Event]], None],
        settings: Settings,
    ) -> None:
        self._redis = redis  # dedicated: the blocking XREAD holds its connection
        self._poke = poke
        self._wake_key = keys.reader_wakeup(gateway_id)
        self._wake_id = "$"
        self._on_events = on_events
        self._settings = settings
        self._cursors: dict[RoomId, str] = {}
        self._key_to_room: dict[bytes, RoomId] = {}
        self._followed: dict[str, tuple[str, Callable[[list], None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._pokes = TaskSet("reader-wakeup")
        self._cluster = is_cluster(redis)
        self._woken = asyncio.Event()
        """(On a cluster) set when the room set changed: the poll's wait ends."""
        self._idle_ms = 1.0
        self.reads = 0
        self.errors = 0
        """Reads that failed (Redis away); each is retried after a backoff."""

    @property
    def rooms(self) -> frozenset[RoomId]:
        return frozenset(self._cursors)

    def subscribe(self, room: RoomId, after: EventId) -> bool:
        """Start reading ``room`` after ``after``; False if it was already read."""
        if room in self._cursors:
            return False
        self._cursors[room] = after
        self._key_to_room[keys.events(room).encode()] = room
        self._wake()
        return True

    def follow(self, key: str, after: str, callback: Callable[[list], None]) -> None:
        """Also read a process-wide stream (e.g. revocations) after ``after``; entries are
        handed raw, as ``[(id, fields), ...]``."""
        self._followed[key] = (after, callback)
        self._wake()

    def unsubscribe(self, room: RoomId) -> None:
        if self._cursors.pop(room, None) is not None:
            self._key_to_room.pop(keys.events(room).encode(), None)

    def _wake(self) -> None:
        # The running XREAD does not see a new room until it returns; a write to our own
        # wake-up stream makes it return now instead of after the block timeout.
        async def poke() -> None:
            try:
                await self._poke.xadd(self._wake_key, {"w": 1}, maxlen=10, approximate=True)
            except RedisError:
                pass

        if self._cluster:
            self._woken.set()
        elif self._task is not None:
            self._pokes.spawn(poke())

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="room-reader")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None
        await self._pokes.stop()
        try:
            await self._poke.delete(self._wake_key)
        except RedisError:
            pass

    async def _run(self) -> None:
        read = self._poll if self._cluster else self._block
        backoff = 0.05
        while True:
            try:
                reply = await read()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.errors += 1
                log.warning("room reader: %s; retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self.reads += 1
            self._dispatch(reply or ())

    def _streams(self) -> dict[str, str]:
        streams = {key: cursor for key, (cursor, _) in self._followed.items()}
        for room, cursor in self._cursors.items():
            streams[keys.events(room)] = cursor
        return streams

    async def _block(self) -> list:
        """One XREAD BLOCK over every stream (one Redis): it returns as soon as any has news,
        or when our wake-up stream is poked (the room set changed)."""
        s = self._settings
        streams = {self._wake_key: self._wake_id, **self._streams()}
        return await self._redis.xread(streams, count=s.read_count, block=s.read_block_ms)  # type: ignore[no-any-return]

    async def _poll(self) -> list:
        """Rounds of one read per stream (a Redis Cluster refuses one XREAD across slots),
        sent to every node at once by the cluster pipeline, until one has news; between empty
        rounds the wait doubles from 1 ms to ``cluster_poll_ms``."""
        s = self._settings
        await self._redis.initialize()  # (once; redis-py's lazy start races its first users)
        while True:
            self._woken.clear()  # (before the round: a room added during it ends the wait)
            streams = self._streams()
            if streams:
                # XRANGE, not XREAD: redis-py routes XREAD (movable keys) on a cluster only
                # after asking a node COMMAND GETKEYS, a round trip per stream per round.
                async with self._redis.pipeline() as p:
                    for key, cursor in streams.items():
                        p.xrange(key, min=f"({cursor}", count=s.read_count)
                    replies = await p.execute()
                news = [(key, got) for key, got in zip(streams, replies, strict=True) if got]
                if news:
                    self._idle_ms = 1.0
                    return news
            try:
                async with asyncio.timeout(self._idle_ms / 1000):
                    await self._woken.wait()
            except TimeoutError:
                self._idle_ms = min(self._idle_ms * 2, s.cluster_poll_ms)

    def _dispatch(self, reply: Iterable) -> None:
        for raw_key, entries in reply:
            if not entries:
                continue
            key = raw_key if isinstance(raw_key, bytes) else raw_key.encode()
            if key == self._wake_key.encode():
                self._wake_id = entries[-1][0].decode()
                continue
            followed = self._followed.get(key.decode())
            if followed is not None:
                self._followed[key.decode()] = (entries[-1][0].decode(), followed[1])
                try:
                    followed[1](entries)
                except Exception:
                    log.exception("callback for %s failed", key)
                continue
            room = self._key_to_room.get(key)
            if room is None:
                continue  # unsubscribed while the read was in flight
            self._cursors[room] = entries[-1][0].decode()
            try:
                self._on_events(room, _decode_entries(entries))
            except Exception:
                log.exception("room reader callback failed for %s", room)
