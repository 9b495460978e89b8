"""A connection's ops (PROTOCOL.md §4), read, checked by its session, answered on it only.

The writes a client waits on most, danmaku, `buy` and `enter`, never hold up the read loop: each is
checked by the session, handed to the process's ``engine.pipeline.ScriptBatcher`` (one pipelined
round trip for every write made meanwhile, in every connection) and answered from its callback,
so the next message is read while the write is on its way. A connection has at most
``max_inflight_writes`` writes outstanding; at the bound, reading it waits (TCP then pushes back
on the client). Writes leave in the order they were read, so one connection's danmaku keep their
order. Every reply made in one loop iteration to one connection goes out as one frame
(``RoomHub.reply``). Lottery entries take the same path; `like` and `ping` are answered in line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from websockets.exceptions import ConnectionClosed

from engine import ops
from engine.bus import RoomBus, published
from engine.codec import decode_message
from engine.errors import BadRequest, Internal, LiveroomError, NotFound, Unavailable
from engine.events import EventType
from engine.ids import RoomId, is_valid_id
from engine.lottery import Entry, LotteryBook, LotteryClosed, NotEligible, Rule, entry_of
from engine.pipeline import ScriptBatcher
from engine.sales import MAX_QTY, NotOpen, SaleLedger, answer_to_order
from engine.session import Close
from engine.settings import Settings
from engine.tasks import TaskSet
from engine.words import EMPTY, BlockedWords, WordFilter
from gateway.connection import Broken
from gateway.hub import Conn, RoomHub

log = logging.getLogger("liveroom.gateway")

Answer = Callable[[Any], dict | None]
"""Turns a write script's reply into the op's `ack` (or raises its refusal)."""


def as_error(exc: BaseException) -> LiveroomError:
    """What a client hears about a failure: its own error, or `unavailable` / `internal`."""
    if isinstance(exc, LiveroomError):
        return exc
    if isinstance(exc, RedisError | OSError):
        return Unavailable("state is unreachable for a moment; resend (same ref)")
    log.error("an op failed", exc_info=exc)
    return Internal("internal error; resend (same ref)")


class Inbound:
    """Every connection's ops, for one gateway process."""

    def __init__(
        self,
        settings: Settings,
        hub: RoomHub,
        writes: ScriptBatcher,
        *,
        bus: RoomBus,
        sales: SaleLedger,
        lotteries: LotteryBook,
        words: BlockedWords,
        tasks: TaskSet,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.writes = writes
        self.bus = bus
        self.sales = sales
        self.lotteries = lotteries
        self.words = words
        self.tasks = tasks
        self.blocked_words = WordFilter.from_setting(settings.blocked_words)
        """The deployment's words, blocked in every room beside each room's own list."""

    async def serve(self, conn: Conn) -> None:
        """Read and answer ``conn``'s ops until it closes."""
        s = self.settings
        session, limit, stats = conn.session, s.max_inflight_writes, self.hub.stats
        inbox = conn.ws.recv_messages
        while (message := await inbox.next()) is not None:
            if type(message) is Broken:  # invalid UTF-8, too many fragments: the RFC's close
                await conn.ws.close(message.code, message.reason)
                return
            now = time.time()
            handle, notice = session.on_message(now)
            if notice is not None:
                self.hub.reply(conn, notice)
            if not handle:
                stats.op("message", "dropped")
                continue  # over the connection's rate: dropped before any decoding
            ref, kind = None, "invalid"
            try:
                value = decode_message(
                    message, max_bytes=s.max_message_bytes, max_depth=s.max_depth
                )
                ref = ops.ref_of(value)
                op = ops.parse_op(value)
                kind = value["op"]  # (a known op's name: parse_op accepted it)
                if isinstance(op, ops.Danmaku):
                    await self._danmaku(conn, op, now)
                elif isinstance(op, ops.Buy):
                    self._buy(conn, op, now)
                elif isinstance(op, ops.Enter):
                    await self._enter(conn, op, now)
                else:
                    reply = await self._in_line(conn, op, now)
                    stats.op(kind, "ok")
                    if reply is not None:
                        self.hub.reply(conn, reply)
            except ConnectionClosed:
                raise
            except Exception as exc:  # a refusal, or a failure (a room's words unreadable)
                close = self._refuse(conn, as_error(exc), ref, now, kind)
            else:
                close = None
            if close is not None:
                stats.closes[close.code] += 1
                await conn.ws.close(close.code, close.reason)
                return
            if conn.inflight >= limit:
                conn.resume = asyncio.get_running_loop().create_future()
                await conn.resume

    def _refuse(
        self, conn: Conn, exc: LiveroomError, ref: str | None, now: float, kind: str
    ) -> Close | None:
        """Send an `error` (counted under the op ``kind``); the close when it was one bad
        message too many."""
        self.hub.stats.op(kind, exc.code)
        reply, close = conn.session.on_refused(exc, ref, now)
        self.hub.reply(conn, reply)
        return close

    # -- writes through the batcher ------------------------------------------------------

    def _write(
        self,
        conn: Conn,
        call: tuple[list, list],
        script: Any,
        answer: Answer,
        ref: str | None,
        kind: str,
    ) -> None:
        """Hand one write to the batcher; its answer reaches ``conn`` from the callback."""
        now = time.time()

        def done(reply: Any) -> None:
            conn.inflight -= 1
            if conn.resume is not None and conn.inflight < self.settings.max_inflight_writes:
                conn.resume.set_result(None)
                conn.resume = None
            try:
                if isinstance(reply, BaseException):
                    raise reply
                ack = answer(reply)  # (raises the op's refusal)
            except Exception as exc:
                close = self._refuse(conn, as_error(exc), ref, now, kind)
                if close is not None:
                    conn.apply(close)
                return
            self.hub.stats.op(kind, "ok")
            if ack is not None:
                self.hub.reply(conn, ack)

        self.writes.submit(script, call[0], call[1], done)  # raises Unavailable when full
        conn.inflight += 1

    async def _danmaku(self, conn: Conn, op: ops.Danmaku, now: float) -> None:
        session = conn.session
        local = self.hub.rooms.get(conn.room)
        words = local.words if local is not None and local.words is not None else None
        if words is None:
            words = await self._room_words(conn)
        text = session.check_danmaku(op.text, now, self.blocked_words, words)
        event = session.danmaku_event(text, now)
        # The same ref publishes once (a resend, a retry): the same ack.
        call = self.bus.publish_call(conn.room, event, conn.identity.user, op.ref)

        def answer(reply: Any) -> dict:
            event_id, fresh = published(reply)
            if fresh:
                self._published(conn, text, now)
            return {"type": EventType.ACK, "ref": op.ref, "id": event_id}

        self._write(conn, call, self.bus.publish_script, answer, op.ref, "danmaku")

    def _published(self, conn: Conn, text: str, now: float) -> None:
        self.hub.count_danmaku(conn.room)
        local = self.hub.rooms.get(conn.room)
        if local is not None and local.lotteries:  # keyword lotteries, from history
            for lottery in conn.session.keyword_entries(text, local.lotteries, now):
                self.tasks.spawn(self._auto_enter(conn.room, lottery, conn.identity.user, now))

    def _buy(self, conn: Conn, op: ops.Buy, now: float) -> None:
        conn.session.check_entitled()
        if not op.ref:
            raise BadRequest("`buy` needs a `ref` (it makes resending safe)")
        if not is_valid_id(op.sale):
            raise NotOpen(f"no sale {op.sale[:64]!r} in this room")
        if not 1 <= op.qty <= MAX_QTY:
            raise BadRequest(f"`qty` must be 1..{MAX_QTY}")
        call = self.sales.buy_call(
            conn.room, op.sale, conn.identity.user, op.ref, op.qty, conn.session.tier, now
        )

        def answer(reply: Any) -> dict:
            order = answer_to_order(reply)  # (raises the refusal: sold_out, limit, closed...)
            return {"type": EventType.ACK, "ref": op.ref, "order": order.to_dict()}

        self._write(conn, call, self.sales.buy_script, answer, op.ref, "buy")

    # -- ops answered in line ------------------------------------------------------------

    async def _in_line(self, conn: Conn, op: ops.Op, now: float) -> dict | None:
        if isinstance(op, ops.Like):
            self._like(conn, op, now)
            return None
        if isinstance(op, ops.Ping):
            return {"type": EventType.ACK, "ref": op.ref, "ts": now}
        raise BadRequest("unsupported op")  # pragma: no cover

    def _like(self, conn: Conn, op: ops.Like, now: float) -> None:
        got = conn.session.take_likes(op.count, now)
        if got:
            self.hub.add_likes(conn.room, got)
            local = self.hub.rooms.get(conn.room)
            if local is not None and local.lotteries:  # reported with the next counters
                for lottery in conn.session.like_entries(local.lotteries, now):
                    local.lottery_likers.setdefault(lottery, set()).add(conn.identity.user)

    async def _rule(self, conn: Conn, lottery: str) -> Rule:
        local = self.hub.rooms.get(conn.room)
        known = local.lotteries.get(lottery) if local is not None else None
        if known is not None:
            return known[0]
        if not is_valid_id(lottery):
            raise LotteryClosed(f"no open lottery {lottery[:64]!r}")
        try:
            record = await self.lotteries.get(conn.room, lottery, with_entrants=False)
        except NotFound:
            raise LotteryClosed(f"no open lottery {lottery!r}") from None
        return Rule.parse(record["rule"])

    async def _enter(self, conn: Conn, op: ops.Enter, now: float) -> None:
        """An entry, checked here (the rule is known from history: no read) and written
        through the batcher like a `buy`: a burst of entries at a lottery's start shares
        round trips instead of taking a pool connection each."""
        conn.session.check_entitled()
        rule = await self._rule(conn, op.lottery)
        reason = conn.session.check_eligible(rule)
        if reason is not None:
            raise NotEligible(reason)
        call = self.lotteries.enter_call(conn.room, op.lottery, conn.identity.user, now)

        def answer(reply: Any) -> dict:
            entry = entry_of(reply, op.lottery)  # (raises `closed`)
            conn.session.entered(op.lottery)
            ack = {"type": EventType.ACK, "ref": op.ref, "lottery": op.lottery}
            if entry is Entry.WAITING_LIKE:
                ack["pending"] = "like"  # a like in this room completes the entry
            return ack

        self._write(conn, call, self.lotteries.enter_script, answer, op.ref, "enter")

    async def _auto_enter(self, room: RoomId, lottery: str, user: str, now: float) -> None:
        try:
            await self.lotteries.enter(room, lottery, user, now)
        except LiveroomError:
            pass  # closed meanwhile: a keyword after the close simply does not enter
        except Exception as exc:
            log.warning("keyword entry failed: %s", exc)

    async def _room_words(self, conn: Conn) -> WordFilter:
        """The room's own blocked words, read from Redis once per local room and again only
        after the revocations stream announced a change: never a read per danmaku."""
        local = self.hub.rooms.get(conn.room)
        if local is None:  # pragma: no cover - a live connection's room is attached
            return EMPTY
        if local.words is not None:
            return local.words
        task = local.words_loading
        if task is None:  # one load per room, however many danmaku wait for it
            task = local.words_loading = asyncio.ensure_future(self.words.get(conn.room))
        try:
            words = await asyncio.shield(task)
        except BaseException:
            if local.words_loading is task and task.done():
                local.words_loading = None  # a failed load is retried by the next danmaku
            raise
        if local.words_loading is task:  # no change announced while it loaded
            local.words = words
            local.words_loading = None
        return words
