"""The viewer session state machine (engine/session.py): a fake clock, no sockets, no Redis."""

from __future__ import annotations

import pytest

from engine.access import AccessDecision, AccessKind
from engine.bus import StreamHead
from engine.errors import (
    BadRequest,
    Blocked,
    Empty,
    Muted,
    NotEntitled,
    RateLimited,
    TooLong,
)
from engine.ids import Cursor, EventId
from engine.lottery import Rule
from engine.session import (
    BUFFERED,
    CLOSE_ACCESS_ENDED,
    CLOSE_POLICY,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    SHARE,
    Close,
    Own,
    Phase,
    UserLimits,
    ViewerSession,
)
from engine.settings import Settings
from engine.tokens import Identity, Role
from engine.words import WordFilter

T0 = 1_000_000.0
S = Settings(join_pending_limit=5, send_buffer_limit=1000)


def ev(n: int) -> dict:
    return {"type": "danmaku", "id": f"{n}-0", "text": str(n)}


def session(
    kind: AccessKind = AccessKind.FREE,
    *,
    exp: float = T0 + 3600,
    preview_ends_at: float | None = None,
    muted_until: float = 0.0,
    settings: Settings = S,
    tier: str | None = None,
) -> ViewerSession:
    who = Identity("u1", "User 1", Role.VIEWER, exp)
    decision = AccessDecision(kind, preview_ends_at, tier, muted_until)
    return ViewerSession(who, "room", decision, settings, T0)


def live(s: ViewerSession, last: int = 10) -> ViewerSession:
    s.replay_plan(StreamHead(EventId(f"{last}-0"), EventId("1-0"), True), "ep", None)
    s.go_live([])
    return s


# -- join, replay, hand-off ----------------------------------------------------------------


def test_a_fresh_join_is_not_recovered_and_starts_at_the_head() -> None:
    s = session()
    assert s.phase is Phase.JOINING and s.joining
    plan = s.replay_plan(StreamHead(EventId("7-0"), EventId("1-0"), True), "ep", None)
    assert not plan.recovered and plan.after == "7-0"
    assert s.phase is Phase.REPLAYING and s.joining


def test_resume_is_recovered_only_with_the_same_epoch_and_retained_history() -> None:
    head = StreamHead(EventId("50-0"), EventId("20-0"), False)
    assert session().replay_plan(head, "ep", Cursor("ep", EventId("30-0"))).recovered
    assert session().replay_plan(head, "ep", Cursor("ep", EventId("30-0"))).after == "30-0"
    assert not session().replay_plan(head, "ep", Cursor("other", EventId("30-0"))).recovered
    assert not session().replay_plan(head, "ep", Cursor("ep", EventId("10-0"))).recovered
    assert not session().replay_plan(head, "ep", Cursor("ep", EventId("60-0"))).recovered


def test_live_batches_during_the_join_are_buffered_then_handed_off_without_a_gap() -> None:
    s = session()
    assert s.on_batch([ev(11), ev(12)], [{"type": "likes", "total": 1}]) is BUFFERED
    s.replay_plan(StreamHead(EventId("12-0"), EventId("1-0"), True), "ep", Cursor("ep", "9-0"))
    assert s.on_batch([ev(13)], []) is BUFFERED  # still replaying
    s.replayed([ev(10), ev(11)])  # replay read up to 11 (12 and 13 came live)
    out = s.go_live([{"type": "online", "count": 3}])
    assert [e.get("id") for e in out] == ["12-0", "13-0", None]  # no duplicate of 11
    assert s.phase is Phase.LIVE and not s.joining


def test_after_the_hand_off_a_batch_overlapping_the_replay_gets_its_own_copy() -> None:
    s = session()
    s.on_batch([ev(11)], [])
    s.replay_plan(StreamHead(EventId("10-0"), EventId("1-0"), True), "ep", Cursor("ep", "5-0"))
    s.replayed([ev(6), ev(10)])
    assert [e["id"] for e in s.go_live([])] == ["11-0"]
    # the reader's next batch still holds 11 (it was read before the hand-off): skip it
    action = s.on_batch([ev(11), ev(12)], [{"type": "likes", "total": 2}])
    assert isinstance(action, Own)
    assert [e.get("id") for e in action.events] == ["12-0", None]
    assert s.shares and s.on_batch([ev(13)], []) is SHARE  # from now on: the shared frame


def test_a_batch_entirely_after_the_hand_off_is_shared_at_once() -> None:
    s = live(session(), last=10)
    assert s.on_batch([ev(11)], []) is SHARE
    assert s.skip_until is None
    assert s.on_batch([], [{"type": "likes", "total": 1}]) is SHARE


def test_too_many_events_while_joining_close_4408() -> None:
    s = session()
    for i in range(5):
        assert s.on_batch([ev(i + 1)], []) is BUFFERED
    close = s.on_batch([ev(6)], [])
    assert close == Close(CLOSE_SLOW_CONSUMER, "too far behind while joining")
    assert s.closing and not s.shares
    assert s.on_batch([ev(7)], []) is BUFFERED  # nothing more once closing


# -- slow consumer, limits, bad input ------------------------------------------------------


