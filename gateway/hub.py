"""The room hub of one gateway process: local connections per room, tick flushes, counters.

Events arrive from the process's one ``RoomReader``; every tick, each room's batch is encoded
once per subprotocol, framed once, and the same bytes are written to every local connection of
that room. No per-recipient task, encode or await on this path: a connection whose unsent bytes
pass its limit is closed with 4408 instead of slowing the room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from engine.batch import RoomBatch
from engine.codec import Event, Subprotocol, encode
from engine.counters import RoomCounters
from engine.events import EventType
from engine.ids import RoomId
from engine.lottery import LotteryBook, Rule
from engine.session import SHARE, Close, Own, UserLimits, ViewerSession
from engine.settings import Settings
from engine.stats import GatewayStats
from engine.tasks import TaskSet, cancel_and_wait
from engine.tokens import Identity
from engine.words import WordFilter

if TYPE_CHECKING:
    from gateway.connection import LiveConnection

log = logging.getLogger("liveroom.hub")

FLUSH_CHUNK = 1000  # connections written between two yields to the event loop


def frame(events: list[Event], sp: Subprotocol) -> bytes:
    """One complete, unmasked server frame carrying ``events`` (compression is off)."""
    opcode = Opcode.BINARY if sp.binary else Opcode.TEXT
    return Frame(opcode, encode(events, sp)).serialize(mask=False)


@dataclass(frozen=True, slots=True)
class CounterReport:
    """One gateway's like, danmaku and new-viewer deltas, numbered for Redis (applied once)."""

    seq: int
    likes: dict[RoomId, int]
    chats: dict[RoomId, int]
    viewers: dict[RoomId, set[str]]


class Conn:
    """One viewer's WebSocket connection: the socket, and the session whose rules it obeys
    (``engine.session.ViewerSession``). The hub and the gateway only carry out what the
    session answers."""

    __slots__ = (
        "ws",
        "transport",
        "sp",
        "session",
        "tasks",
        "limit",
        "outbox",
        "inflight",
        "resume",
        "ping",
        "stats",
    )

    def __init__(
        self,
        ws: LiveConnection,
        session: ViewerSession,
        sp: Subprotocol,
        tasks: TaskSet,
        stats: GatewayStats,
    ) -> None:
        self.ws = ws
        self.stats = stats
        """The process's counters (shared by every connection)."""
        self.transport = ws.transport
        self.sp = sp
        self.session = session
        self.tasks = tasks
        self.limit = session.send_buffer_limit
        self.outbox: list[Event] | None = None
        """Replies made in this loop iteration, sent as one frame at its end (``RoomHub.reply``)."""
        self.inflight = 0
        """Writes of this connection on their way to Redis (``gateway/inbound.py``)."""
        self.ping: tuple[bytes, float] | None = None
        """The last keepalive ping's payload and monotonic time (``RoomHub.keepalive``)."""
        self.resume: asyncio.Future[None] | None = None
        """Set while reading this connection waits for its writes to come back."""

    @property
    def identity(self) -> Identity:
        return self.session.identity

    @property
    def room(self) -> RoomId:
        return RoomId(self.session.room)

    def write(self, data: bytes) -> None:
        """Queue one pre-built frame; the session decides when the unsent bytes are too many."""
        if self.session.closing or self.ws.protocol.state is not State.OPEN:
            return
        self.transport.write(data)
        stats = self.stats
        stats.frames += 1
        stats.bytes += len(data)
        unsent = self.transport.get_write_buffer_size()
        if unsent > self.limit:  # (the common case asks the session nothing)
            close = self.session.on_unsent(unsent)
            if close is not None:
                self.apply(close)

    def send(self, events: list[Event]) -> None:
        """Send events to this connection only (replies, catch-up)."""
        if events:
            self.write(frame(events, self.sp))

    def apply(self, close: Close) -> None:
        """Carry out a close the session decided on."""
        self.stats.closes[close.code] += 1
        self.tasks.spawn(self.ws.close(close.code, close.reason))

    def close(self, code: int, reason: str) -> None:
        if not self.session.closing:
            self.apply(self.session.close(code, reason))


