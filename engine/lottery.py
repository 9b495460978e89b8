"""Provable lotteries (PROTOCOL.md §5): the commit-reveal draw, entry rules, and the Redis ledger.

The draw is a pure function: ``winners`` are the entrants with the smallest
``HMAC-SHA256(key=seed, msg=user_id)``. At creation only ``commit = sha256(seed)`` is published;
the seed stays server-side until the draw, then is published with the sorted entrants so anyone
can recompute the winners (``verify``). Nothing here may reveal a seed before its lottery is
drawn, or let an entry in after entry closed.

Layout: pure core first (seed, draw, verify, ``Rule``, eligibility; no I/O, no clock), then the
lottery's Redis keys (to move into ``engine/keys.py``), then ``LotteryBook``, the async ledger.

How a viewer becomes an entrant (the gateway checks ``eligible`` first, every time):

- The gateway calls ``LotteryBook.enter`` for the `enter` op, and for a danmaku that
  ``keyword_matches`` an open lottery's rule.
- For a ``like: true`` lottery it also calls ``note_like(s)`` for likes while the lottery is
  open. The like requirement is checked at entry time, not at the draw: ``enter`` by a user who
  has not liked since the lottery opened only records the request (``Entry.WAITING_LIKE``), and
  that user's first like later completes the entry. Both orders give exactly one entry; doing
  only one of the two gives none. Likes before the lottery opened never count: the likers set
  is per lottery and only filled while it is open.
- The draw takes whoever is in the entrants set when entry closes (`closed` from then on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import itertools
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from engine import scripts
from engine.codec import dumps_json, loads_json, pack_stored
from engine.drawpool import DrawPool, best_of
from engine.errors import BadRequest, Conflict, Forbidden, InvalidBody, NotFound
from engine.events import EventType
from engine.ids import RoomId, is_valid_id
from engine.keys import (
    events,
    lotteries,
    lotteries_open,
    lottery_drawn_entrants,
    lottery_entrants,
    lottery_key,
    lottery_likers,
    lottery_staged_entrants,
    lottery_waiting,
)
from engine.rooms import TIERS
from engine.timers import Timers

SEED_BYTES = 32
MAX_KEYWORD_CHARS = 50
MAX_PRIZE_CHARS = 200
MAX_WINNERS = 10_000
MAX_DURATION_S = 7 * 86400
DRAW_TIMER = "lottery.draw"
"""Timer kind (``engine.timers``) due at ``ends_at``: the scheduler calls ``close_and_draw``."""
DRAW_LEASE_S = 60.0
"""How long a draw claim holds before another process may take the draw over."""
FETCH_PAGE = 50_000
"""Entrants fetched per ZRANGE at the draw, so Redis never builds one huge reply."""
ENTRY_ACCESS = ("free", "ticket", "member")
PAID_ACCESS = ("ticket", "member")


class LotteryClosed(Conflict):
    """The lottery is not open for entry (drawn, drawing, past `ends_at`, or unknown)."""

    code = "closed"


class NotEligible(Forbidden):
    """The viewer does not meet the lottery's rule."""

    code = "not_eligible"


# -- the draw (pure) ---------------------------------------------------------------------------


def new_seed() -> bytes:
    """A fresh secret seed of 32 random bytes."""
    return secrets.token_bytes(SEED_BYTES)


def commit_of(seed: bytes) -> str:
    """The public commitment to ``seed``: ``sha256(seed)``, lowercase hex."""
    return hashlib.sha256(seed).hexdigest()


def hmac_of(seed: bytes, user: str) -> str:
    """One entrant's draw value, ``HMAC-SHA256(key=seed, msg=user)`` in hex (for display)."""
    return hmac.digest(seed, user.encode("utf-8"), "sha256").hex()


def draw(seed: bytes, entrants: Iterable[str], winners: int) -> list[str]:
    """The ``winners`` entrants with the smallest ``HMAC-SHA256(key=seed, msg=user_id)``.

    The result is in ascending HMAC order (first = smallest), ``min(winners, len(set(entrants)))``
    long, and depends only on the seed and the *set* of entrants: order and duplicates in the
    input do not matter. Comparing raw digests is the same as comparing their lowercase hex.
    Equal HMACs (never seen in practice) are ordered by user id.
    """
    if isinstance(winners, bool) or not isinstance(winners, int) or winners < 0:
        raise ValueError("winners must be a non-negative integer")
    members = {user.encode("utf-8") for user in entrants}
    return [m.decode("utf-8") for m in draw_members(seed, members, winners)]


