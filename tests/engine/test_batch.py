"""engine/batch.py: what one tick sends for a room."""

from __future__ import annotations

from engine.batch import RoomBatch


def _danmaku(i: int) -> dict:
    return {"type": "danmaku", "id": f"{i}-0", "text": f"m{i}"}


def test_empty_batch_is_falsy_and_takes_nothing() -> None:
    b = RoomBatch()
    assert not b
    assert b.take() == ([], [])
    assert b.current_state() == []


def test_history_order_is_kept_across_adds() -> None:
    b = RoomBatch()
    b.add_history([_danmaku(1), _danmaku(2)])
    b.add_history([])
    b.add_history([_danmaku(3)])
    assert b
    history, state = b.take()
    assert [e["id"] for e in history] == ["1-0", "2-0", "3-0"]
    assert state == []
    assert not b
    assert b.take() == ([], [])  # taking empties the batch


def test_state_is_coalesced_to_the_latest_value() -> None:
    b = RoomBatch()
    for total in (1, 2, 3):
        b.set_state("likes", {"type": "likes", "total": total})
    b.set_state("online", {"type": "online", "count": 7})
    b.set_state("online", {"type": "online", "count": 8})
    history, state = b.take()
    assert history == []
    assert state == [{"type": "likes", "total": 3}, {"type": "online", "count": 8}]


def test_state_equal_to_last_sent_is_not_resent() -> None:
    b = RoomBatch()
    b.set_state("likes", {"type": "likes", "total": 5})
    assert b.take()[1] == [{"type": "likes", "total": 5}]
    b.set_state("likes", {"type": "likes", "total": 5})
    assert not b
    assert b.take() == ([], [])
    # a change that comes back to the sent value before the tick sends nothing either
    b.set_state("likes", {"type": "likes", "total": 6})
    assert b
    b.set_state("likes", {"type": "likes", "total": 5})
    assert not b
    assert b.take() == ([], [])
    # a real change goes out
    b.set_state("likes", {"type": "likes", "total": 9})
    assert b.take() == ([], [{"type": "likes", "total": 9}])


def test_only_changed_keys_are_sent() -> None:
    b = RoomBatch()
    b.set_state("likes", {"type": "likes", "total": 1})
    b.set_state("online", {"type": "online", "count": 1})
    b.take()
    b.set_state("likes", {"type": "likes", "total": 1})  # unchanged
    b.set_state("online", {"type": "online", "count": 2})
    assert b.take() == ([], [{"type": "online", "count": 2}])


def test_history_and_state_together() -> None:
    b = RoomBatch()
    b.set_state("likes", {"type": "likes", "total": 1})
    b.add_history([_danmaku(1)])
    b.set_state("likes", {"type": "likes", "total": 2})
    b.add_history([_danmaku(2)])
    assert b.take() == ([_danmaku(1), _danmaku(2)], [{"type": "likes", "total": 2}])


def test_current_state_returns_the_newest_values_sent_or_not() -> None:
    b = RoomBatch()
    b.set_state("likes", {"type": "likes", "total": 1})
    b.set_state("online", {"type": "online", "count": 3})
    b.take()
    b.set_state("likes", {"type": "likes", "total": 4})  # pending, not sent yet
    b.set_state("sale.stock:s1", {"type": "sale.stock", "sale": "s1", "left": 9})
    current = b.current_state()
    assert sorted(current, key=lambda e: e["type"]) == [
        {"type": "likes", "total": 4},
        {"type": "online", "count": 3},
        {"type": "sale.stock", "sale": "s1", "left": 9},
    ]
    # asking does not consume anything
    assert b.take() == (
        [],
        [{"type": "likes", "total": 4}, {"type": "sale.stock", "sale": "s1", "left": 9}],
    )
    assert len(b.current_state()) == 3