def test_a_slow_consumer_is_closed_4408_once() -> None:
    s = live(session())
    assert s.on_unsent(1000) is None
    assert s.on_unsent(1001) == Close(CLOSE_SLOW_CONSUMER, "slow consumer: resume with since")
    assert s.on_unsent(5000) is None  # already closing


def test_a_message_flood_is_dropped_and_said_once_a_second() -> None:
    s = live(session(settings=Settings(msg_rate=10, msg_burst=5)))
    handled = [s.on_message(T0) for _ in range(20)]
    assert sum(ok for ok, _ in handled) == 5
    notices = [n for _, n in handled if n is not None]
    assert len(notices) == 1 and notices[0]["code"] == "rate_limited"
    assert s.on_message(T0 + 0.5) == (True, None)  # 5 tokens refilled in half a second
    later = [s.on_message(T0 + 1.2) for _ in range(20)]
    assert sum(n is not None for _, n in later) == 1


def test_danmaku_rules_in_order() -> None:
    s = live(session(muted_until=T0 + 30))
    with pytest.raises(Empty):
        s.check_danmaku("   ", T0)
    with pytest.raises(TooLong):
        s.check_danmaku("x" * 201, T0)
    with pytest.raises(Muted):
        s.check_danmaku("hi", T0)
    s.on_mute(0.0)
    with pytest.raises(Blocked):
        s.check_danmaku("so SPAMMY", T0, WordFilter.from_setting("spam"))
    assert s.check_danmaku("  hello  ", T0) == "hello"
    preview = live(session(AccessKind.PREVIEW, preview_ends_at=T0 + 60))
    with pytest.raises(NotEntitled):
        preview.check_danmaku("hi", T0)
    with pytest.raises(NotEntitled):
        preview.check_entitled()


def test_danmaku_rate_is_per_user_across_its_connections() -> None:
    limits = UserLimits.new(S, T0)
    who = Identity("u1", "U", Role.VIEWER, T0 + 3600)
    a = ViewerSession(who, "r", AccessDecision(AccessKind.FREE), S, T0, limits)
    b = ViewerSession(who, "r", AccessDecision(AccessKind.FREE), S, T0, limits)
    sent = 0
    for i in range(20):
        try:
            (a if i % 2 else b).check_danmaku("hi", T0)
            sent += 1
        except RateLimited:
            pass
    assert sent == S.danmaku_burst
    assert a.take_likes(5000, T0) == S.like_burst and b.take_likes(10, T0) == 0


def test_too_many_bad_messages_close_1008_other_errors_do_not() -> None:
    s = live(session())
    for i in range(S.bad_message_limit):
        reply, close = s.on_refused(BadRequest("nope"), f"r{i}", T0)
        assert close is None and reply["ref"] == f"r{i}" and reply["code"] == "bad_request"
    for _ in range(50):
        assert s.on_refused(RateLimited("slow down"), None, T0)[1] is None
    _, close = s.on_refused(BadRequest("nope"), None, T0)
    assert close is not None and close.code == CLOSE_POLICY


# -- time: token expiry and preview end ----------------------------------------------------


def test_token_expiry_closes_4401() -> None:
    s = live(session(exp=T0 + 10))
    assert s.deadline() == T0 + 10
    assert s.on_time(T0 + 9.9) is None
    close = s.on_time(T0 + 10)
    assert close is not None and close.code == CLOSE_TOKEN_EXPIRED
    assert s.deadline() is None


def test_preview_end_closes_4403_and_a_ticket_bought_meanwhile_disarms_it() -> None:
    s = live(session(AccessKind.PREVIEW, preview_ends_at=T0 + 30))
    assert s.deadline() == T0 + 30
    close = s.on_time(T0 + 30)
    assert close is not None and close.code == CLOSE_ACCESS_ENDED
    bought = live(session(AccessKind.PREVIEW, preview_ends_at=T0 + 30))
    bought.on_access(AccessDecision(AccessKind.TICKET))
    assert bought.deadline() == T0 + 3600
    assert bought.on_time(T0 + 31) is None
    assert bought.check_danmaku("now I may chat", T0 + 31) == "now I may chat"


# -- lottery triggers ----------------------------------------------------------------------


def test_keyword_and_like_entries_count_once_while_open_and_eligible() -> None:
    lotteries = {
        "kw": (Rule(keyword="lucky"), T0 + 60),
        "like": (Rule(like=True), T0 + 60),
        "paid": (Rule(keyword="lucky", paid_only=True), T0 + 60),
        "over": (Rule(keyword="lucky"), T0 - 1),
    }
    s = live(session())
    assert s.keyword_entries("I feel LUCKY", lotteries, T0) == ["kw"]
    assert s.keyword_entries("lucky again", lotteries, T0) == []
    assert s.like_entries(lotteries, T0) == ["like"]
    assert s.like_entries(lotteries, T0) == []
    member = live(session(AccessKind.TICKET))
    member.entered("kw")  # an `enter` op first: the keyword does not enter again
    assert member.keyword_entries("lucky", lotteries, T0) == ["paid"]
    assert member.check_eligible(Rule(min_tier="vip")) is not None
    assert live(session(AccessKind.MEMBER, tier="vip")).check_eligible(Rule(min_tier="vip")) is None