def draw_members(seed: bytes, members: Iterable[bytes], winners: int) -> list[bytes]:
    """``draw`` over UTF-8 encoded, already distinct user ids (the ledger's fast path).

    Ties fall back to comparing the encoded ids, which orders exactly as the ``str`` ids do
    (UTF-8 preserves code point order).
    """
    return [m for _, m in best_of(seed, members, winners)]


class VerifyCheck(StrEnum):
    RECORD = "record"
    """The record lacks a field or has one of the wrong type."""
    COMMIT = "commit"
    """``sha256(seed)`` is not the published commitment."""
    ENTRANTS = "entrants"
    """The entrants are not sorted and unique, or their count disagrees."""
    WINNERS = "winners"
    """The winners do not recompute from the seed and the entrants."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    failed: VerifyCheck | None
    """The first check that failed; None when the record holds."""
    message: str

    @property
    def ok(self) -> bool:
        return self.failed is None

    def __bool__(self) -> bool:
        return self.ok


def entrants_digest(entrants: Iterable[str]) -> str:
    """sha256 (hex) of the sorted entrants joined by newlines: published with the draw (in the
    record and in `lottery.drawn`), it binds the entrant list to the moment of the draw, so a
    record whose list was edited afterwards fails verification even where the edit would not
    change the winners."""
    return hashlib.sha256("\n".join(entrants).encode()).hexdigest()


def verify(record: Mapping[str, Any]) -> VerifyResult:
    """Check a drawn lottery's public record: commit, entrants, winners.

    ``record`` needs ``commit`` and ``seed`` (hex), ``entrants`` (list of ids) and ``winners``
    (list of ids); ``winners_count`` (the number asked for at creation) is used when present,
    so a record cannot hide winners by dropping them. The winners' order is not checked (a
    verifier may sort them); their set and count are.
    """

    def fail(check: VerifyCheck, message: str) -> VerifyResult:
        return VerifyResult(check, message)

    seed_hex, commit = record.get("seed"), record.get("commit")
    entrants, winners = record.get("entrants"), record.get("winners")
    if not isinstance(commit, str) or not isinstance(seed_hex, str):
        return fail(VerifyCheck.RECORD, "the record needs `commit` and `seed` (hex strings)")
    try:
        seed = bytes.fromhex(seed_hex)
    except ValueError:
        return fail(VerifyCheck.RECORD, "`seed` is not hex")
    for name, value in (("entrants", entrants), ("winners", winners)):
        if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
            return fail(VerifyCheck.RECORD, f"`{name}` must be a list of user ids")
    assert isinstance(entrants, list) and isinstance(winners, list)
    count = record.get("winners_count", len(winners))
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return fail(VerifyCheck.RECORD, "`winners_count` must be a non-negative integer")

    if commit_of(seed) != commit.lower():
        return fail(
            VerifyCheck.COMMIT,
            f"sha256(seed) is {commit_of(seed)}, not the published commit {commit}",
        )
    for i in range(1, len(entrants)):
        if entrants[i - 1] >= entrants[i]:
            what = "twice" if entrants[i - 1] == entrants[i] else "out of order"
            return fail(VerifyCheck.ENTRANTS, f"entrant {entrants[i]!r} is listed {what}")
    declared = record.get("entrants_count")
    if isinstance(declared, int) and declared != len(entrants):
        return fail(
            VerifyCheck.ENTRANTS,
            f"{len(entrants)} entrants listed but `entrants_count` says {declared}",
        )
    digest = record.get("entrants_sha256")
    if digest is not None and entrants_digest(entrants) != digest:
        return fail(
            VerifyCheck.ENTRANTS,
            "the entrants are not the list that was drawn (their sha256 differs from "
            "`entrants_sha256`, published in `lottery.drawn`)",
        )
    expected = draw(seed, entrants, count)
    if winners != expected and (len(winners) != len(expected) or set(winners) != set(expected)):
        entrant_set = set(entrants)
        strangers = [w for w in winners if w not in entrant_set]
        if strangers:
            return fail(VerifyCheck.WINNERS, f"winner {strangers[0]!r} is not an entrant")
        return fail(
            VerifyCheck.WINNERS,
            f"the winners recompute to {expected}, not {winners}",
        )
    return VerifyResult(
        None,
        f"holds: sha256(seed) matches the commit, and {len(expected)} winner(s) recompute "
        f"from {len(entrants)} entrant(s)",
    )


# -- the rule (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may enter: PROTOCOL.md §5 ``{like, keyword, paid_only, min_tier}``."""

    like: bool = False
    """An entrant must also like the room while the lottery is open."""
    keyword: str | None = None
    """A danmaku containing it (any case) enters its sender."""
    paid_only: bool = False
    """Only viewers with a ticket or a membership (access ``ticket`` or ``member``)."""
    min_tier: str | None = None
    """Only members of this tier or higher (``normal`` < ``senior`` < ``vip``)."""

    @classmethod
    def parse(cls, value: object) -> Rule:
        """A rule from a request body's ``rule`` (None or missing fields: no restriction)."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise InvalidBody("`rule` must be an object {like, keyword, paid_only, min_tier}")
        unknown = sorted(set(value) - {"like", "keyword", "paid_only", "min_tier"})
        if unknown:
            raise InvalidBody(f"`rule` has unknown field(s): {', '.join(map(str, unknown))}")
        like, paid_only = value.get("like", False), value.get("paid_only", False)
        for name, flag in (("like", like), ("paid_only", paid_only)):
            if not isinstance(flag, bool):
                raise InvalidBody(f"`rule.{name}` must be true or false")
        keyword = value.get("keyword")
        if keyword is not None:
            if not isinstance(keyword, str) or not 1 <= len(keyword.strip()) <= MAX_KEYWORD_CHARS:
                raise InvalidBody(
                    f"`rule.keyword` must be null or 1-{MAX_KEYWORD_CHARS} characters"
                )
            keyword = keyword.strip()
        min_tier = value.get("min_tier")
        if min_tier is not None and min_tier not in TIERS:
            raise InvalidBody(f"`rule.min_tier` must be null or one of {', '.join(TIERS)}")
        return cls(like=like, keyword=keyword, paid_only=paid_only, min_tier=min_tier)

    def to_dict(self) -> dict[str, Any]:
        return {
            "like": self.like,
            "keyword": self.keyword,
            "paid_only": self.paid_only,
            "min_tier": self.min_tier,
        }


def eligible(rule: Rule, *, access: str, tier: str | None, is_host: bool) -> str | None:
    """None when a viewer may enter, else the reason they may not (for `not_eligible`).

    ``access`` is the connection's access (``free|ticket|member|host|preview``); ``tier`` the
    viewer's membership tier, if any; ``is_host`` is true for the room's hosts and its owner,
    who never enter their own room's lotteries. The like and keyword parts of the rule are
    actions, not attributes: ``LotteryBook`` and ``keyword_matches`` handle them.
    """
    if is_host or access == "host":
        return "hosts never enter their room's lotteries"
    if access == "preview":
        return "preview viewers may not enter lotteries"
    if access not in ENTRY_ACCESS:
        return f"access {access!r} may not enter lotteries"
    if rule.paid_only and access not in PAID_ACCESS:
        return "this lottery is for viewers with a ticket or a membership"
    if rule.min_tier is not None and (
        tier not in TIERS or TIERS.index(tier) < TIERS.index(rule.min_tier)
    ):
        return f"this lottery is for {rule.min_tier} members and above"
    return None


def keyword_matches(rule: Rule, text: str) -> bool:
    """Whether a danmaku enters its sender: it contains the rule's keyword, in any case."""
    return rule.keyword is not None and rule.keyword.casefold() in text.casefold()


