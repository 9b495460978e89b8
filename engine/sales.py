"""Flash sales (秒杀): sale records, the atomic buy, and timed open/close, over Redis.

Every stock decision happens inside one Lua script per attempt (``engine/lua/buy.lua``), with
all keys under the room's hash tag, so no interleaving of gateways can oversell. Answers are
remembered per (user, sale, ref): resending is always safe.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from engine import keys, scripts
from engine.codec import pack_stored
from engine.errors import InvalidBody, LiveroomError, NotFound
from engine.events import EventType
from engine.ids import RoomId, is_valid_id
from engine.rooms import MAX_PRICE_CENTS, TIERS
from engine.settings import Settings
from engine.timers import Timer, Timers


class SaleStatus(StrEnum):
    SCHEDULED = "scheduled"
    OPEN = "open"
    ENDED = "ended"


MAX_ITEM_CHARS = 200
"""A sale's `item` is 1..200 characters..."""
MAX_TITLE_CHARS = 200
"""...and so is its `title`."""
MAX_STOCK = 10_000_000
MAX_QTY = 10_000
MAX_DURATION_S = 7 * 86400
REFS_TTL_S = 7 * 86400  # answers to `buy` refs are kept this long after a sale ends


@dataclass(frozen=True, slots=True)
class NewSale:
    item: str
    title: str
    price_cents: int
    stock: int
    per_user_limit: int
    duration_s: int
    starts_in_s: int = 0
    tier_prices: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> NewSale:
        def integer(name: str, lo: int, hi: int, default: int | None = None) -> int:
            v = body.get(name, default)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise InvalidBody(f"`{name}` must be an integer in {lo}..{hi}")
            return v

        item, title = body.get("item"), body.get("title")
        for name, v, most in (("item", item, MAX_ITEM_CHARS), ("title", title, MAX_TITLE_CHARS)):
            if not isinstance(v, str) or not v.strip() or len(v) > most:
                raise InvalidBody(f"`{name}` must be 1-{most} characters")
        tier_prices = body.get("tier_prices") or {}
        if not isinstance(tier_prices, dict) or any(
            t not in TIERS or isinstance(p, bool) or not isinstance(p, int) or p < 0
            for t, p in tier_prices.items()
        ):
            raise InvalidBody(f"`tier_prices` maps tiers ({', '.join(TIERS)}) to prices in cents")
        return cls(
            item=item.strip(),  # type: ignore[union-attr]
            title=title.strip(),  # type: ignore[union-attr]
            price_cents=integer("price_cents", 0, MAX_PRICE_CENTS),
            stock=integer("stock", 1, MAX_STOCK),
            per_user_limit=integer("per_user_limit", 1, MAX_QTY),
            duration_s=integer("duration_s", 1, MAX_DURATION_S),
            starts_in_s=integer("starts_in_s", 0, MAX_DURATION_S, 0),
            tier_prices=dict(tier_prices),
        )


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    sale: str
    qty: int
    unit_price_cents: int
    total_cents: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sale": self.sale,
            "qty": self.qty,
            "unit_price_cents": self.unit_price_cents,
            "total_cents": self.total_cents,
        }


class SaleRefused(LiveroomError):
    """A purchase attempt was refused; the subclass says why."""

    status = 409


class NotOpen(SaleRefused):
    """The sale is not open (not yet, no more, or no such sale in this room)."""

    code = "not_open"


class SoldOut(SaleRefused):
    """Nothing is left."""

    code = "sold_out"


class LimitReached(SaleRefused):
    """This buyer bought all the sale allows one buyer."""

    code = "limit_reached"


REFUSALS: dict[str, type[SaleRefused]] = {c.code: c for c in (NotOpen, SoldOut, LimitReached)}
"""`buy.lua`'s refusal codes, as exceptions."""


def public_sale(h: dict[bytes, bytes]) -> dict[str, Any]:
    d = {k.decode(): v.decode() for k, v in h.items()}
    return {
        "id": d["id"],
        "room": d["room"],
        "item": d["item"],
        "title": d["title"],
        "price_cents": int(d["price_cents"]),
        "tier_prices": json.loads(d["tier_prices"]),
        "stock": int(d["stock"]),
        "per_user_limit": int(d["per_user_limit"]),
        "starts_at": int(d["starts_at_ms"]) / 1000,
        "ends_at": int(d["ends_at_ms"]) / 1000,
        "status": d["status"],
        "ended_by": d.get("ended_by"),
        "sold": int(d["sold"]),
        "left": int(d["left"]),
        "revenue_cents": int(d["revenue"]),
        "buyers": int(d["buyers"]),
    }


def started_event(sale: dict[str, Any]) -> dict[str, Any]:
    """`sale.started`: `sale` is the id, as in every sale event; the offer rides along."""
    return {
        "type": EventType.SALE_STARTED,
        "sale": sale["id"],
        "item": sale["item"],
        "title": sale["title"],
        "price_cents": sale["price_cents"],
        "tier_prices": sale["tier_prices"],
        "stock": sale["stock"],
        "left": sale["left"],
        "per_user_limit": sale["per_user_limit"],
        "ends_at": sale["ends_at"],
        "ts": time.time(),
    }


