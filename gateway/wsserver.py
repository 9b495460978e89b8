"""The WebSocket gateway (PROTOCOL.md §4) on ``websockets``.

Auth happens before the upgrade (``process_request``): a refused client gets an HTTP status and
the JSON error body of §3, never a WebSocket. An accepted connection gets ``welcome`` (and the
history it missed, when it resumes), then shares its room's tick frames with every other local
viewer. Ops are parsed by ``engine.ops`` and answered on this connection only.
"""

from __future__ import annotations

import asyncio
import functools
import http
import itertools
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine import keys
from engine.access import AccessDecision, AccessKind, decode_revocation
from engine.bus import RoomReader, StreamHead, last_id
from engine.codec import SUBPROTOCOLS, dumps_json, encode, negotiate
from engine.counters import RoomCounters
from engine.errors import (
    Forbidden,
    LiveroomError,
    NotFound,
    RateLimited,
    Unavailable,
)
from engine.events import EventType
from engine.ids import Cursor, EventId, RoomId, is_valid_id
from engine.lottery import (
    Rule,
)
from engine.origins import origin_allowed, parse_allowed
from engine.pipeline import ScriptBatcher
from engine.rooms import Room, RoomCache
from engine.services import Services
from engine.session import CLOSE_ACCESS_ENDED, ReplayPlan, ViewerSession
from engine.tasks import TaskSet, cancel_and_wait
from engine.tokens import Identity, verify_request
from gateway import metrics
from gateway.connection import MAX_UNREAD, LiveConnection
from gateway.deadlines import Deadlines
from gateway.hub import Conn, LocalRoom, RoomHub
from gateway.inbound import Inbound
from gateway.shared import SharedReads

log = logging.getLogger("liveroom.gateway")

PATH_PREFIX = "/ws/rooms/"

NO_HEADERS = Headers()
"""What a served connection keeps of its handshake's headers (shared, empty)."""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    identity: Identity
    room: Room
    since: Cursor | None
    decision: AccessDecision
    conn_id: str
    """This connection's slot among the user's (see engine/slots.py)."""
    ip: str
    checked_at: float
    """Monotonic time just before its access was checked."""


@dataclass(frozen=True, slots=True)
class JoinState:
    """A room as a `welcome` shows it, read once for many joins (``gateway.shared``)."""

    head: StreamHead
    lotteries: list[dict]
    sale: dict | None
    counts: tuple[int, int] | None
    """(likes, online of other gateways) when this gateway had no counts of the room yet."""


def error_response(exc: LiveroomError) -> Response:
    status = http.HTTPStatus(exc.status)
    body = dumps_json({"error": exc.code, "message": exc.message}).encode()
    headers = Headers()
    headers["Content-Type"] = "application/json"
    headers["Content-Length"] = str(len(body))
    headers["Connection"] = "close"
    return Response(status.value, status.phrase, headers, body)


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