# -- events (pure) -----------------------------------------------------------------------------


def started_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """`lottery.started` from a public record: `winners` is the number of winners."""
    return {
        "type": EventType.LOTTERY_STARTED,
        "lottery": record["id"],
        "commit": record["commit"],
        "prize": record["prize"],
        "winners": record["winners_count"],
        "rule": record["rule"],
        "ends_at": record["ends_at"],
    }


def drawn_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """`lottery.drawn` from a drawn public record: the winners (ascending HMAC) and the seed."""
    return {
        "type": EventType.LOTTERY_DRAWN,
        "lottery": record["id"],
        "winners": record["winners"],
        "seed": record["seed"],
        "entrants_count": record["entrants_count"],
        "entrants_sha256": record.get("entrants_sha256"),
    }


# -- the ledger (Redis) ------------------------------------------------------------------------


class LotteryStatus(StrEnum):
    OPEN = "open"
    DRAWING = "drawing"
    DRAWN = "drawn"


class Entry(StrEnum):
    """What an `enter` did."""

    ENTERED = "entered"
    ALREADY = "already"
    """Entered before; nothing changed."""
    WAITING_LIKE = "waiting_like"
    """A like-rule lottery and no like yet: the user's next like enters them."""


def _ms(t: float) -> int:
    return int(t * 1000)