class SaleLedger:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.timers = Timers(redis)
        self._buy = scripts.guarded(redis, "buy")
        self._open = scripts.register(redis, "sale_open")
        self._end = scripts.register(redis, "sale_end")

    # -- hosts ------------------------------------------------------------------------------

    async def create(self, room: RoomId, new: NewSale, *, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        sale_id = "s" + secrets.token_hex(6)
        starts = int((now + new.starts_in_s) * 1000)
        ends = starts + new.duration_s * 1000
        record = {
            "id": sale_id,
            "room": room,
            "item": new.item,
            "title": new.title,
            "price_cents": new.price_cents,
            "tier_prices": json.dumps(new.tier_prices),
            "stock": new.stock,
            "left": new.stock,
            "sold": 0,
            "revenue": 0,
            "buyers": 0,
            "per_user_limit": new.per_user_limit,
            "starts_at_ms": starts,
            "ends_at_ms": ends,
            "status": SaleStatus.SCHEDULED,
        }
        # Both timers first, then the record in one transaction (the timers' set is on another
        # slot of a cluster): a crash between them leaves timers that find no sale and are
        # dropped, never a sale that does not open or end by itself. A sale that starts now is
        # also opened at once below; its `sale.open` timer then finds it open and does nothing
        # (transitions act once).
        opens, ends_ = Timer("sale.open", room, sale_id), Timer("sale.end", room, sale_id)
        await self.timers.add_many([(opens, starts / 1000), (ends_, ends / 1000)])
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.sale(room, sale_id), mapping=record)
            p.zadd(keys.sales(room), {sale_id: now})
            await p.execute()
        if new.starts_in_s <= 0:
            await self.open(room, sale_id)
        return await self.get(room, sale_id)

    async def get(self, room: RoomId, sale_id: str) -> dict[str, Any]:
        if not is_valid_id(sale_id):
            raise NotFound("no such sale")
        h = await self.redis.hgetall(keys.sale(room, sale_id))
        if not h:
            raise NotFound(f"no sale {sale_id!r} in room {room!r}")
        return public_sale(h)

    async def open_sale(self, room: RoomId) -> dict[str, Any] | None:
        """The room's open sale (the most recent if several), for the `welcome` snapshot."""
        open_ids = await self.redis.hkeys(keys.stock(room))
        sales = [await self.get(room, sid.decode()) for sid in open_ids[-4:]]
        sales = [s for s in sales if s["status"] == SaleStatus.OPEN]
        return max(sales, key=lambda s: s["starts_at"]) if sales else None

    async def open(self, room: RoomId, sale_id: str) -> bool:
        sale = await self.get(room, sale_id)
        return bool(
            await self._open(
                keys=[keys.sale(room, sale_id), keys.stock(room), keys.events(room)],
                args=[pack_stored(started_event(sale)), self.settings.history_hard_cap],
            )
        )

    async def end(self, room: RoomId, sale_id: str, *, by: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return bool(
            await self._end(
                keys=[
                    keys.sale(room, sale_id),
                    keys.stock(room),
                    keys.events(room),
                    keys.sale_refs(room, sale_id),
                ],
                args=[now, self.settings.history_hard_cap, by, REFS_TTL_S],
            )
        )

    async def orders(self, room: RoomId, sale_id: str) -> list[dict[str, Any]]:
        await self.get(room, sale_id)
        out = []
        for oid, f in await self.redis.xrange(keys.sale_orders(room, sale_id)):
            d = {k.decode(): v.decode() for k, v in f.items()}
            out.append(
                {
                    "id": oid.decode(),
                    "sale": sale_id,
                    "user": d["user"],
                    "ref": d["ref"],
                    "qty": int(d["qty"]),
                    "unit_price_cents": int(d["unit"]),
                    "total_cents": int(d["total"]),
                    "ts": int(d["ts"]) / 1000,
                }
            )
        return out

    # -- viewers ----------------------------------------------------------------------------

    def buy_call(
        self,
        room: RoomId,
        sale_id: str,
        user: str,
        ref: str,
        qty: int,
        tier: str | None,
        now: float,
    ) -> tuple[list[str], list[Any]]:
        """The keys and args of one `buy.lua` call (so a caller can pipeline many)."""
        rank = TIERS.index(tier) if tier in TIERS else -1
        return (
            [
                keys.sale(room, sale_id),
                keys.sale_bought(room, sale_id),
                keys.sale_refs(room, sale_id),
                keys.sale_orders(room, sale_id),
                keys.stock(room),
                keys.events(room),
            ],
            [user, ref, qty, rank, int(now * 1000), self.settings.history_hard_cap, REFS_TTL_S],
        )

    @property
    def buy_script(self):  # type: ignore[no-untyped-def]
        return self._buy

    async def buy(
        self,
        room: RoomId,
        sale_id: str,
        user: str,
        ref: str,
        qty: int,
        tier: str | None,
        now: float,
    ) -> Order:
        k, a = self.buy_call(room, sale_id, user, ref, qty, tier, now)
        return answer_to_order(await self._buy(keys=k, args=a))


def answer_to_order(raw: bytes | str) -> Order:
    """Turn a `buy.lua` answer into an ``Order`` or raise ``SaleRefused`` with its code."""
    d = json.loads(raw)
    if "order" in d:
        o = d["order"]
        return Order(
            o["id"], o["sale"], int(o["qty"]), int(o["unit_price_cents"]), int(o["total_cents"])
        )
    refusal = REFUSALS.get(d["error"])
    if refusal is None:  # an answer buy.lua does not give today: keep its code
        raise SaleRefused(d.get("message", d["error"]), code=d["error"])
    raise refusal(d.get("message", d["error"]))
