from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from engine.store import connect, is_cluster
from runtime.redis_server import RedisClusterServers, RedisServer
from tests.support import Api, Proc


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("liveroom")


@pytest.fixture(scope="session")
def redis_server(tmp_root: Path) -> Iterator[RedisServer | RedisClusterServers]:
    """One private redis-server for the session (tests use unique room ids, never flush).

    ``LIVEROOM_TEST_REDIS=cluster`` runs the whole suite on a 3-master Redis Cluster instead
    (tests/cluster runs on one whatever the setting)."""
    server: RedisServer | RedisClusterServers
    if os.environ.get("LIVEROOM_TEST_REDIS") == "cluster":
        server = RedisClusterServers(tmp_root / "redis-cluster").start()
    else:
        server = RedisServer(tmp_root / "redis", appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url, socket_timeout=None)
    if is_cluster(client):
        await client.initialize()  # (see engine.store.connect_cluster)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def api_proc(redis_url: str, tmp_root: Path) -> Iterator[Proc]:
    p = Proc(redis_url, "api", tmp_root)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def api(api_proc: Proc) -> Api:
    return Api(api_proc.http_url)


@pytest.fixture(scope="session")
def gateways(redis_url: str, tmp_root: Path) -> Iterator[list[Proc]]:
    """Two gateway processes on one Redis, shared by tests that do not kill them."""
    procs = [Proc(redis_url, "gateway", tmp_root) for _ in range(2)]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
def spawn(redis_url: str, tmp_root: Path) -> Iterator[Callable[..., Proc]]:
    """Start gateways a test may kill; all are stopped afterwards."""
    started: list[Proc] = []

    def start(role: str = "gateway", **kwargs: object) -> Proc:
        p = Proc(redis_url, role, tmp_root, **kwargs)  # type: ignore[arg-type]
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