def _public(h: Mapping[bytes, bytes], live_count: int) -> dict[str, Any]:
    d = {k.decode(): v.decode() for k, v in h.items()}
    out: dict[str, Any] = {
        "id": d["id"],
        "room": d["room"],
        "prize": d["prize"],
        "winners_count": int(d["winners_count"]),
        "rule": loads_json(d["rule"]),
        "status": d["status"],
        "created_at": int(d["created_at_ms"]) / 1000,
        "ends_at": int(d["ends_at_ms"]) / 1000,
        "commit": d["commit"],
        "entrants_count": int(d.get("entrants_count", live_count)),
    }
    if d["status"] == LotteryStatus.DRAWN:
        out["seed"] = d["seed"]
        out["winners"] = loads_json(d["winners"])
        out["drawn_at"] = int(d["drawn_at_ms"]) / 1000
        if "entrants_sha256" in d:
            out["entrants_sha256"] = d["entrants_sha256"]
    return out


async def _shielded_unlink(redis: Redis, key: str) -> None:
    """Best effort: drop a failed draw's staged entrants now (they expire with the claim)."""
    with contextlib.suppress(Exception):
        await asyncio.shield(redis.unlink(key))


def entry_of(reply: Any, lottery: str) -> Entry:
    """``lottery_enter.lua``'s answer to an entry; raises ``LotteryClosed`` (`closed`)."""
    if isinstance(reply, BaseException):
        raise reply
    answer = reply.decode() if isinstance(reply, bytes) else reply
    if answer == "missing":
        raise LotteryClosed(f"no open lottery {lottery!r}")
    if answer == "closed":
        raise LotteryClosed(f"lottery {lottery!r} is closed")
    return Entry(answer)


