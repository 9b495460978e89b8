"""engine/ratelimit.py: limits stepped with a fake clock; nothing sleeps.

Times are binary fractions (0.25, 0.5, ...) so that refill amounts are exact in floating point.
"""

from __future__ import annotations

from engine.ratelimit import TokenBucket, WindowCounter

# -- TokenBucket -------------------------------------------------------------------------------


def test_bucket_starts_full_and_empties() -> None:
    b = TokenBucket(rate=2, burst=10, now=0.0)
    assert [b.take(0.0) for _ in range(11)] == [True] * 10 + [False]


def test_bucket_refills_at_rate() -> None:
    b = TokenBucket(rate=2, burst=10, now=0.0)
    assert b.take_up_to(0.0, 10) == 10
    assert not b.take(0.25)  # 0.5 token
    assert b.take(0.5)  # 1.0 token in all
    assert not b.take(0.5)
    assert b.take_up_to(3.0, 100) == 5  # 2.5 s * 2/s


def test_bucket_never_holds_more_than_burst() -> None:
    b = TokenBucket(rate=2, burst=10, now=0.0)
    assert b.take_up_to(0.0, 4) == 4
    assert b.take_up_to(1000.0, 100) == 10


def test_take_n_is_all_or_nothing() -> None:
    b = TokenBucket(rate=1, burst=5, now=0.0)
    assert b.take(0.0, 3)
    assert not b.take(0.0, 3)  # 2 left: nothing taken
    assert b.take(0.0, 2)
    assert not b.take(0.0, 1)
    assert b.take(1.0, 1)


def test_take_up_to_grants_whole_tokens_and_keeps_the_fraction() -> None:
    b = TokenBucket(rate=2, burst=10, now=0.0)
    assert b.take_up_to(0.0, 10) == 10
    assert b.take_up_to(1.25, 5) == 2  # 2.5 tokens: 2 granted, 0.5 kept
    assert b.take_up_to(1.25, 5) == 0
    assert b.take_up_to(1.5, 5) == 1  # 0.5 kept + 0.5 refilled
    assert b.take_up_to(1.5, 5) == 0


def test_take_up_to_partial_grant_of_a_like_burst() -> None:
    # Like the gateway's like bucket: a client asking for more than it has gets what is there.
    b = TokenBucket(rate=500, burst=2000, now=0.0)
    assert b.take_up_to(0.0, 100) == 100
    assert b.take_up_to(0.0, 1950) == 1900
    assert b.take_up_to(0.0, 1) == 0
    assert b.take_up_to(0.25, 1000) == 125
    assert b.take_up_to(0.25, 0) == 0


def test_clock_going_backwards_grants_nothing_extra() -> None:
    b = TokenBucket(rate=1, burst=2, now=10.0)
    assert b.take_up_to(10.0, 2) == 2
    assert b.take_up_to(5.0, 2) == 0  # earlier than the last refill: no refill, no error
    assert b.take_up_to(10.0, 2) == 0  # and no refill when the clock comes back either
    assert b.take_up_to(11.0, 2) == 1


# -- WindowCounter -----------------------------------------------------------------------------


def test_eleventh_hit_in_ten_seconds_is_over_the_limit() -> None:
    w = WindowCounter(limit=10, window=10.0)
    assert [w.hit(float(t)) for t in range(10)] == [False] * 10
    assert w.hit(9.5)


def test_hits_slide_out_of_the_window() -> None:
    w = WindowCounter(limit=10, window=10.0)
    for t in range(10):
        assert not w.hit(float(t))  # hits at 0..9
    # At t=10 the hit at t=0 is exactly one window old and no longer counts.
    assert not w.hit(10.0)
    # At 10.5 the hits at 1..10 are still inside: this is the 11th.
    assert w.hit(10.5)


def test_window_empties_after_a_quiet_window() -> None:
    w = WindowCounter(limit=2, window=10.0)
    assert not w.hit(0.0)
    assert not w.hit(0.0)
    assert w.hit(0.0)
    assert not w.hit(10.0)  # all three from t=0 left the window
    assert not w.hit(10.0)
    assert w.hit(10.0)


def test_hits_over_the_limit_still_count() -> None:
    # A peer that keeps misbehaving stays over the limit: refused hits are recorded too.
    w = WindowCounter(limit=2, window=10.0)
    assert [w.hit(t) for t in (0.0, 1.0, 2.0, 3.0)] == [False, False, True, True]
    # At 10.5 only the hit at t=0 has left: 1, 2, 3 and this one remain.
    assert w.hit(10.5)
    # At 12.5 the hits at 1 and 2 have left too: 3, 10.5 and this one.
    assert w.hit(12.5)
    # At 20 the window is (10, 20]: 10.5, 12.5 and this one.
    assert w.hit(20.0)
    # At 22.75 the window is (12.75, 22.75]: only 20 and this one.
    assert not w.hit(22.75)
