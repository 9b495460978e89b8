"""The composition root's contents: what every role of one process shares, built once.

``runtime.runner.serve`` builds one ``Services`` per process and hands it to each role it runs
(the gateway, the HTTP API, media, the scheduler). A role takes what it needs from it and never
builds its own Redis client, ledger or settings; nothing is wired in after construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from engine.access import EntitlementCheck
from engine.bus import RoomBus
from engine.drawpool import DrawPool
from engine.lottery import LotteryBook
from engine.rooms import RoomStore
from engine.sales import SaleLedger
from engine.settings import Settings
from engine.slots import ConnectionSlots
from engine.store import REPLY_TIMEOUT_S, connect, is_cluster
from engine.words import BlockedWords


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    redis: Redis
    """The process's client for commands (bounded waits; see engine/store.py)."""
    rooms: RoomStore
    bus: RoomBus
    access: EntitlementCheck
    sales: SaleLedger
    lotteries: LotteryBook
    words: BlockedWords
    slots: ConnectionSlots

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None = None) -> Services:
        redis = redis if redis is not None else connect(settings.redis_url)
        return cls(
            settings=settings,
            redis=redis,
            rooms=RoomStore(redis),
            bus=RoomBus(redis, settings),
            access=EntitlementCheck(redis),
            sales=SaleLedger(redis, settings),
            lotteries=LotteryBook(
                redis,
                events_cap=settings.history_hard_cap,
                draw_pool=DrawPool(settings.draw_processes),
            ),
            words=BlockedWords(redis),
            slots=ConnectionSlots(
                redis, limit=settings.max_conns_per_user, ttl_ms=settings.conn_slot_ttl_ms
            ),
        )

    def reader_client(self) -> Redis:
        """A client of its own for a blocking reader (its XREAD BLOCK holds a connection);
        its timeout outlasts the block, so a network partition ends a read instead of
        hanging it."""
        s = self.settings
        return connect(
            s.redis_url, socket_timeout=s.read_block_ms / 1000 + REPLY_TIMEOUT_S, max_connections=4
        )

    async def start(self) -> None:
        """Connect before any role runs: a cluster client learns the slot map and the command
        table now (redis-py's lazy start races its first concurrent users)."""
        if is_cluster(self.redis):
            await self.redis.initialize()

    async def aclose(self) -> None:
        await self.lotteries.aclose()
        await self.redis.aclose()