class LotteryBook:
    """Lotteries of every room, in Redis. Every state change is one Lua script (all keys under
    the room's hash tag), so gateways, the API and schedulers on many hosts agree."""

    def __init__(
        self,
        redis: Redis,
        *,
        lease_s: float = DRAW_LEASE_S,
        events_cap: int = 1_000_000,
        draw_pool: DrawPool | None = None,
    ) -> None:
        self.redis = redis
        self.draw_pool = draw_pool if draw_pool is not None else DrawPool()
        """Where the draw's hashing runs (worker processes for draws of more than a page)."""
        self.lease_s = lease_s
        self.events_cap = events_cap
        self.timers = Timers(redis)
        self.draws = 0
        """Draws this process carried out (each lottery is drawn by exactly one caller)."""
        self.entrants_drawn = 0
        """Entrants of those draws, summed."""
        self._enter = scripts.guarded(redis, "lottery_enter")
        self._close = scripts.register(redis, "lottery_close")
        self._finish = scripts.register(redis, "lottery_finish")

    async def aclose(self) -> None:
        """Stop the draw pool's workers (a later draw starts new ones)."""
        await self.draw_pool.aclose()

    # -- hosts ------------------------------------------------------------------------------

    async def create(
        self,
        room: RoomId,
        prize: str,
        winners: int,
        rule: Rule | Mapping[str, Any] | None,
        duration_s: int,
        now: float,
    ) -> dict[str, Any]:
        """Open a lottery now, ending in ``duration_s``; the public record (``commit``, no seed).

        Also adds its `lottery.draw` timer at ``ends_at``. Raises ``InvalidBody``.
        """
        if not isinstance(prize, str) or not 1 <= len(prize.strip()) <= MAX_PRIZE_CHARS:
            raise InvalidBody(f"`prize` must be 1-{MAX_PRIZE_CHARS} characters")
        for name, v, hi in (
            ("winners", winners, MAX_WINNERS),
            ("duration_s", duration_s, MAX_DURATION_S),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
                raise InvalidBody(f"`{name}` must be an integer in 1..{hi}")
        rule = rule if isinstance(rule, Rule) else Rule.parse(rule)
        lottery = "l" + secrets.token_hex(6)
        seed = new_seed()
        ends_ms = _ms(now) + duration_s * 1000
        record = {
            "id": lottery,
            "room": room,
            "prize": prize.strip(),
            "winners_count": winners,
            "rule": dumps_json(rule.to_dict()),
            "need_like": int(rule.like),
            "status": LotteryStatus.OPEN.value,
            "created_at_ms": _ms(now),
            "ends_at_ms": ends_ms,
            "commit": commit_of(seed),
            "seed": seed.hex(),
        }
        public = _public({k.encode(): str(v).encode() for k, v in record.items()}, 0)
        listed = {k: v for k, v in public.items() if k != "entrants_count"}  # it would go stale
        started = pack_stored({**started_event(public), "ts": now})
        # Its draw timer first (the timers' set is on another slot of a cluster): no crash
        # leaves a lottery that never draws; a timer whose lottery was never written is dropped.
        await self.timers.add(DRAW_TIMER, room, lottery, ends_ms / 1000)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(lottery_key(room, lottery), mapping=record)
            p.hset(lotteries_open(room), lottery, dumps_json(listed))
            p.zadd(lotteries(room), {lottery: _ms(now)})
            # `lottery.started` goes into history in the same transaction as the lottery
            p.xadd(events(room), {"e": started}, maxlen=self.events_cap, approximate=True)
            await p.execute()
        return public

    async def get(
        self, room: RoomId, lottery: str, *, with_entrants: bool = True
    ) -> dict[str, Any]:
        """The public record: no seed before the draw; after it also ``seed``, ``winners``
        (ascending HMAC) and, when ``with_entrants``, the sorted ``entrants``."""
        if not is_valid_id(lottery):
            raise NotFound("no such lottery")
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(lottery_key(room, lottery))
            p.zcard(lottery_entrants(room, lottery))
            if with_entrants:
                p.get(lottery_drawn_entrants(room, lottery))
            h, live_count, *blob = await p.execute()
        if not h:
            raise NotFound(f"no lottery {lottery!r} in room {room!r}")
        record = _public(h, live_count)
        if with_entrants and record["status"] == LotteryStatus.DRAWN:
            record["entrants"] = blob[0].decode().split("\n") if blob[0] else []
        return record

    async def recent(self, room: RoomId, *, limit: int = 50) -> list[dict[str, Any]]:
        """The room's most recent lotteries (without entrants), newest first."""
        ids = await self.redis.zrevrange(lotteries(room), 0, limit - 1)
        return [await self.get(room, i.decode(), with_entrants=False) for i in ids]

    async def open_lotteries(self, room: RoomId, now: float) -> list[dict[str, Any]]:
        """The room's lotteries open for entry at ``now`` (public records, oldest first)."""
        raw = await self.redis.hvals(lotteries_open(room))
        found = [loads_json(v) for v in raw]
        return sorted((r for r in found if r["ends_at"] > now), key=lambda r: r["created_at"])

    async def close_and_draw(self, room: RoomId, lottery: str, now: float) -> dict[str, Any] | None:
        """Close entry and draw, once: the drawn public record (without ``entrants``) for the
        one caller that drew, None for every other caller, concurrent or later.

        Safe to call from many processes at once (the draw timer, the host's `draw`): one Lua
        script moves open -> drawing under a claim token, and only the claim holder's result is
        stored. A claim lapses after ``lease_s``, so a drawer that died is replaced on the next
        call; the draw is deterministic, so a replacement computes the same winners. Raises
        ``NotFound`` for an unknown lottery.
        """
        if not is_valid_id(lottery):
            raise NotFound("no such lottery")
        token = secrets.token_hex(8)
        claimed = await self._close(
            keys=[lottery_key(room, lottery), lotteries_open(room)],
            args=[_ms(now), token, int(self.lease_s * 1000)],
        )
        if claimed == -1:
            raise NotFound(f"no lottery {lottery!r} in room {room!r}")
        if claimed != 1:
            return None
        seed_hex, count = await self.redis.hmget(
            lottery_key(room, lottery), ["seed", "winners_count"]
        )
        seed, winners = bytes.fromhex(seed_hex.decode()), int(count)
        staged = lottery_staged_entrants(room, lottery, token)
        try:
            n, best, digest = await self._hash_entrants(room, lottery, staged, seed, winners)
            winner_ids = [m.decode() for _, m in best]
            public = {
                "id": lottery,
                "winners": winner_ids,
                "seed": seed.hex(),
                "entrants_count": n,
                "entrants_sha256": digest,
            }
            drawn = pack_stored({**drawn_event(public), "ts": now})
            stored = await self._finish(
                keys=[
                    lottery_key(room, lottery),
                    lottery_entrants(room, lottery),
                    lottery_likers(room, lottery),
                    lottery_waiting(room, lottery),
                    lottery_drawn_entrants(room, lottery),
                    events(room),
                    staged,
                ],
                args=[token, dumps_json(winner_ids), n, _ms(now), drawn, self.events_cap, digest],
            )
        except BaseException:
            await _shielded_unlink(self.redis, staged)
            raise
        if stored != 1:
            return None
        self.draws += 1
        self.entrants_drawn += n
        return await self.get(room, lottery, with_entrants=False)

    async def _hash_entrants(
        self, room: RoomId, lottery: str, staged: str, seed: bytes, winners: int
    ) -> tuple[int, list[tuple[bytes, bytes]], str]:
        """Fetch a closed lottery's entrants a page at a time, in id order (the zset's order: no
        sort needed), hash each page in the draw pool as it comes (overlapping the next fetch)
        and append it to ``staged``; the entrant count, the best (HMAC, id) pairs, and the
        sha256 of the newline-joined entrants. Only the pages' best pairs stay: a million
        entrants never sit in memory as a million objects. Entry is closed, so the set cannot
        change between pages."""
        key = lottery_entrants(room, lottery)
        lease_ms = int(self.lease_s * 1000)
        entrants_sha = hashlib.sha256()
        pages: list[asyncio.Task[list[tuple[bytes, bytes]]]] = []
        n = 0
        try:
            while True:
                page = await self.redis.zrange(key, n, n + FETCH_PAGE - 1)
                if page:
                    joined = b"\n".join(page)
                    alone = n == 0 and len(page) < FETCH_PAGE
                    pages.append(
                        asyncio.create_task(self.draw_pool.best(seed, joined, winners, alone=alone))
                    )
                    if n:
                        joined = b"\n" + joined
                    entrants_sha.update(joined)
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.append(staged, joined).pexpire(staged, lease_ms)
                        await pipe.execute()
                    n += len(page)
                if len(page) < FETCH_PAGE:
                    break
            bests = await asyncio.gather(*pages)
        finally:  # a failed fetch (or a cancelled draw) leaves no page hashing on
            for task in pages:
                task.cancel()
            await asyncio.gather(*pages, return_exceptions=True)
        best = heapq.nsmallest(winners, itertools.chain.from_iterable(bests))
        return n, best, entrants_sha.hexdigest()

    # -- viewers ----------------------------------------------------------------------------

    async def enter(self, room: RoomId, lottery: str, user: str, now: float) -> Entry:
        """Enter ``user`` (already found ``eligible``) at most once; see the module docstring.

        Raises ``LotteryClosed`` (`closed`) unless the lottery is open and before ``ends_at``.
        """
        keys_, args = self.enter_call(room, lottery, user, now)
        return entry_of(await self._enter(keys=keys_, args=args), lottery)

    @property
    def enter_script(self) -> scripts.GuardedScript:
        """``lottery_enter.lua``, for a caller that pipelines many (``engine.pipeline``)."""
        return self._enter

    def enter_call(
        self, room: RoomId, lottery: str, user: str, now: float
    ) -> tuple[list[str], list[object]]:
        """The keys and args of one entry (give its reply to ``entry_of``); raises
        ``BadRequest`` / ``LotteryClosed`` for ids that cannot name an entrant or a lottery."""
        if not is_valid_id(user):
            raise BadRequest("user id must be 1-64 characters of [A-Za-z0-9_.-]")
        if not is_valid_id(lottery):
            raise LotteryClosed(f"no open lottery {lottery[:64]!r}")
        return self._entry_keys(room, lottery), ["enter", _ms(now), user]

    async def note_likes(
        self, room: RoomId, lottery: str, users: Iterable[str], now: float
    ) -> list[str]:
        """Record likes by (eligible) ``users`` for a like-rule lottery; the users whose
        earlier `enter` these likes completed. A no-op, never an error, when the lottery does
        not need likes or is not open. A gateway may call it once per user per lottery."""
        users = [u for u in dict.fromkeys(users) if is_valid_id(u)]
        if not users or not is_valid_id(lottery):
            return []
        got = await self._enter(
            keys=self._entry_keys(room, lottery), args=["like", _ms(now), *users]
        )
        if not isinstance(got, list):
            return []
        return [u.decode() if isinstance(u, bytes) else u for u in got]

    async def note_like(self, room: RoomId, lottery: str, user: str, now: float) -> bool:
        """``note_likes`` for one user: True when this like completed their entry."""
        return bool(await self.note_likes(room, lottery, [user], now))

    @staticmethod
    def _entry_keys(room: RoomId, lottery: str) -> list[str]:
        return [
            lottery_key(room, lottery),
            lottery_entrants(room, lottery),
            lottery_likers(room, lottery),
            lottery_waiting(room, lottery),
        ]
