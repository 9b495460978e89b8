"""One process's write scripts (and a join's reads), gathered into pipelined round trips.

Every guarded script call (``engine.scripts.GuardedScript``: a danmaku's ``publish.lua``, a
``buy.lua``, a lottery entry) made while a trip is in flight goes in the next trip. Each call
stays its own atomic EVALSHA; only the round trip is shared. Nothing waits for a trip to fill:
the first call of an idle process starts one at the end of the current loop iteration, so
batching adds no latency at low load and saves round trips, pool connections and Python work at
high load. Calls go out in the order they were made, so one connection's ops keep their order.
A group of plain commands (``submit_commands``: a join's entitlement reads and slot, a slot given
back) rides the same trips; its commands are sent together and answered together.

We pack the EVALSHA commands ourselves, straight into RESP: redis-py's pipeline sends a
``SCRIPT EXISTS`` round trip before every batch that carries scripts and builds several Python
objects per command. On a Redis Cluster a trip is redis-py's cluster pipeline instead, which
sends each node its share of the calls at once (each call's keys are one room's: one slot).
A ``NOSCRIPT`` answer (Redis restarted or flushed its script cache) did
nothing, so those calls are sent again, once, after ``SCRIPT LOAD``.

Bounds: at most ``max_pending`` calls queued or in flight (beyond, ``Unavailable`` at once:
resending the same ref later is safe); every reply within ``REPLY_TIMEOUT_S`` of the trip's
send (then the trip's callers hear ``Unavailable`` and the pool's breaker opens); a trip that
the connection drops is resent on a fresh connection, as redis-py's own retry would.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as ReplyTimeout

from engine.errors import Unavailable
from engine.scripts import GuardedScript, late_to_unavailable, load_everywhere
from engine.stats import REDIS_BUCKETS_S, Histogram
from engine.store import REPLY_TIMEOUT_S, RETRIES, is_cluster

log = logging.getLogger("liveroom.pipeline")

Done = Callable[[Any], None]
"""Gets the call's reply, or the exception that answers it (``Unavailable``, a Redis error)."""

TRIP_TIMEOUT_S = 2 * REPLY_TIMEOUT_S + 2
"""Longest one trip may take, a NOSCRIPT resend and reconnects included, before its callers are
answered `unavailable` (the scripts' own deadline makes a late write do nothing)."""


def _bulk(value: Any) -> bytes:
    b = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


def pack_command(*parts: Any) -> bytes:
    """One command in RESP."""
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(p) for p in parts)


def pack_evalsha(sha: str, keys: list[Any], args: list[Any]) -> bytes:
    """One ``EVALSHA sha numkeys *keys *args`` in RESP."""
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (len(keys) + len(args) + 3, sha.encode())]
    parts.append(_bulk(len(keys)))
    parts += [_bulk(k) for k in keys]
    parts += [_bulk(a) for a in args]
    return b"".join(parts)