class LocalRoom:
    __slots__ = (
        "id",
        "conns",
        "batch",
        "like_delta",
        "danmaku_delta",
        "new_viewers",
        "likes",
        "online",
        "reported_online",
        "lotteries",
        "lottery_likers",
        "stock_sent_at",
        "pushed_counts",
        "counts_pushed_at",
        "words",
        "words_loading",
    )

    def __init__(self, room: RoomId) -> None:
        self.id = room
        self.conns: set[Conn] = set()
        self.batch = RoomBatch()
        self.like_delta = 0
        self.danmaku_delta = 0
        self.new_viewers: set[str] = set()
        self.lotteries: dict[str, tuple[Rule, float]] = {}
        """Open lotteries of the room: id -> (rule, ends_at), kept current from history."""
        self.stock_sent_at = 0.0
        self.pushed_counts: tuple[int | None, int | None] = (None, None)
        """(likes, online) as last pushed to the room's viewers."""
        self.counts_pushed_at = 0.0
        self.lottery_likers: dict[str, set[str]] = {}
        """Like-rule lottery id -> users whose first like since it opened is not reported yet."""
        self.likes: int | None = None
        self.online: int | None = None
        self.reported_online = -1
        self.words: WordFilter | None = None
        """The room's own blocked words; None until loaded (and again after a change)."""
        self.words_loading: asyncio.Task[WordFilter] | None = None