class Gateway:
    """One gateway process: the WebSocket server, its room hub and its one room reader."""

    def __init__(self, services: Services, *, gateway_id: str | None = None) -> None:
        settings = services.settings
        self.settings = settings
        self.redis = services.redis
        self.id = gateway_id or uuid.uuid4().hex[:12]
        self.rooms = services.rooms
        self.room_cache = RoomCache(services.rooms)
        self.states: SharedReads[RoomId, JoinState] = SharedReads(self._read_state)
        """A room's welcome state, read once for all the joins of a burst."""
        self.replays: SharedReads[tuple[RoomId, EventId, int], list] = SharedReads(
            lambda k: self.bus.after(*k)
        )
        """A replay chunk, read once for all the joins resuming from the same id."""
        """Room records for joins; dropped when the revocations stream announces a change."""
        self.bus = services.bus
        self.access = services.access
        self.sales = services.sales
        self.lotteries = services.lotteries
        self.words = services.words
        self.slots = services.slots
        self.counters = RoomCounters(self.redis, self.id, settings.online_ttl_ms)
        self.tasks = TaskSet("gateway")
        self.hub = RoomHub(settings, self.counters, self.lotteries, self.tasks)
        self.deadlines: Deadlines[Conn] = Deadlines(self._on_deadline)
        self.hub.on_detach.append(self.deadlines.cancel)
        self.origins = parse_allowed(settings.allowed_origins)
        self.ip_exempt = frozenset(a.strip() for a in settings.ip_limit_exempt.split(",") if a)
        self.writes = ScriptBatcher(
            self.redis, enabled=settings.write_batching, max_pending=settings.max_pending_writes
        )
        self.inbound = Inbound(
            settings,
            self.hub,
            self.writes,
            bus=self.bus,
            sales=self.sales,
            lotteries=self.lotteries,
            words=self.words,
            tasks=self.tasks,
        )
        self._reader_redis = services.reader_client()
        self.reader = RoomReader(
            self._reader_redis, self.redis, self.id, self.hub.on_events, settings
        )
        self.hub.on_room_empty.append(self.reader.unsubscribe)
        self.server: Server | None = None
        self.draining = False
        self._joins: dict[ServerConnection, JoinRequest] = {}
        self._lost_callbacks: dict[ServerConnection, Callable[[object], None]] = {}
        """Admitted handshakes whose upgrade has not reached the handler yet."""
        self._admitting = 0
        self._ip_conns: Counter[str] = Counter()
        self._slots_held: dict[str, tuple[RoomId, str]] = {}
        """conn id -> (room, user): every slot this process holds, refreshed while held."""
        self._conn_ids = itertools.count(1)
        self._slot_refresher: asyncio.Task[None] | None = None
        self._revoked_at: dict[str, float] = {}
        """user -> monotonic time its last revocation was read (kept a minute)."""
        metrics.watch(self)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, sock: object | None = None) -> None:
        s = self.settings
        kwargs: dict[str, object] = dict(
            process_request=self.process_request,
            process_response=self.process_response,
            select_subprotocol=self.select_subprotocol,
            open_timeout=s.handshake_timeout_s,
            compression=None,
            max_size=s.max_message_bytes,
            close_timeout=s.close_timeout_s,
            max_queue=MAX_UNREAD,
            create_connection=LiveConnection,  # (its own receive path: gateway/connection.py)
            # One keepalive loop for every connection (``RoomHub.keepalive``), not a task each.
            ping_interval=None,
        )
        if sock is not None:
            self.server = await serve(self.handler, sock=sock, **kwargs)
        else:
            # (SO_REUSEPORT under ``serve --workers``: the kernel spreads connections)
            reuse = {"reuse_port": True} if s.ws_reuse_port else {}
            self.server = await serve(
                self.handler, s.host, s.ws_port, backlog=s.ws_backlog, **reuse, **kwargs
            )
        after = await last_id(self.redis, keys.revocations())
        self.reader.follow(keys.revocations(), after, self._on_revocations)
        self.reader.start()
        self.hub.start()
        self._slot_refresher = asyncio.get_running_loop().create_task(
            self._refresh_slots(), name="slot-refresh"
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def drain(self) -> None:
        """Refuse new clients, close every client with 1001, stop within the drain timeout."""
        self.draining = True
        if self.server is not None:
            await self.hub.flush_now()  # what this tick holds still goes out before the close
            self.server.close(close_connections=True)
            try:
                await asyncio.wait_for(self.server.wait_closed(), self.settings.drain_timeout_s)
            except TimeoutError:
                log.warning("drain: clients still open after %.1fs", self.settings.drain_timeout_s)
        await self.stop()

    async def stop(self) -> None:
        await cancel_and_wait([self._slot_refresher])
        await self.hub.stop()
        await self.reader.stop()
        await self.tasks.stop()
        await self.writes.drain()  # (the slots of the connections just closed go back)
        # Report zero for every room so other gateways' online totals drop at once.
        try:
            await self.counters.sync(
                {}, {rid: 0 for rid in self.hub.rooms}, int(time.time() * 1000)
            )
        except Exception:
            pass
        await self._reader_redis.aclose()

    # -- handshake -------------------------------------------------------------------------

    def select_subprotocol(self, conn: ServerConnection, offered: list[str]) -> str | None:
        for name in offered:
            if name in (sp.value for sp in SUBPROTOCOLS):
                return name
        return None

    async def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path in ("/metrics", "/healthz"):
            return await self._plain_http(request.path)
        if self.settings.socket_send_buffer:
            # Without a cap, Linux autotunes a socket's send buffer up to 4 MB: a stalled
            # viewer would pin that much kernel memory before our own 4408 limit even sees it.
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.socket_send_buffer
                )
        self._admitting += 1
        try:
            join = await self._admit(conn, request)
        except LiveroomError as exc:
            return error_response(exc)
        except RedisError as exc:  # an outage: one line per refused join, not a traceback
            log.warning("join refused, redis unreachable: %s", exc)
            return error_response(Unavailable("the gateway cannot reach its state"))
        except Exception:
            log.exception("handshake failed")
            return error_response(Unavailable("the gateway cannot reach its state"))
        finally:
            self._admitting -= 1
        self._hold(conn, join)
        return None

    def process_response(
        self, conn: ServerConnection, request: Request, response: Response
    ) -> None:
        # websockets calls the handler only for a 101: an admitted request that does not
        # upgrade (a plain GET answered 426, a bad Sec-WebSocket-Key) must give back now
        # what admission took, or every such request would leak a slot of capacity.
        if response.status_code != 101:
            self._release_pending(conn)

    def _hold(self, conn: ServerConnection, join: JoinRequest) -> None:
        """Keep an admitted handshake's slot until its handler takes it, or its TCP
        connection ends first (a handshake aborted or timed out after admission)."""
        self._joins[conn] = join
        self._ip_conns[join.ip] += 1
        self._slots_held[join.conn_id] = (join.room.id, join.identity.user)
        lost = functools.partial(self._lost_before_handler, conn)
        self._lost_callbacks[conn] = lost
        conn.connection_lost_waiter.add_done_callback(lost)

    def _lost_before_handler(self, conn: ServerConnection, _: object) -> None:
        self._lost_callbacks.pop(conn, None)
        self._release_pending(conn)

    def _release_pending(self, conn: ServerConnection) -> None:
        join = self._joins.pop(conn, None)
        if join is not None:
            self._release(join)

    def _release(self, join: JoinRequest) -> None:
        self._ip_conns[join.ip] -= 1
        if self._ip_conns[join.ip] <= 0:
            del self._ip_conns[join.ip]
        self._slots_held.pop(join.conn_id, None)
        self._give_back(join.room.id, join.identity.user, join.conn_id)

    def _give_back(self, room: RoomId, user: str, conn_id: str) -> None:
        """Release a slot with the next trip of the process's pipeline."""

        def done(reply: object) -> None:
            if isinstance(reply, BaseException):  # it expires by itself within its ttl
                log.warning("connection slot not released: %s", reply)

        try:
            self.writes.submit_commands([self.slots.release_command(room, user, conn_id)], done)
        except Unavailable as exc:
            done(exc)

    async def _refresh_slots(self) -> None:
        every = self.settings.conn_slot_ttl_ms / 3000
        while True:
            await asyncio.sleep(every)
            held = [(room, user, cid) for cid, (room, user) in self._slots_held.items()]
            old = time.monotonic() - 60
            self._revoked_at = {u: t for u, t in self._revoked_at.items() if t >= old}
            try:
                await self.slots.refresh(held, int(time.time() * 1000))
            except RedisError as exc:
                log.warning("connection slots not refreshed: %s", exc)

    async def _plain_http(self, path: str) -> Response:
        """The gateway port also answers `/metrics` and `/healthz` (for probes and scrapers)."""
        if path == "/metrics":
            body = generate_latest()
            status, ctype = 200, CONTENT_TYPE_LATEST
        else:
            try:
                await self.redis.ping()
            except Exception:
                return error_response(Unavailable("redis unreachable"))
            # Which process answered (under ``--workers`` several share the port) and its load.
            body = dumps_json(
                {
                    "status": "ok",
                    "gateway": self.id,
                    "pid": os.getpid(),
                    "connections": self.hub.connection_count,
                }
            ).encode()
            status, ctype = 200, "application/json"
        headers = Headers()
        headers["Content-Type"] = ctype
        headers["Content-Length"] = str(len(body))
        headers["Connection"] = "close"
        return Response(status, http.HTTPStatus(status).phrase, headers, body)

    async def _admit(self, conn: ServerConnection, request: Request) -> JoinRequest:
        s = self.settings
        if self.draining:
            raise Unavailable("the gateway is draining; try another or retry shortly")
        if self.hub.connection_count + len(self._joins) + self._admitting > s.max_connections:
            raise Unavailable("the gateway is over capacity")
        url = urlsplit(request.path)
        if not url.path.startswith(PATH_PREFIX):
            raise NotFound("WebSocket endpoint is /ws/rooms/{room}")
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.headers.get("Host"), self.origins, dev=s.dev):
            raise Forbidden(f"pages from {origin[:100]!r} may not connect here")
        ip = str(conn.remote_address[0]) if conn.remote_address else "?"
        if (
            s.max_conns_per_ip
            and self._ip_conns[ip] >= s.max_conns_per_ip
            and ip not in self.ip_exempt
        ):
            raise RateLimited(f"at most {s.max_conns_per_ip} connections per address")
        rid = url.path[len(PATH_PREFIX) :]
        query = parse_qs(url.query)
        identity = verify_request(
            s.secret,
            request.headers.get("Authorization"),
            _first(query, "token"),
            leeway_s=s.token_leeway_s,
        )
        if not is_valid_id(rid):
            raise NotFound(f"no room {rid[:64]!r}")
        since = None
        if query.get("since"):
            since = Cursor.parse(query["since"][0])
        room = await self.room_cache.get(RoomId(rid), time.monotonic())
        now, checked_at = time.time(), time.monotonic()
        conn_id = f"{self.id}:{next(self._conn_ids)}"
        decision = await self._check_and_take(room, identity, conn_id, now)
        return JoinRequest(identity, room, since, decision, conn_id, ip, checked_at)

    async def _check_and_take(
        self, room: Room, identity: Identity, conn_id: str, now: float
    ) -> AccessDecision:
        """The entitlement check and one of the user's slots, in ONE round trip: the slot is
        taken with the reads and given back when the check refuses."""
        user, now_ms = identity.user, int(now * 1000)
        reads = self.access.read_commands(room.id, user)
        n = len(reads)
        take = self.slots.take_command(room.id, user, conn_id, now_ms)
        replies = await self.writes.commands([*reads, take])
        for reply in replies[:n]:
            if isinstance(reply, Exception):
                raise reply
        taken = await self.slots.taken(replies[n], room.id, user, conn_id, now_ms)
        try:
            decision = await self.access.decide(room, identity, replies[:n], now=now)
        except BaseException:
            if taken:
                self._give_back(room.id, user, conn_id)
            raise
        if not taken:
            limit = self.settings.max_conns_per_user
            raise RateLimited(f"at most {limit} connections per user per room")
        return decision

    # -- connection ------------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        join = self._joins.pop(ws, None)
        lost = self._lost_callbacks.pop(ws, None)
        if lost is not None:  # the handler gives back what admission took from here on
            ws.connection_lost_waiter.remove_done_callback(lost)
        if join is None:  # pragma: no cover - websockets only calls us after process_request
            await ws.close(1011, "no join state")
            return
        # The handshake's parsed request and response are done with: about 4 KiB a connection
        # otherwise. The request object itself must stay (websockets reads frames only once it
        # is set, and its parser keeps a reference), so it is emptied instead.
        if ws.request is not None:
            ws.request.path, ws.request.headers = "", NO_HEADERS
        ws.response = None
        now = time.time()
        sp = negotiate([ws.subprotocol] if ws.subprotocol else [])
        user = join.identity.user
        limits = self.hub.limits_for(join.room.id, user, now)
        session = ViewerSession(
            join.identity, join.room.id, join.decision, self.settings, now, limits
        )
        conn = Conn(ws, session, sp, self.tasks, self.hub.stats)
        local = self.hub.attach(conn)
        if self._revoked_at.get(user, -1.0) >= join.checked_at:
            # A refund or ban reached us after this join's check but before it was attached
            # (so the revocation found no connection to close): check again now.
            self.tasks.spawn(self._recheck(conn, "access changed while joining"))
        self._arm(conn, now)
        try:
            await self._join(conn, local, join)
            await self.inbound.serve(conn)
        except ConnectionClosed:
            pass
        finally:
            self.hub.detach(conn)
            self._release(join)
            code = ws.close_code
            # A close the server decided (4403 access ended, 4408 slow, ...) is worth a line.
            level = logging.INFO if code is not None and code >= 4000 else logging.DEBUG
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "connection closed",
                    extra={"conn": join.conn_id, "room": join.room.id, "user": user, "code": code},
                )

    def _arm(self, conn: Conn, now: float) -> None:
        """(Re)arm a connection's deadline at its session's next one (the token's expiry, a
        preview's end); an upgrade to a ticket moves it. One timer for all (``Deadlines``)."""
        self.deadlines.arm(conn, conn.session.deadline(), now)

    def _on_deadline(self, conn: Conn) -> None:
        now = time.time()
        close = conn.session.on_time(now)
        if close is not None:
            conn.apply(close)
        else:
            self._arm(conn, now)

    def _on_revocations(self, entries: list) -> None:
        """Reader callback: re-check the access of every local connection concerned."""
        seen = time.monotonic()
        for _, fields in entries:
            r = decode_revocation(fields)
            if r.user:
                self._revoked_at[r.user] = seen
            if r.room_record:
                self.room_cache.forget(r.room)
                continue
            if r.words:
                # The room's blocked words changed: the next danmaku loads the new list once.
                local = self.hub.rooms.get(r.room) if r.room is not None else None
                if local is not None:
                    local.words = None
                    local.words_loading = None
                continue
            if r.muted_until is not None:
                for conn in self.hub.by_user.get(r.user, ()):
                    if conn.room == r.room:
                        conn.session.on_mute(r.muted_until)
                continue
            for conn in list(self.hub.by_user.get(r.user, ())):
                # Hosts keep access whatever changes. A room-wide change (a ban, a refund) is
                # re-checked on free rooms too; a membership change cannot end a free access.
                kind = conn.session.access
                if kind is AccessKind.HOST or (r.room is not None and r.room != conn.room):
                    continue
                if r.room is None and kind is AccessKind.FREE:
                    continue
                self.tasks.spawn(self._recheck(conn, r.reason))

    async def _recheck(self, conn: Conn, reason: str) -> None:
        """Check a connection's access again after a revocation. The room record comes from the
        cache (a record change is announced and drops it) and the reads ride the batcher's next
        trip: a refund wave of a hundred users costs a round trip or two, not two each."""
        now = time.time()
        try:
            room = await self.room_cache.get(conn.room, time.monotonic())
            reads = self.access.read_commands(room.id, conn.identity.user)
            replies = await self.writes.commands(reads)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            decision = await self.access.decide(room, conn.identity, replies, now=now)
        except LiveroomError as exc:
            conn.close(CLOSE_ACCESS_ENDED, f"access ended: {reason or exc.message}")
            return
        except Exception:
            log.exception("access re-check failed; closing to be safe")
            conn.close(CLOSE_ACCESS_ENDED, "access could not be confirmed")
            return
        conn.session.on_access(decision)
        self._arm(conn, now)

    async def _read_state(self, rid: RoomId) -> JoinState:
        """What a `welcome` needs of the room (``self.states``: read once for a burst)."""
        now = time.time()
        local = self.hub.rooms.get(rid)
        need_counts = (
            local is None
            or local.likes is None
            or local.online is None
            or local.reported_online < 0
        )
        head, lotteries, sale, counts = await asyncio.gather(
            self.bus.head(rid),
            self.lotteries.open_lotteries(rid, now),
            self.sales.open_sale(rid),
            self.counters.snapshot(rid, int(now * 1000), exclude_self=True)
            if need_counts
            else asyncio.sleep(0),
        )
        return JoinState(head, lotteries, sale, counts)

    async def _welcome(
        self, conn: Conn, local: LocalRoom, join: JoinRequest, state: JoinState, plan: ReplayPlan
    ) -> dict:
        """The `welcome` event: the room's snapshot as this gateway knows it."""
        room = join.room
        likes, online = local.likes, local.online
        if likes is None or online is None or local.reported_online < 0:
            likes, online = state.counts or (0, 0)
        else:
            online -= local.reported_online  # other gateways' share, as last reported
        online += len(local.conns)
        open_lotteries = state.lotteries
        for rec in open_lotteries:  # (history keeps this current from now on)
            local.lotteries.setdefault(rec["id"], (Rule.parse(rec["rule"]), rec["ends_at"]))
        return {
            "type": EventType.WELCOME,
            "user": conn.identity.public(),
            "room": {
                "id": room.id,
                "title": room.title,
                "status": room.status.value,
                "online": online,
                "likes": likes,
                "sale": state.sale,
                "lottery": open_lotteries[-1] if open_lotteries else None,
            },
            "access": join.decision.kind,
            "preview_ends_at": join.decision.preview_ends_at,
            "tier": join.decision.tier,
            "epoch": room.epoch,
            "last_id": state.head.last_id,
            "recovered": plan.recovered,
        }

    async def _join(self, conn: Conn, local: LocalRoom, join: JoinRequest) -> None:
        """welcome, the replay (when resuming), then the hand-off to the shared tick."""
        room = join.room
        state = await self.states.get(room.id)
        head = state.head
        self.reader.subscribe(room.id, head.last_id)
        plan = conn.session.replay_plan(head, room.epoch, join.since)
        first: list = [await self._welcome(conn, local, join, state, plan)]
        after, chunk, text = plan.after, self.settings.replay_chunk, not conn.sp.binary
        while True:
            # Replay with flow control (await send): a long catch-up must not trip 4408.
            behind = plan.recovered and after != head.last_id
            events = await self.replays.get((room.id, after, chunk)) if behind else []
            conn.session.replayed(events)
            if events:
                after = events[-1]["id"]
            last = len(events) < chunk
            if last:  # the hand-off rides the last message: `send` writes it before it yields
                events = events + self.hub.go_live(conn)  # (not +=: replays are shared)
            await conn.ws.send(encode(first + events, conn.sp), text=text)
            first = []
            if last:
                break
