"""The Redis client every role uses, with reconnects that survive a Redis restart."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry


def connect(url: str, *, socket_timeout: float | None = 5.0, max_connections: int = 64) -> Redis:
    """A client whose pool makes callers WAIT for a free connection (up to 10 s) rather than
    fail: a burst of handshakes must queue for Redis, not turn into 503s."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=10,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        retry_on_error=[ConnectionError, TimeoutError, OSError],
        health_check_interval=10,
    )
    return Redis(connection_pool=pool)