class RoomHub:
    def __init__(
        self,
        settings: Settings,
        counters: RoomCounters,
        lotteries: LotteryBook | None = None,
        tasks: TaskSet | None = None,
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.lotteries = lotteries
        """Like-rule lotteries are told who liked (None: not reported, e.g. a benchmark)."""
        self.tasks = tasks or TaskSet("hub")
        self.rooms: dict[RoomId, LocalRoom] = {}
        self.by_user: dict[str, set[Conn]] = {}
        self.on_room_empty: list = []  # callbacks(room_id), e.g. unsubscribe the reader
        self.on_detach: list[Callable[[Conn], None]] = []  # e.g. cancel its deadline
        self.frames_written = 0
        """Shared tick frames written (one per connection per tick with news)."""
        self.events_delivered = 0
        """Events in those frames, counted once per connection."""
        self.stats = GatewayStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self._unconfirmed: CounterReport | None = None
        self._ping_seq = 0
        self._replying: list[Conn] = []
        """Connections with an outbox to send at the end of this loop iteration."""

    # -- replies ---------------------------------------------------------------------------

    def reply(self, conn: Conn, event: Event) -> None:
        """Send ``event`` to ``conn`` only, in one frame with every other reply it gets in this
        loop iteration (a trip of writes answers many ops of one connection at once)."""
        if conn.outbox is None:
            conn.outbox = [event]
            if not self._replying:
                asyncio.get_running_loop().call_soon(self._send_replies)
            self._replying.append(conn)
        else:
            conn.outbox.append(event)

    def _send_replies(self) -> None:
        replying, self._replying = self._replying, []
        for conn in replying:
            events, conn.outbox = conn.outbox, None
            if events:
                conn.send(events)

    # -- connections -----------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return sum(len(r.conns) for r in self.rooms.values())

    def attach(self, conn: Conn) -> LocalRoom:
        room = self.rooms.get(conn.room)
        if room is None:
            room = self.rooms[conn.room] = LocalRoom(conn.room)
        room.conns.add(conn)
        room.new_viewers.add(conn.identity.user)
        self.by_user.setdefault(conn.identity.user, set()).add(conn)
        return room

    def limits_for(self, room: RoomId, user: str, now: float) -> UserLimits:
        """The user's rate limits in the room: shared by its connections on this gateway."""
        for other in self.by_user.get(user, ()):
            if other.room == room:
                return other.session.limits
        return UserLimits.new(self.settings, now)

    def detach(self, conn: Conn) -> None:
        for cb in self.on_detach:
            cb(conn)
        mine = self.by_user.get(conn.identity.user)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self.by_user[conn.identity.user]
        room = self.rooms.get(conn.room)
        if room is not None:
            room.conns.discard(conn)
            # The room stays until the next counter sync has reported 0 for this gateway.

    def go_live(self, conn: Conn) -> list[Event]:
        """End a connection's join: what arrived during replay, and the room's state, which
        the caller writes before it yields (frames it shares come after)."""
        return conn.session.go_live(self.rooms[conn.room].batch.current_state())

    # -- events in -------------------------------------------------------------------------

    def on_events(self, room_id: RoomId, events: list[Event]) -> None:
        """Room reader callback: history events for a room, in id order."""
        self.stats.events_in += len(events)
        room = self.rooms.get(room_id)
        if room is not None:
            room.batch.add_history(events)
            for ev in events:  # lotteries open and close through history: no polling
                kind = ev.get("type")
                if kind == EventType.LOTTERY_STARTED:
                    room.lotteries[ev["lottery"]] = (Rule.parse(ev["rule"]), ev["ends_at"])
                elif kind == EventType.LOTTERY_DRAWN:
                    room.lotteries.pop(ev["lottery"], None)

    def count_danmaku(self, room_id: RoomId) -> None:
        room = self.rooms.get(room_id)
        if room is not None:
            room.danmaku_delta += 1

    def add_likes(self, room_id: RoomId, n: int) -> None:
        room = self.rooms.get(room_id)
        if room is not None:
            room.like_delta += n

    # -- ticks -----------------------------------------------------------------------------

    async def flush_now(self) -> None:
        """One flush at a time: a flush that yields mid-room must finish before the next batch
        of that room goes out, or later connections would get batches out of order."""
        async with self._flush_lock:
            t0 = time.perf_counter()
            await self.flush_async()
            self.stats.tick.observe(time.perf_counter() - t0)

    async def flush_async(self) -> None:
        """``flush``, yielding to the event loop every ``FLUSH_CHUNK`` connections, so that a
        big room's flush does not hold back pongs, ops and handshakes for its whole length."""
        for room in list(self.rooms.values()):
            if not room.batch:
                continue
            conns = list(room.conns)
            if len(conns) <= FLUSH_CHUNK:
                self._flush_room(room, conns)
                continue
            send = self._flush_room(room, conns[:FLUSH_CHUNK])
            for i in range(FLUSH_CHUNK, len(conns), FLUSH_CHUNK):
                await asyncio.sleep(0)
                send(conns[i : i + FLUSH_CHUNK])

    def _flush_room(self, room: LocalRoom, conns: list[Conn]) -> Callable[[list[Conn]], None]:
        """Take the room's batch and send it to ``conns``; return a function that sends the
        same batch (same frames) to more connections."""
        history, state = room.batch.take()
        events = history + state
        frames: dict[Subprotocol, bytes] = {}

        def send(targets: list[Conn]) -> None:
            for conn in targets:
                session = conn.session
                if not session.shares:
                    action = session.on_batch(history, state)  # the session decides
                    if isinstance(action, Own):
                        conn.send(action.events)
                        continue
                    if isinstance(action, Close):
                        conn.apply(action)
                    if action is not SHARE:
                        continue
                data = frames.get(conn.sp)
                if data is None:
                    data = frames[conn.sp] = frame(events, conn.sp)
                conn.write(data)
                self.frames_written += 1
                self.events_delivered += len(events)

        send(conns)
        return send

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.settings.tick_ms / 1000
        next_at = loop.time() + tick
        while True:
            # Even when the last flush overran, wait a moment: the room reader must get a turn
            # to deliver what arrived meanwhile, or this tick would flush nothing.
            await asyncio.sleep(max(0.001, next_at - loop.time()))
            next_at = max(next_at + tick, loop.time())
            try:
                await self.flush_now()
            except Exception:
                log.exception("tick flush failed")

    async def _counter_loop(self) -> None:
        s = self.settings
        tick = s.tick_ms / 1000
        interval = s.counter_interval_ms / 1000
        last_full = 0.0
        while True:
            await asyncio.sleep(tick)
            now = time.time()
            full = now - last_full >= interval
            try:
                await self.report_lottery_likes(now)
                await self.sync_counters(full, now)
                if full:
                    last_full = now
            except Exception as exc:  # Redis away: keep the deltas, try again next tick
                log.warning("counter sync failed: %s", exc)
                await asyncio.sleep(interval)

    async def report_lottery_likes(self, now: float) -> None:
        """Hand each like-rule lottery the users who liked since the last report."""
        if self.lotteries is None:
            return
        for room in list(self.rooms.values()):
            if not room.lottery_likers:
                continue
            pending, room.lottery_likers = room.lottery_likers, {}
            for lottery, users in pending.items():
                try:
                    await self.lotteries.note_likes(room.id, lottery, users, now)
                except Exception as exc:  # keep them for the next report
                    room.lottery_likers.setdefault(lottery, set()).update(users)
                    log.warning("lottery likes not reported yet: %s", exc)

    def _take_report(self, full: bool) -> CounterReport | None:
        """Take every room's deltas into one numbered report (they leave the rooms)."""
        likes = {r.id: r.like_delta for r in self.rooms.values() if r.like_delta or full}
        chats = {r.id: r.danmaku_delta for r in self.rooms.values() if r.danmaku_delta}
        viewers = {r.id: r.new_viewers for r in self.rooms.values() if r.new_viewers}
        if not likes and not chats and not viewers and not full:
            return None
        for rid, n in likes.items():
            self.rooms[rid].like_delta -= n
        for rid in chats:
            self.rooms[rid].danmaku_delta = 0
        for rid in viewers:
            self.rooms[rid].new_viewers = set()
        return CounterReport(self.counters.next_seq(), likes, chats, viewers)

    def _push_counts(self, room: LocalRoom, now: float) -> None:
        """`likes` and `online` go to the room's viewers when they changed, at most once per
        ``counts_push_ms``: each is one frame to every viewer, so in a room filling up (every
        join changes `online`) pushing on every sync would cost each join a write to all."""
        if now - room.counts_pushed_at < self.settings.counts_push_ms / 1000:
            return
        likes, online = room.pushed_counts
        if room.likes is not None and room.likes != likes:
            room.batch.set_state("likes", {"type": EventType.LIKES, "total": room.likes})
        if room.online is not None and room.online != online:
            room.batch.set_state("online", {"type": EventType.ONLINE, "count": room.online})
        if (room.likes, room.online) != (likes, online):
            room.pushed_counts = (room.likes, room.online)
            room.counts_pushed_at = now

    async def sync_counters(self, full: bool, now: float) -> None:
        # A report whose reply never came may have been applied: it is resent as it was, under
        # its number, until one reply comes (Redis applies a number once). New deltas wait.
        report = self._unconfirmed or self._take_report(full)
        online = {r.id: len(r.conns) for r in self.rooms.values()} if full else None
        if report is None and not online:
            return
        report = report or CounterReport(self.counters.next_seq(), {}, {}, {})
        self._unconfirmed = report
        totals = await self.counters.sync(
            report.likes,
            online,
            int(now * 1000),
            danmaku_deltas=report.chats,
            new_viewers=report.viewers,
            seq=report.seq,
        )
        self._unconfirmed = None
        for rid, t in totals.items():
            room = self.rooms.get(rid)
            if room is None:
                continue
            room.likes = t.likes
            if t.stock and now - room.stock_sent_at >= self.settings.stock_interval_ms / 1000:
                # Every viewer gets each `sale.stock` frame: at most once a second per room
                # (a tick each would be 20 writes/s per viewer while stock moves).
                room.stock_sent_at = now
                for sale_id, left in t.stock.items():
                    room.batch.set_state(
                        f"sale.stock:{sale_id}",
                        {"type": EventType.SALE_STOCK, "sale": sale_id, "left": left},
                    )
            if t.online is not None:
                room.reported_online = online[rid] if online else -1
                room.online = t.online
            self._push_counts(room, now)
        # Rooms whose last local viewer left, and whose 0 has now been reported, go.
        if online is not None:
            for rid, count in online.items():
                room = self.rooms.get(rid)
                if (
                    room is not None
                    and count == 0
                    and not room.conns
                    and not room.like_delta
                    and not room.danmaku_delta
                    and not room.new_viewers
                ):
                    del self.rooms[rid]
                    for cb in self.on_room_empty:
                        cb(rid)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._tick_loop(), name="hub-tick"),
            loop.create_task(self._counter_loop(), name="hub-counters"),
            loop.create_task(self.keepalive(), name="hub-keepalive"),
        ]

    async def keepalive(self) -> None:
        """Ping every connection each ``ping_interval_s``; close (1011) one whose pong has not
        come back within ``ping_timeout_s``. One loop, in chunks that yield, instead of a
        task, a timer and a coroutine per connection."""
        s = self.settings
        while True:
            await asyncio.sleep(min(s.ping_interval_s, s.ping_timeout_s) / 2)
            now = time.monotonic()
            conns = [c for room in list(self.rooms.values()) for c in room.conns]
            for i, conn in enumerate(conns):
                if i and i % FLUSH_CHUNK == 0:
                    await asyncio.sleep(0)
                self._ping(conn, now)

    def _ping(self, conn: Conn, now: float) -> None:
        s, ws = self.settings, conn.ws
        if conn.session.closing or ws.protocol.state is not State.OPEN:
            return
        if conn.ping is not None:
            data, at = conn.ping
            if data in ws.pending_pings:  # (websockets drops a ping once its pong is in)
                if now - at > s.ping_timeout_s:
                    conn.close(1011, "keepalive ping timeout")
                return
            if now - at < s.ping_interval_s:
                return
        data = self._ping_seq.to_bytes(4, "big")
        self._ping_seq = (self._ping_seq + 1) % (1 << 32)
        if data in ws.pending_pings:
            return
        ws.pending_pings[data] = (asyncio.get_running_loop().create_future(), now)
        ws.protocol.send_ping(data)
        ws.send_data()
        conn.ping = (data, now)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
