"""A private 3-master Redis Cluster on loopback, with an API and two gateways on it.

Its own fixtures (not the suite's ``redis_url`` ones, which name one Redis unless
``LIVEROOM_TEST_REDIS=cluster``), so these tests run on a cluster in every run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import RedisCluster

from engine import keys
from engine.ids import RoomId
from engine.store import connect
from runtime.redis_server import RedisClusterServers
from tests.support import Api, Proc, unique


@pytest.fixture(scope="session")
def cluster(tmp_root: Path) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_root / "cluster", masters=3).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def cluster_api(cluster: RedisClusterServers, tmp_root: Path) -> Iterator[Api]:
    p = Proc(cluster.url, "api", tmp_root)
    yield Api(p.http_url)
    p.stop()


@pytest.fixture(scope="session")
def cluster_gateways(cluster: RedisClusterServers, tmp_root: Path) -> Iterator[list[Proc]]:
    procs = [Proc(cluster.url, "gateway", tmp_root) for _ in range(2)]
    yield procs
    for p in procs:
        p.stop()


@pytest_asyncio.fixture
async def cluster_redis(cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    client = connect(cluster.url)
    await client.initialize()
    yield client
    await client.aclose()


def shard_of(client: RedisCluster, room: str) -> str:
    """The node (``host:port``) that holds every key of ``room``."""
    return client.get_node_from_key(keys.events(RoomId(room))).name


@pytest_asyncio.fixture
async def rooms_by_shard(cluster_redis: RedisCluster) -> list[str]:
    """Three fresh room ids, one on each shard of the cluster (the key slots decide)."""
    nodes = sorted(n.name for n in cluster_redis.get_primaries())
    assert len(nodes) == 3
    found: dict[str, str] = {}
    while len(found) < 3:
        room = unique("c")
        found.setdefault(shard_of(cluster_redis, room), room)
    return [found[n] for n in nodes]
