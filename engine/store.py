"""The Redis client every role uses: bounded waits, and reconnects that survive a Redis restart.

Two kinds of trouble, two answers:
- Redis restarted or the connection broke (``ConnectionError``): reconnect and retry, a few
  times with a short backoff. This is what makes a restart invisible to callers.
- Redis does not answer (a stall: paused, swapping, a slow disk; ``TimeoutError``): give up
  after ``REPLY_TIMEOUT_S`` and do NOT retry. A retry would wait as long again (a client would
  hear `unavailable` only after many times the timeout) and queue one more copy of the command
  in the stalled Redis. Writes a client waits on are ``scripts.GuardedScript``s whose deadline
  (``WRITE_DEADLINE_S``) is shorter than the timeout, so a timed-out write does nothing when
  Redis wakes up and runs what it had queued.

While Redis is away, waiting out the timeout once per command would still add up: one
connection's ops are handled in order, a buy pipeline is two round trips, batches queue behind
each other. So the pool fails fast (``Breaker``): after a reply timed out or a connection was
refused, commands fail at once, without a round trip, while one PING at a time probes Redis; the
first reply closes the breaker again.

The guard compares the gateway's clock (the deadline) with Redis's (``TIME``): hosts are assumed
to agree within ``REPLY_TIMEOUT_S - WRITE_DEADLINE_S`` (NTP does far better), and a reply
delayed by more than that margin after the write ran (a disk stalling on fsync) is still
answered `unavailable` although the write happened: resending the same ref then gets its ack.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.exceptions import TimeoutError as ReplyTimeout
from redis.maint_notifications import MaintNotificationsConfig

REPLY_TIMEOUT_S = 3.0
"""Longest wait for one Redis reply; past it the command fails and its op answers
`unavailable`. Redis answers in microseconds to milliseconds; this is for a Redis that stalls."""

WRITE_DEADLINE_S = 1.5
"""A guarded write that Redis starts later than this after it was sent does nothing."""

CONNECT_TIMEOUT_S = 2.0
"""Longest wait for a new TCP connection to Redis."""

RETRIES = 3
"""Reconnect-and-retry attempts after a broken connection (0.1 + 0.2 + 0.4 s of backoff)."""


class Breaker:
    """Whether Redis is known to be away: a reply timed out or a connection was refused, and
    nothing has answered since."""

    def __init__(self) -> None:
        self.away_since: float | None = None
        """Monotonic time of the first failure of this outage; None while Redis answers."""

    @property
    def open(self) -> bool:
        return self.away_since is not None

    def failed(self, now: float) -> None:
        if self.away_since is None:
            self.away_since = now

    def answered(self) -> None:
        self.away_since = None


class FailFastPool(BlockingConnectionPool):
    """A blocking pool that refuses at once, without a round trip, while ``breaker`` is open.

    Meanwhile one PING at a time probes Redis; its reply (or any other reply) closes the breaker.
    """

    breaker: Breaker
    _probe: asyncio.Task[None] | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self.breaker.open:
            if self._probe is None or self._probe.done():
                self._probe = asyncio.get_running_loop().create_task(self._ping())
            raise ConnectionError("Redis has not answered lately; failing fast until it does")
        return await super().get_connection(*args, **kwargs)

    async def _ping(self) -> None:
        try:
            conn = await super().get_connection()
        except (RedisError, OSError):
            return  # refused again (``_watched`` noted it)
        try:
            await conn.send_command("PING")
            await conn.read_response()  # a reply closes the breaker (``_watched``)
        except (RedisError, OSError):
            pass  # still away; the next refused command starts the next probe
        finally:
            await self.release(conn)


def _watched(base: type[AbstractConnection], breaker: Breaker) -> type[AbstractConnection]:
    """``base`` (whatever the URL asked for: TCP, TLS, unix socket) reporting to ``breaker``."""

    class Watched(base):  # type: ignore[valid-type,misc]
        async def connect(self) -> None:
            try:
                await super().connect()
            except (ReplyTimeout, ConnectionError):  # after its own reconnect attempts
                breaker.failed(time.monotonic())
                raise

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                response = await super().read_response(*args, **kwargs)
            except ReplyTimeout:
                # (a reset connection is not a sign of an outage: after a Redis restart every
                # pooled connection fails once, and the retry on a new one works at once)
                breaker.failed(time.monotonic())
                raise
            breaker.answered()
            return response

    Watched.__name__ = Watched.__qualname__ = f"Watched{base.__name__}"
    return Watched


CLUSTER_SCHEME = "redis+cluster"
"""``redis+cluster://HOST:PORT`` names any one node of a Redis Cluster; the rest are found."""


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in (CLUSTER_SCHEME, CLUSTER_SCHEME.replace("redis", "rediss"))


def is_cluster(redis: Any) -> bool:
    """Whether ``redis`` is a Redis Cluster client (``connect`` of a ``redis+cluster://`` URL)."""
    return isinstance(redis, RedisCluster)


def _retry() -> Retry:
    return Retry(
        ExponentialBackoff(cap=0.5, base=0.05), retries=RETRIES, supported_errors=(ConnectionError,)
    )


def connect_cluster(
    url: str, *, socket_timeout: float | None = REPLY_TIMEOUT_S, max_connections: int = 64
) -> RedisCluster:
    """A Redis Cluster client: keys are routed by hash slot (every key of a room shares the
    room's tag, see ``engine.keys``), MOVED/ASK are followed, the slot map is refreshed after a
    failover. There is no breaker here: a node that does not answer fails each of its commands
    after the reply timeout (redis-py's cluster client owns its per-node pools).

    ``await client.initialize()`` before using it from many tasks at once (``Services.start``
    does): until it knows the slot map, redis-py 8 sends a command to any node, and the MOVED
    replies of a burst make it rebuild its node table while commands are in flight on the
    connections it closes; those commands are retried and may run twice."""
    parts = urlsplit(url)
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    return RedisCluster.from_url(  # type: ignore[no-any-return]
        f"{scheme}://{parts.netloc}",
        max_connections=max_connections,
        socket_timeout=socket_timeout,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=_retry(),
        retry_on_error=[ConnectionError],
        health_check_interval=10,
        # (no CLIENT MAINT_NOTIFICATIONS handshake on each new connection: we follow MOVED)
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


def connect(
    url: str, *, socket_timeout: float | None = REPLY_TIMEOUT_S, max_connections: int = 64
) -> Redis:
    """A client whose pool makes callers WAIT for a free connection (up to 10 s) rather than
    fail: a burst of handshakes must queue for Redis, not turn into 503s.

    ``socket_timeout=None`` is for the room reader's dedicated client only: its XREAD BLOCK
    waits for events by design."""
    if socket_timeout is not None and socket_timeout <= WRITE_DEADLINE_S:
        raise ValueError("the reply timeout must be longer than the write deadline")
    if is_cluster_url(url):
        return connect_cluster(  # type: ignore[return-value]
            url, socket_timeout=socket_timeout, max_connections=max_connections
        )
    pool = FailFastPool.from_url(
        url,
        max_connections=max_connections,
        timeout=10,
        socket_timeout=socket_timeout,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=_retry(),
        retry_on_error=[ConnectionError],
        health_check_interval=10,
    )
    pool.breaker = Breaker()
    pool.connection_class = _watched(pool.connection_class, pool.breaker)
    return Redis(connection_pool=pool)
