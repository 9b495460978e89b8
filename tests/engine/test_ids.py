"""engine/ids.py: id charsets, the resume cursor, stream id ordering."""

from __future__ import annotations

import pytest

from engine.errors import BadRequest
from engine.ids import (
    ZERO_ID,
    Cursor,
    is_valid_id,
    new_epoch,
    new_room_id,
    parse_stream_id,
    room_id,
    stream_id_key,
    user_id,
)

# -- cursor ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "epoch", "sid"),
    [
        ("abc123:1700000000000-0", "abc123", "1700000000000-0"),
        ("a:0-0", "a", "0-0"),
        (
            "z" * 32 + ":18446744073709551615-18446744073709551615",
            "z" * 32,
            "18446744073709551615-18446744073709551615",
        ),
    ],
)
def test_cursor_parse_good(text: str, epoch: str, sid: str) -> None:
    c = Cursor.parse(text)
    assert (c.epoch, c.id) == (epoch, sid)
    assert str(c) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "abc:",
        ":1-0",
        "ABC:1-0",
        "a b:1-0",
        "a-b:1-0",
        "z" * 33 + ":1-0",
        "abc:1",
        "abc:1-",
        "abc:-0",
        "abc:-1-0",
        "abc:1-0-0",
        "abc:x-0",
        "abc:1-0:2",
        "abc:1.0-0",
        "abc: 1-0",
        "abc:1-0 ",
        "abc:" + "9" * 21 + "-0",
        "abc:$",
        "abc:+",
        "é:1-0",
    ],
)
def test_cursor_parse_bad(text: str) -> None:
    with pytest.raises(BadRequest) as exc:
        Cursor.parse(text)
    assert exc.value.code == "bad_request"


# `$` in a regex also matches before a final newline: "abc:1-0\n" would pass and reach XRANGE.
@pytest.mark.parametrize("text", ["abc:1-0\n", "abc\n:1-0"])
def test_cursor_parse_rejects_trailing_newline(text: str) -> None:
    with pytest.raises(BadRequest):
        Cursor.parse(text)


def test_new_epoch_is_a_valid_cursor_epoch() -> None:
    epochs = {new_epoch() for _ in range(20)}
    assert len(epochs) == 20  # random
    for e in epochs:
        assert Cursor.parse(f"{e}:0-0").epoch == e


# -- stream ids --------------------------------------------------------------------------------


def test_stream_id_key_orders_numerically() -> None:
    assert "10-0" < "9-5"  # as strings: the wrong way round
    assert stream_id_key("10-0") > stream_id_key("9-5")
    assert stream_id_key("1-10") > stream_id_key("1-9")
    assert stream_id_key("5-0") == (5, 0)
    ids = ["10-0", "9-5", "1700000000000-1", "9-10", "0-0", "1700000000000-0", "9-9"]
    assert sorted(ids, key=stream_id_key) == [
        "0-0",
        "9-5",
        "9-9",
        "9-10",
        "10-0",
        "1700000000000-0",
        "1700000000000-1",
    ]
    assert stream_id_key(ZERO_ID) == (0, 0)


@pytest.mark.parametrize("bad", ["", "5", "5-", "-5", "a-1", "1-b", "1-2-3", "$", ">", "*"])
def test_parse_stream_id_bad(bad: str) -> None:
    with pytest.raises(BadRequest, match="not a history id"):
        parse_stream_id(bad)


# -- user and room ids -------------------------------------------------------------------------


GOOD_IDS = ["a", "A", "0", "alice", "A-z_0.9", "room.1-2_3", "x" * 64, "...", "-"]
BAD_IDS = ["", "x" * 65, "a b", "a/b", "a:b", "{a}", "é", "李", "a\tb", "a\x00", "a%20b", "a+b"]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_good_ids(value: str) -> None:
    assert is_valid_id(value)
    assert room_id(value) == value
    assert user_id(value) == value


@pytest.mark.parametrize("value", BAD_IDS)
def test_bad_ids(value: str) -> None:
    assert not is_valid_id(value)
    with pytest.raises(BadRequest, match="room id must be"):
        room_id(value)
    with pytest.raises(BadRequest, match="user id must be"):
        user_id(value)


@pytest.mark.parametrize("value", [None, 5, b"alice", ["alice"]])
def test_non_strings_are_not_ids(value: object) -> None:
    assert not is_valid_id(value)


@pytest.mark.parametrize("value", ["alice\n", "x" * 64 + "\n"])
def test_trailing_newline_is_not_an_id(value: str) -> None:
    assert not is_valid_id(value)


def test_new_room_id_is_valid() -> None:
    ids = {new_room_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(is_valid_id(r) for r in ids)
