"""engine/lottery.py: the provable draw, rules and eligibility (pure), and ``LotteryBook``
against a real Redis (unique room ids, never flushed)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from engine import keys
from engine import lottery as lot
from engine.errors import InvalidBody, NotFound
from engine.ids import RoomId
from engine.lottery import (
    Entry,
    LotteryBook,
    LotteryClosed,
    Rule,
    VerifyCheck,
    commit_of,
    draw,
    drawn_event,
    eligible,
    entrants_digest,
    keyword_matches,
    new_seed,
    started_event,
    verify,
)
from tests.support import unique

SEED = bytes(range(32))


def _reference_draw(seed: bytes, entrants: list[str], winners: int) -> list[str]:
    """PROTOCOL.md §5 read literally: hex HMACs, smallest first, ties by user id."""
    ranked = sorted(
        set(entrants),
        key=lambda u: (hmac.new(seed, u.encode(), hashlib.sha256).hexdigest(), u),
    )
    return ranked[:winners]


def _record(seed: bytes, entrants: list[str], winners: int) -> dict[str, Any]:
    return {
        "commit": commit_of(seed),
        "seed": seed.hex(),
        "entrants": sorted(set(entrants)),
        "winners": draw(seed, entrants, winners),
        "winners_count": winners,
    }


USERS = [f"user{i:03d}" for i in range(200)]


# -- commit, draw, verify ----------------------------------------------------------------------


def test_commit_is_sha256_hex_of_the_seed() -> None:
    assert commit_of(SEED) == hashlib.sha256(SEED).hexdigest()
    assert len(commit_of(new_seed())) == 64
    assert len(new_seed()) == 32
    assert new_seed() != new_seed()


def test_draw_is_the_smallest_hmacs_in_ascending_order() -> None:
    winners = draw(SEED, USERS, 5)
    assert winners == _reference_draw(SEED, USERS, 5)
    macs = [lot.hmac_of(SEED, w) for w in winners]
    assert macs == sorted(macs)
    assert lot.hmac_of(SEED, "alice") == hmac.new(SEED, b"alice", hashlib.sha256).hexdigest()


def test_draw_edges() -> None:
    assert draw(SEED, [], 3) == []
    assert draw(SEED, USERS, 0) == []
    assert sorted(draw(SEED, USERS[:4], 10)) == USERS[:4]  # fewer entrants than winners
    assert draw(SEED, ["ünï", "日本"], 2) == _reference_draw(SEED, ["ünï", "日本"], 2)
    with pytest.raises(ValueError):
        draw(SEED, USERS, -1)


def test_a_different_seed_draws_differently() -> None:
    assert draw(SEED, USERS, 5) != draw(bytes(32), USERS, 5)


def test_verify_holds_for_an_honest_record() -> None:
    result = verify(_record(SEED, USERS, 3))
    assert result.ok and bool(result) and result.failed is None
    assert "holds" in result.message


def test_verify_fails_when_the_seed_is_changed() -> None:
    rec = _record(SEED, USERS, 3)
    rec["seed"] = bytes(32).hex()
    assert verify(rec).failed is VerifyCheck.COMMIT
    rec = _record(SEED, USERS, 3)
    rec["commit"] = commit_of(bytes(32))
    result = verify(rec)
    assert not result and result.failed is VerifyCheck.COMMIT
    assert "commit" in result.message


def test_verify_fails_when_a_winner_is_changed() -> None:
    rec = _record(SEED, USERS, 3)
    loser = next(u for u in rec["entrants"] if u not in rec["winners"])
    rec["winners"] = [*rec["winners"][:2], loser]
    assert verify(rec).failed is VerifyCheck.WINNERS
    rec["winners"] = [*rec["winners"][:2], "mallory"]
    result = verify(rec)
    assert result.failed is VerifyCheck.WINNERS and "mallory" in result.message


def test_verify_fails_when_a_winner_is_dropped() -> None:
    rec = _record(SEED, USERS, 3)
    rec["winners"] = rec["winners"][:2]
    assert verify(rec).failed is VerifyCheck.WINNERS


def test_verify_ignores_the_order_of_winners() -> None:
    rec = _record(SEED, USERS, 3)
    rec["winners"] = sorted(rec["winners"])
    assert verify(rec).ok


def test_verify_fails_when_one_entrant_is_changed() -> None:
    rec = _record(SEED, USERS, 3)
    # an outsider who would have won, swapped in for someone who did not
    outsider = next(
        u
        for u in (f"x{i}" for i in range(10_000))
        if lot.hmac_of(SEED, u) < lot.hmac_of(SEED, rec["winners"][0])
    )
    loser = next(u for u in rec["entrants"] if u not in rec["winners"])
    rec["entrants"] = sorted({*rec["entrants"], outsider} - {loser})
    assert verify(rec).failed is VerifyCheck.WINNERS
    # a winner swapped out of the entrants
    rec = _record(SEED, USERS, 3)
    rec["entrants"] = sorted({*rec["entrants"], "zzz"} - {rec["winners"][1]})
    assert verify(rec).failed is VerifyCheck.WINNERS


def test_verify_checks_entrants_are_sorted_and_unique() -> None:
    rec = _record(SEED, USERS, 3)
    rec["entrants"] = [*rec["entrants"], rec["entrants"][-1]]
    result = verify(rec)
    assert result.failed is VerifyCheck.ENTRANTS and "twice" in result.message
    rec = _record(SEED, USERS, 3)
    rec["entrants"] = list(reversed(rec["entrants"]))
    assert verify(rec).failed is VerifyCheck.ENTRANTS
    rec = _record(SEED, USERS, 3)
    rec["entrants_count"] = len(USERS) + 1
    assert verify(rec).failed is VerifyCheck.ENTRANTS


@pytest.mark.parametrize(
    "change",
    [
        {"seed": None},
        {"seed": "not hex"},
        {"commit": 5},
        {"entrants": "a,b"},
        {"winners": [1, 2]},
        {"winners_count": -1},
        {"winners_count": True},
    ],
)
def test_verify_reports_a_malformed_record(change: dict[str, Any]) -> None:
    rec = {**_record(SEED, USERS, 3), **change}
    assert verify(rec).failed is VerifyCheck.RECORD


_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.binary(min_size=32, max_size=32),
    entrants=st.lists(_ids, max_size=60),
    winners=st.integers(min_value=0, max_value=15),
    shuffle_seed=st.integers(),
)
def test_draw_properties(seed: bytes, entrants: list[str], winners: int, shuffle_seed: int) -> None:
    got = draw(seed, entrants, winners)
    distinct = set(entrants)
    assert len(got) == len(set(got)) == min(winners, len(distinct))
    assert set(got) <= distinct
    assert got == _reference_draw(seed, entrants, winners)
    # only the seed and the set of entrants matter: not order, not duplicates
    shuffled = entrants + entrants[: len(entrants) // 2]
    random.Random(shuffle_seed).shuffle(shuffled)
    assert draw(seed, shuffled, winners) == got
    # more winners asked extends the list, never reorders it
    assert draw(seed, entrants, winners + 3)[: len(got)] == got
    rec = {
        "commit": commit_of(seed),
        "seed": seed.hex(),
        "entrants": sorted(distinct),
        "winners": got,
        "winners_count": winners,
    }
    assert verify(rec).ok


# -- rules and eligibility ---------------------------------------------------------------------


def test_rule_parse_accepts_the_contract_shape() -> None:
    rule = Rule.parse({"like": True, "keyword": " 抽奖 ", "paid_only": False, "min_tier": "senior"})
    assert rule == Rule(like=True, keyword="抽奖", paid_only=False, min_tier="senior")
    assert rule.to_dict() == {
        "like": True,
        "keyword": "抽奖",
        "paid_only": False,
        "min_tier": "senior",
    }
    assert Rule.parse(None) == Rule() == Rule.parse({})
    assert Rule.parse({"keyword": None, "min_tier": None}) == Rule()
    assert Rule.parse({"keyword": "k" * 50}).keyword == "k" * 50


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("like", "rule"),
        ([True], "rule"),
        ({"like": 1}, "rule.like"),
        ({"paid_only": "yes"}, "rule.paid_only"),
        ({"keyword": ""}, "rule.keyword"),
        ({"keyword": "   "}, "rule.keyword"),
        ({"keyword": "k" * 51}, "rule.keyword"),
        ({"keyword": 7}, "rule.keyword"),
        ({"min_tier": "gold"}, "rule.min_tier"),
        ({"min_tier": 2}, "rule.min_tier"),
        ({"likes": True}, "unknown"),
    ],
)
def test_rule_parse_errors(value: object, field: str) -> None:
    with pytest.raises(InvalidBody) as info:
        Rule.parse(value)
    assert field in info.value.message
    assert info.value.code == "invalid"


_OPEN = Rule()
_PAID = Rule(paid_only=True)
_SENIOR = Rule(min_tier="senior")


@pytest.mark.parametrize(
    ("rule", "access", "tier", "is_host", "ok"),
    [
        (_OPEN, "free", None, False, True),
        (_OPEN, "ticket", None, False, True),
        (_OPEN, "member", "normal", False, True),
        (_OPEN, "preview", None, False, False),
        (_OPEN, "host", None, False, False),
        (_OPEN, "free", None, True, False),  # the owner on a free room
        (_OPEN, "ticket", "vip", True, False),
        (_PAID, "free", None, False, False),
        (_PAID, "free", "vip", False, False),  # a tier is not a ticket in a free room
        (_PAID, "ticket", None, False, True),
        (_PAID, "member", "normal", False, True),
        (_PAID, "preview", "vip", False, False),
        (_SENIOR, "member", "normal", False, False),
        (_SENIOR, "member", "senior", False, True),
        (_SENIOR, "member", "vip", False, True),
        (_SENIOR, "ticket", None, False, False),
        (_SENIOR, "free", "vip", False, True),
        (Rule(paid_only=True, min_tier="vip"), "member", "vip", False, True),
        (Rule(paid_only=True, min_tier="vip"), "member", "senior", False, False),
        (Rule(like=True, keyword="go"), "free", None, False, True),  # actions, not attributes
    ],
)
def test_eligibility(rule: Rule, access: str, tier: str | None, is_host: bool, ok: bool) -> None:
    reason = eligible(rule, access=access, tier=tier, is_host=is_host)
    assert (reason is None) is ok
    if reason is not None:
        assert isinstance(reason, str) and reason


def test_keyword_matches_case_insensitive_substring() -> None:
    rule = Rule(keyword="Lucky")
    assert keyword_matches(rule, "I feel LUCKY today")
    assert keyword_matches(rule, "lucky")
    assert not keyword_matches(rule, "luck")
    assert not keyword_matches(Rule(), "lucky")
    assert keyword_matches(Rule(keyword="抽奖"), "我要抽奖!")


# -- LotteryBook on Redis ----------------------------------------------------------------------


def _room() -> RoomId:
    return RoomId(unique("lot"))


async def _create(book: LotteryBook, room: RoomId, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "prize": "a mug",
        "winners": 2,
        "rule": None,
        "duration_s": 600,
        "now": time.time(),
    }
    args.update(kw)
    return await book.create(room, **args)


async def test_create_publishes_the_commit_and_keeps_the_seed(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    now = time.time()
    rec = await _create(book, room, rule={"like": False, "keyword": "go"}, now=now)
    assert rec["status"] == "open" and rec["prize"] == "a mug" and rec["winners_count"] == 2
    assert rec["rule"] == Rule(keyword="go").to_dict()
    assert rec["ends_at"] == pytest.approx(now + 600, abs=0.01)
    assert len(rec["commit"]) == 64 and "seed" not in rec and "winners" not in rec
    got = await book.get(room, rec["id"])
    assert got == rec and "seed" not in got and "entrants" not in got
    assert [r["id"] for r in await book.open_lotteries(room, now)] == [rec["id"]]
    assert await book.open_lotteries(room, now + 601) == []
    ev = started_event(rec)
    assert ev == {
        "type": "lottery.started",
        "lottery": rec["id"],
        "commit": rec["commit"],
        "prize": "a mug",
        "winners": 2,
        "rule": rec["rule"],
        "ends_at": rec["ends_at"],
    }
    # the draw timer is due at ends_at
    score = await redis.zscore(keys.timers(), f"{lot.DRAW_TIMER}|{room}|{rec['id']}")
    assert score == int(rec["ends_at"] * 1000)


@pytest.mark.parametrize(
    "bad",
    [
        {"prize": ""},
        {"prize": "p" * 201},
        {"winners": 0},
        {"winners": True},
        {"duration_s": 0},
        {"duration_s": 1.5},
        {"rule": {"min_tier": "gold"}},
    ],
)
async def test_create_rejects_bad_input(redis: Redis, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidBody):
        await _create(LotteryBook(redis), _room(), **bad)


async def test_one_entry_per_user_however_many_times(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    now = time.time()
    rec = await _create(book, room, now=now)
    assert await book.enter(room, rec["id"], "alice", now) is Entry.ENTERED
    assert await book.enter(room, rec["id"], "alice", now) is Entry.ALREADY
    answers = await asyncio.gather(*(book.enter(room, rec["id"], "bob", now) for _ in range(20)))
    assert answers.count(Entry.ENTERED) == 1 and answers.count(Entry.ALREADY) == 19
    assert (await book.get(room, rec["id"]))["entrants_count"] == 2


async def test_entry_closes_at_ends_at_and_after_the_draw(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    now = time.time()
    rec = await _create(book, room, duration_s=10, now=now)
    with pytest.raises(LotteryClosed) as info:
        await book.enter(room, rec["id"], "late", now + 10)
    assert info.value.code == "closed"
    await book.enter(room, rec["id"], "early", now + 1)
    drawn = await book.close_and_draw(room, rec["id"], now + 2)
    assert drawn is not None and drawn["winners"] == ["early"]
    with pytest.raises(LotteryClosed):
        await book.enter(room, rec["id"], "carol", now + 3)
    with pytest.raises(LotteryClosed):
        await book.enter(room, "nope", "carol", now)
    with pytest.raises(LotteryClosed):
        await book.enter(room, "../bad id", "carol", now)
    assert await book.note_likes(room, rec["id"], ["carol"], now + 3) == []
    assert await book.open_lotteries(room, now) == []


async def test_like_and_keyword_in_either_order_enter_exactly_once(redis: Redis) -> None:
    """The gateway calls `enter` on the keyword danmaku and `note_likes` on likes."""
    book, room = LotteryBook(redis), _room()
    now = time.time()
    rec = await _create(book, room, rule={"like": True, "keyword": "go"}, now=now)
    lid = rec["id"]
    # like first, then the keyword (twice)
    assert await book.note_like(room, lid, "ann", now) is False
    assert await book.enter(room, lid, "ann", now) is Entry.ENTERED
    assert await book.enter(room, lid, "ann", now) is Entry.ALREADY
    # keyword first, then likes (many)
    assert await book.enter(room, lid, "ben", now) is Entry.WAITING_LIKE
    assert await book.enter(room, lid, "ben", now) is Entry.WAITING_LIKE
    assert await book.note_likes(room, lid, ["ben", "ben", "cid"], now) == ["ben"]
    assert await book.note_like(room, lid, "ben", now) is False
    assert await book.enter(room, lid, "ben", now) is Entry.ALREADY
    # only the keyword, or only likes: not an entrant
    assert await book.enter(room, lid, "dan", now) is Entry.WAITING_LIKE
    assert await book.note_like(room, lid, "eve", now) is False
    # both, concurrently
    both = await asyncio.gather(
        *(book.enter(room, lid, "fay", now) for _ in range(5)),
        *(book.note_like(room, lid, "fay", now) for _ in range(5)),
    )
    assert both.count(Entry.ENTERED) + both.count(True) == 1
    drawn = await book.close_and_draw(room, lid, now + 1)
    assert drawn is not None and drawn["entrants_count"] == 3
    assert (await book.get(room, lid))["entrants"] == ["ann", "ben", "fay"]
    # the working sets are gone after the draw
    for key in (lot.lottery_likers(room, lid), lot.lottery_waiting(room, lid)):
        assert not await redis.exists(key)


async def test_likes_before_the_lottery_opened_do_not_count(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    now = time.time()
    first = await _create(book, room, rule={"like": True}, now=now)
    await book.note_like(room, first["id"], "gus", now)
    second = await _create(book, room, rule={"like": True}, now=now + 1)
    assert await book.enter(room, second["id"], "gus", now + 1) is Entry.WAITING_LIKE
    assert await book.enter(room, first["id"], "gus", now + 1) is Entry.ENTERED


async def test_likes_do_nothing_for_a_lottery_without_the_like_rule(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    now = time.time()
    rec = await _create(book, room, now=now)
    assert await book.note_likes(room, rec["id"], ["hal"], now) == []
    assert not await redis.exists(lot.lottery_likers(room, rec["id"]))
    assert await book.enter(room, rec["id"], "hal", now) is Entry.ENTERED


async def test_draw_record_is_public_and_verifies(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    now = time.time()
    rec = await _create(book, room, winners=3, now=now)
    users = [f"v{i:02d}" for i in range(40)]
    random.shuffle(users)
    for u in users:
        await book.enter(room, rec["id"], u, now)
    drawn = await book.close_and_draw(room, rec["id"], now + 5)
    assert drawn is not None
    assert drawn["status"] == "drawn" and "entrants" not in drawn
    assert drawn["drawn_at"] == pytest.approx(now + 5, abs=0.01)
    got = await book.get(room, rec["id"])
    assert got["entrants"] == sorted(users) and got["entrants_count"] == 40
    assert commit_of(bytes.fromhex(got["seed"])) == rec["commit"]
    assert got["winners"] == draw(bytes.fromhex(got["seed"]), users, 3)
    assert verify(got).ok
    assert drawn_event(drawn) == {
        "type": "lottery.drawn",
        "lottery": rec["id"],
        "winners": got["winners"],
        "seed": got["seed"],
        "entrants_count": 40,
        "entrants_sha256": entrants_digest(got["entrants"]),
    }
    assert verify({**got, "entrants": sorted([*got["entrants"][1:], "zz"])}).failed is (
        VerifyCheck.ENTRANTS
    )
    # one compact copy of the entrants remains
    assert not await redis.exists(lot.lottery_entrants(room, rec["id"]))
    assert await redis.exists(lot.lottery_drawn_entrants(room, rec["id"]))
    assert [r["id"] for r in await book.recent(room)] == [rec["id"]]


async def test_a_draw_with_no_entrants(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    rec = await _create(book, room)
    drawn = await book.close_and_draw(room, rec["id"], time.time())
    assert drawn is not None and drawn["winners"] == [] and drawn["entrants_count"] == 0
    got = await book.get(room, rec["id"])
    assert got["entrants"] == [] and verify(got).ok


async def test_concurrent_close_and_draw_draws_exactly_once(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    now = time.time()
    rec = await _create(book, room, now=now)
    for u in ("a1", "a2", "a3", "a4"):
        await book.enter(room, rec["id"], u, now)
    # separate books, as separate processes would have
    books = [LotteryBook(redis) for _ in range(5)]
    results = await asyncio.gather(*(b.close_and_draw(room, rec["id"], now + 1) for b in books))
    drawn = [r for r in results if r is not None]
    assert len(drawn) == 1 and results.count(None) == 4
    assert await book.close_and_draw(room, rec["id"], now + 2) is None
    assert (await book.get(room, rec["id"]))["winners"] == drawn[0]["winners"]


async def test_a_dead_drawer_is_replaced_after_its_lease(redis: Redis) -> None:
    book, room = LotteryBook(redis, lease_s=30), _room()
    now = time.time()
    rec = await _create(book, room, now=now)
    await book.enter(room, rec["id"], "kim", now)
    close_keys = [lot.lottery_key(room, rec["id"]), lot.lotteries_open(room)]
    # a drawer claims the draw and dies before storing it
    assert await book._close(keys=close_keys, args=[int(now * 1000), "dead", 30_000]) == 1
    assert (await book.get(room, rec["id"]))["status"] == "drawing"
    with pytest.raises(LotteryClosed):
        await book.enter(room, rec["id"], "lee", now)
    assert await book.close_and_draw(room, rec["id"], now + 10) is None  # lease still held
    drawn = await book.close_and_draw(room, rec["id"], now + 31)
    assert drawn is not None and drawn["winners"] == ["kim"]
    # the dead drawer's late result is refused
    finish_keys = [
        lot.lottery_key(room, rec["id"]),
        lot.lottery_entrants(room, rec["id"]),
        lot.lottery_likers(room, rec["id"]),
        lot.lottery_waiting(room, rec["id"]),
        lot.lottery_drawn_entrants(room, rec["id"]),
        lot.events(room),
        lot.lottery_staged_entrants(room, rec["id"], "dead"),
    ]
    await redis.set(finish_keys[-1], b"kim\nlee", px=30_000)
    assert await book._finish(keys=finish_keys, args=["dead", "[]", 0, 0, b"", 100, ""]) == 0
    assert (await book.get(room, rec["id"]))["entrants"] == ["kim"]
    assert not await redis.exists(finish_keys[-1])  # the late drawer's staged list is dropped


async def test_the_draw_fetches_entrants_in_pages(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lot, "FETCH_PAGE", 7)
    book, room = LotteryBook(redis), _room()
    now = time.time()
    rec = await _create(book, room, winners=5, now=now)
    users = [f"p{i:04d}" for i in range(1000)]
    await redis.zadd(lot.lottery_entrants(room, rec["id"]), dict.fromkeys(users, 0))
    drawn = await book.close_and_draw(room, rec["id"], now)
    assert drawn is not None and drawn["entrants_count"] == 1000
    got = await book.get(room, rec["id"])
    assert got["entrants"] == users and verify(got).ok
    assert got["winners"] == draw(bytes.fromhex(got["seed"]), users, 5)
    assert book.draw_pool.started  # 143 pages: hashed in the worker processes
    assert await redis.keys(lot.lottery_staged_entrants(room, rec["id"], "*")) == []
    await book.aclose()


async def test_unknown_lotteries(redis: Redis) -> None:
    book, room = LotteryBook(redis), _room()
    for bad in ("nope", "bad/id"):
        with pytest.raises(NotFound):
            await book.get(room, bad)
        with pytest.raises(NotFound):
            await book.close_and_draw(room, bad, time.time())


def test_every_lottery_key_is_under_the_room_hash_tag() -> None:
    room = RoomId("r1")
    names = [
        lot.lottery_key(room, "l1"),
        lot.lottery_entrants(room, "l1"),
        lot.lottery_likers(room, "l1"),
        lot.lottery_waiting(room, "l1"),
        lot.lottery_drawn_entrants(room, "l1"),
        lot.lotteries(room),
        lot.lotteries_open(room),
    ]
    assert all(n.startswith("lr:{room:r1}:") for n in names)
    assert len(set(names)) == len(names)


async def test_a_draw_whose_fetch_fails_leaves_nothing_behind_and_is_redrawn(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lot, "FETCH_PAGE", 50)
    book, room = LotteryBook(redis, lease_s=30), _room()
    now = time.time()
    rec = await _create(book, room, winners=3, now=now)
    users = [f"q{i:04d}" for i in range(500)]
    await redis.zadd(lot.lottery_entrants(room, rec["id"]), dict.fromkeys(users, 0))
    fetch, calls = book.redis.zrange, []

    async def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 4:  # Redis goes away after three pages
            raise RedisConnectionError("Connection reset by peer")
        return await fetch(*args, **kwargs)

    monkeypatch.setattr(book.redis, "zrange", failing)
    with pytest.raises(RedisConnectionError):  # the error itself, not a task group's
        await book.close_and_draw(room, rec["id"], now)
    assert await redis.keys(lot.lottery_staged_entrants(room, rec["id"], "*")) == []
    assert (await book.get(room, rec["id"]))["status"] == "drawing"
    monkeypatch.setattr(book.redis, "zrange", fetch)
    drawn = await book.close_and_draw(room, rec["id"], now + 31)  # the claim lapsed
    assert drawn is not None and drawn["winners"] == draw(bytes.fromhex(drawn["seed"]), users, 3)
    await book.aclose()