class ScriptBatcher:
    """Queue of guarded script calls; one trip in flight at a time, each carrying all queued."""

    def __init__(
        self,
        redis: Redis,
        *,
        enabled: bool = True,
        max_batch: int = 1024,
        max_pending: int = 20_000,
        trip_timeout_s: float = TRIP_TIMEOUT_S,
    ) -> None:
        self.redis = redis
        self.enabled = enabled
        """Off: each call is its own EVALSHA on a pool connection (the benchmark's control)."""
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.trip_timeout_s = trip_timeout_s
        self.pending = 0
        """Calls queued or in flight."""
        self._queue: list[tuple[GuardedScript, list[Any], list[Any], Done]] = []
        self._flusher: asyncio.Task[None] | None = None
        """The one flush in flight (held: asyncio keeps only weak references to tasks)."""
        self._solo: set[asyncio.Task[None]] = set()
        self.trips = 0
        self.calls = 0
        self.latency = Histogram(REDIS_BUCKETS_S)
        """Seconds from a trip's send to its last reply (NOSCRIPT resends included)."""
        self.errors: Counter[str] = Counter()
        """Failed trips by kind (``timeout``, ``connection``, ``other``): every caller of one
        heard ``unavailable``."""

    def submit(self, script: GuardedScript, keys: list[Any], args: list[Any], done: Done) -> None:
        """Queue one call; ``done`` gets its answer. Raises ``Unavailable`` when full."""
        if not self.enabled:
            self._take_one()
            task = asyncio.ensure_future(self._alone(script, keys, args, done))
            self._solo.add(task)
            task.add_done_callback(self._solo.discard)
            return
        self._enqueue((script, keys, args, done))

    def submit_commands(self, commands: list[tuple[Any, ...]], done: Done) -> None:
        """Queue plain commands, sent together in one trip; ``done`` gets the list of their
        replies, parsed as redis-py parses them (an error reply in its place), or one exception
        for all. Raises
        ``Unavailable`` when full."""
        self._enqueue((None, commands, [], done))  # type: ignore[arg-type]

    def _take_one(self) -> None:
        if self.pending >= self.max_pending:
            raise Unavailable("too many writes in flight here; resend the same ref shortly")
        self.pending += 1
        self.calls += 1

    def _enqueue(self, item: tuple[GuardedScript, list[Any], list[Any], Done]) -> None:
        self._take_one()
        self._queue.append(item)
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())

    async def commands(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``submit_commands``, awaited."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit_commands(commands, lambda reply: _settle(fut, reply))
        return await fut  # type: ignore[no-any-return]

    async def call(self, script: GuardedScript, keys: list[Any], args: list[Any]) -> Any:
        """``submit``, awaited: the reply, or the exception raised."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit(script, keys, args, lambda reply: _settle(fut, reply))
        return await fut

    async def drain(self, timeout_s: float = TRIP_TIMEOUT_S) -> None:
        """Wait until what is queued has been answered (a process stopping)."""
        async with asyncio.timeout(timeout_s):
            while self._flusher is not None or self._solo:
                await asyncio.gather(
                    *(t for t in (self._flusher, *self._solo) if t is not None),
                    return_exceptions=True,
                )

    async def _alone(
        self, script: GuardedScript, keys: list[Any], args: list[Any], done: Done
    ) -> None:
        try:
            reply: Any = await script(keys=keys, args=args)
        except Exception as exc:
            reply = exc
        finally:
            self.pending -= 1
        done(reply)

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self.trips += 1
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(self.trip_timeout_s):
                        replies: list[Any] = await self._trip(batch)
                    self.latency.observe(time.perf_counter() - t0)
                except TimeoutError:
                    self.errors["timeout"] += 1
                    # Every wait inside has its own bound; this one holds whatever slips past
                    # them, so that a caller always hears back (resending the same ref is safe).
                    log.warning("a write trip took over %.1f s", self.trip_timeout_s)
                    late = Unavailable("writes are slow to confirm; resend the same ref")
                    replies = [late] * len(batch)
                except Exception as exc:  # the whole trip failed: every caller learns it
                    self.errors[_error_kind(exc)] += 1
                    replies = [exc] * len(batch)
                finally:
                    self.pending -= len(batch)
                for (_, _, _, done), reply in zip(batch, replies, strict=True):
                    try:
                        done(reply)
                    except Exception:  # one caller's bug must not leave the others unanswered
                        log.exception("a write's callback failed")
        finally:
            self._flusher = None

    async def _trip(self, batch: list[tuple[GuardedScript, list[Any], list[Any], Done]]) -> list:
        if is_cluster(self.redis):
            return await self._cluster_trip(batch)
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            return await conn.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: self._with_scripts(partial(self._send, conn), batch),
                lambda _error: conn.disconnect(),
            )
        finally:
            await pool.release(conn)

    async def _cluster_trip(self, batch: list) -> list:
        """A trip on a cluster. The calls a dropped connection failed (redis-py's cluster
        pipeline hands back the error in their place) are resent, as the one-Redis trip
        resends its calls: every call here is safe to resend (refs, guarded scripts,
        idempotent slot commands)."""
        replies: list[Any] = [None] * len(batch)
        todo = list(range(len(batch)))
        for attempt in range(RETRIES + 1):
            if attempt:
                await asyncio.sleep(0.05 * 2 ** (attempt - 1))
            try:
                got = await self._with_scripts(self._cluster_send, [batch[i] for i in todo])
            except ConnectionError as exc:
                got = [exc] * len(todo)
            for i, reply in zip(todo, got, strict=True):
                replies[i] = reply
            todo = [i for i in todo if _dropped(replies[i])]
            if not todo:
                break
        return replies

    async def _with_scripts(self, send: Callable[[list], Awaitable[list]], batch: list) -> list:
        replies = await send(batch)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError) and batch[i][0]]
        if missing:  # the script cache was emptied: those calls did nothing; load and resend
            await load_everywhere(self.redis, list({batch[i][0] for i in missing}))
            again = await send([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _send(self, conn: Any, calls: list) -> list:
        deadlines: dict[float, int] = {}
        packed = []
        for script, keys, args, _ in calls:
            if script is None:  # a group of plain commands
                packed += [pack_command(*c) for c in keys]
                continue
            packed.append(pack_evalsha(script.sha, keys, [*args, _due(deadlines, script)]))
        await conn.send_packed_command(b"".join(packed))
        replies: list[Any] = []
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                for script, keys, _, _ in calls:
                    if script is None:
                        replies.append([self._parsed(c, await _read(conn)) for c in keys])
                    else:
                        replies.append(late_to_unavailable(await _read(conn)))
        except TimeoutError:
            # Redis took the commands and does not answer: the pool's breaker learns it, the
            # connection (with replies still owed on it) is dropped, and the callers hear
            # `unavailable` (the scripts' deadline makes their writes do nothing later).
            breaker = getattr(self.redis.connection_pool, "breaker", None)
            if breaker is not None:
                breaker.failed(time.monotonic())
            await conn.disconnect(nowait=True)
            raise ReplyTimeout("Redis did not answer a write trip in time") from None
        return replies

    def _parsed(self, command: tuple[Any, ...], reply: Any) -> Any:
        """A plain command's reply as redis-py parses it (``HGETALL`` a dict, ``SET`` True),
        as the cluster pipeline answers too."""
        parse = self.redis.response_callbacks.get(str(command[0]).upper())
        return reply if parse is None or isinstance(reply, Exception) else parse(reply)

    async def _cluster_send(self, calls: list) -> list:
        """The trip on a Redis Cluster: redis-py's cluster pipeline sends each node its share
        (every call's keys are one room's, so one slot) at once and follows MOVED and ASK."""
        deadlines: dict[float, int] = {}
        async with self.redis.pipeline() as p:
            for script, keys, args, _ in calls:
                if script is None:
                    for command in keys:
                        p.execute_command(*command)
                    continue
                due = _due(deadlines, script)
                p.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, due)
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                flat = await p.execute(raise_on_error=False)
        replies: list[Any] = []
        i = 0
        for script, keys, _, _ in calls:
            if script is None:
                replies.append(flat[i : i + len(keys)])
                i += len(keys)
            else:
                replies.append(late_to_unavailable(flat[i]))
                i += 1
        return replies


def _dropped(reply: Any) -> bool:
    """Whether a call's reply is a dropped connection (a group's: any of its commands')."""
    if isinstance(reply, list):
        return any(isinstance(r, ConnectionError) for r in reply)
    return isinstance(reply, ConnectionError)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ReplyTimeout):
        return "timeout"
    if isinstance(exc, ConnectionError | OSError):
        return "connection"
    return "other"


def _due(deadlines: dict[float, int], script: GuardedScript) -> int:
    """The deadline (ms) of ``script``'s calls in this trip. The clock is read as the calls are
    handed to Redis: time spent queued before this point does not count against it."""
    due = deadlines.get(script.deadline_s)
    if due is None:
        due = deadlines[script.deadline_s] = int((time.time() + script.deadline_s) * 1000)
    return due


async def _read(conn: Any) -> Any:
    """One reply; an error reply is returned, not raised (the trip goes on)."""
    try:
        return await conn.read_response(timeout=math.inf)
    except ResponseError as exc:
        return exc


def _settle(fut: asyncio.Future[Any], reply: Any) -> None:
    if fut.done():
        return
    if isinstance(reply, BaseException):
        fut.set_exception(reply)
    else:
        fut.set_result(reply)
