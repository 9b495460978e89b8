"""engine/ops.py: every client op parsed, every wrong shape refused with a usable message."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import BadRequest
from engine.ops import MAX_REF_CHARS, Buy, Danmaku, Enter, Like, Ping, parse_op, ref_of

# -- good ops ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "op"),
    [
        ({"op": "danmaku", "text": "hello", "ref": "r1"}, Danmaku(text="hello", ref="r1")),
        ({"op": "danmaku", "text": "弹幕"}, Danmaku(text="弹幕")),
        # empty text parses; the room rules answer `empty`, not the parser
        ({"op": "danmaku", "text": ""}, Danmaku(text="")),
        ({"op": "like", "count": 1}, Like(count=1)),
        ({"op": "like", "count": 100, "ref": "x"}, Like(count=100, ref="x")),
        ({"op": "like"}, Like(count=1)),  # count defaults to 1
        ({"op": "buy", "sale": "s1", "qty": 2, "ref": "b"}, Buy(sale="s1", qty=2, ref="b")),
        ({"op": "buy", "sale": "s1"}, Buy(sale="s1", qty=1)),  # qty defaults to 1
        ({"op": "enter", "lottery": "l1", "ref": "e"}, Enter(lottery="l1", ref="e")),
        ({"op": "ping", "ref": "p"}, Ping(ref="p")),
        ({"op": "ping"}, Ping()),
        ({"op": "ping", "ref": None}, Ping()),  # an explicit null ref is no ref
        ({"op": "ping", "ref": "r" * MAX_REF_CHARS}, Ping(ref="r" * MAX_REF_CHARS)),
        ({"op": "like", "count": 3, "extra": [1, 2]}, Like(count=3)),  # unknown fields ignored
    ],
)
def test_parse_op(message: dict[str, Any], op: object) -> None:
    assert parse_op(message) == op


# -- bad ops -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ([], "must be a map"),
        ("ping", "must be a map"),
        (None, "must be a map"),
        (42, "must be a map"),
        ({}, "`op` must be a string"),
        ({"op": 1}, "`op` must be a string"),
        ({"op": None}, "`op` must be a string"),
        ({"op": "dance"}, "unknown op 'dance'"),
        ({"op": "DANMAKU", "text": "x"}, "unknown op"),
        ({"op": "danmaku"}, "`text` must be a string"),
        ({"op": "danmaku", "text": 5}, "`text` must be a string"),
        ({"op": "danmaku", "text": ["a"]}, "`text` must be a string"),
        ({"op": "danmaku", "text": None}, "`text` must be a string"),
        ({"op": "like", "count": 0}, "`count` must be 1..100"),
        ({"op": "like", "count": 101}, "`count` must be 1..100"),
        ({"op": "like", "count": -5}, "`count` must be 1..100"),
        ({"op": "like", "count": True}, "`count` must be an integer"),
        ({"op": "like", "count": "5"}, "`count` must be an integer"),
        ({"op": "like", "count": 5.0}, "`count` must be an integer"),
        ({"op": "like", "count": None}, "`count` must be an integer"),
        ({"op": "buy"}, "`sale` must be a string"),
        ({"op": "buy", "sale": 7, "qty": 1}, "`sale` must be a string"),
        ({"op": "buy", "sale": "s", "qty": "2"}, "`qty` must be an integer"),
        ({"op": "buy", "sale": "s", "qty": False}, "`qty` must be an integer"),
        ({"op": "buy", "sale": "s", "qty": 1.5}, "`qty` must be an integer"),
        ({"op": "enter"}, "`lottery` must be a string"),
        ({"op": "enter", "lottery": {"id": "l"}}, "`lottery` must be a string"),
        ({"op": "ping", "ref": 5}, "`ref` must be a string"),
        ({"op": "ping", "ref": "r" * (MAX_REF_CHARS + 1)}, "`ref` longer than 64 characters"),
    ],
)
def test_bad_op_is_bad_request_with_a_clear_message(message: Any, says: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_op(message)
    assert exc.value.code == "bad_request"
    assert says in exc.value.message


def test_unknown_op_name_is_truncated_in_the_message() -> None:
    with pytest.raises(BadRequest) as exc:
        parse_op({"op": "z" * 10_000})
    assert len(exc.value.message) < 64
    assert "z" * 32 in exc.value.message and "z" * 33 not in exc.value.message


def test_ops_are_frozen_values() -> None:
    op = parse_op({"op": "like", "count": 2})
    with pytest.raises(AttributeError):
        op.count = 3  # type: ignore[misc]
    assert op == Like(2) and hash(op) == hash(Like(2))


# -- ref_of ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "ref"),
    [
        ({"op": "danmaku", "text": 5, "ref": "r1"}, "r1"),  # a bad op still has a usable ref
        ({"op": "nope", "ref": "abc"}, "abc"),
        ({"ref": "r" * MAX_REF_CHARS}, "r" * MAX_REF_CHARS),
        ({"ref": ""}, ""),
        ({"op": "ping"}, None),
        ({"ref": "r" * (MAX_REF_CHARS + 1)}, None),
        ({"ref": 5}, None),
        ({"ref": ["r"]}, None),
        (["ref", "r1"], None),
        ("r1", None),
        (None, None),
    ],
)
def test_ref_of(message: Any, ref: str | None) -> None:
    assert ref_of(message) == ref
