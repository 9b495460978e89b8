"""engine/codec.py: the wire format, byte for byte, and the limits on what comes in."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.codec import (
    Subprotocol,
    decode_events,
    decode_message,
    encode,
    encode_value,
    negotiate,
)
from engine.errors import BadRequest

MP = Subprotocol.MSGPACK
JS = Subprotocol.JSON


def _h(text: str) -> bytes:
    """Hex with spaces and `#` comments, one token per msgpack item, for readable tables."""
    lines = [line.split("#", 1)[0] for line in text.strip().splitlines()]
    return bytes.fromhex("".join("".join(lines).split()))


# (events, exact msgpack bytes, exact JSON bytes): one table, used for encoding and decoding.
GOLDEN: list[tuple[list[dict[str, Any]], bytes, bytes]] = [
    (
        [],
        _h("90"),
        b"[]",
    ),
    (
        [{"type": "likes", "total": 5}],
        _h("""
            91                      # array of 1
            82                      # map of 2
            a4 74797065             # "type"
            a5 6c696b6573           # "likes"
            a5 746f74616c           # "total"
            05                      # 5
        """),
        b'[{"type":"likes","total":5}]',
    ),
    (
        [{"type": "online", "count": 0}, {"type": "notice", "text": "hi", "id": "1700000000000-0"}],
        _h("""
            92                      # array of 2
            82 a4 74797065 a6 6f6e6c696e65      # {"type": "online",
               a5 636f756e74 00                 #  "count": 0}
            83 a4 74797065 a6 6e6f74696365      # {"type": "notice",
               a4 74657874 a2 6869              #  "text": "hi",
               a2 6964 af 313730303030303030303030302d30   # "id": "1700000000000-0"}
        """),
        b'[{"type":"online","count":0},{"type":"notice","text":"hi","id":"1700000000000-0"}]',
    ),
    (
        # non-ASCII text travels as raw UTF-8 in both formats (JSON is not \u-escaped)
        [
            {
                "type": "danmaku",
                "id": "5-1",
                "user": {"id": "u1", "name": "李"},
                "text": "好!",
                "ts": 1.5,
            }
        ],
        _h("""
            91 85
            a4 74797065 a7 64616e6d616b75       # "type": "danmaku"
            a2 6964 a3 352d31                   # "id": "5-1"
            a4 75736572 82                      # "user": {
               a2 6964 a2 7531                  #   "id": "u1",
               a4 6e616d65 a3 e69d8e            #   "name": "李"}
            a4 74657874 a4 e5a5bd21             # "text": "好!"
            a2 7473 cb 3ff8000000000000         # "ts": 1.5 (float 64)
        """),
        '[{"type":"danmaku","id":"5-1","user":{"id":"u1","name":"李"},"text":"好!","ts":1.5}]'.encode(),
    ),
    (
        [
            {
                "type": "welcome",
                "recovered": False,
                "preview_ends_at": None,
                "likes": 70000,
                "delta": -1,
            }
        ],
        _h("""
            91 85
            a4 74797065 a7 77656c636f6d65                   # "type": "welcome"
            a9 7265636f7665726564 c2                        # "recovered": false
            af 707265766965775f656e64735f6174 c0            # "preview_ends_at": nil
            a5 6c696b6573 ce 00011170                       # "likes": 70000 (uint 32)
            a5 64656c7461 ff                                # "delta": -1 (negative fixint)
        """),
        b'[{"type":"welcome","recovered":false,"preview_ends_at":null,"likes":70000,"delta":-1}]',
    ),
    (
        [{"type": "notice", "text": "x" * 40}],
        _h("91 82 a4 74797065 a6 6e6f74696365 a4 74657874 d9 28" + " 78" * 40),  # str 8
        b'[{"type":"notice","text":"' + b"x" * 40 + b'"}]',
    ),
]

IDS = [f"golden{i}" for i in range(len(GOLDEN))]


# -- golden table ------------------------------------------------------------------------------


@pytest.mark.parametrize(("events", "mp", "js"), GOLDEN, ids=IDS)
def test_encode_msgpack_is_byte_exact(events: list, mp: bytes, js: bytes) -> None:
    assert encode(events, MP) == mp


@pytest.mark.parametrize(("events", "mp", "js"), GOLDEN, ids=IDS)
def test_encode_json_is_byte_exact(events: list, mp: bytes, js: bytes) -> None:
    assert encode(events, JS) == js


@pytest.mark.parametrize(("events", "mp", "js"), GOLDEN, ids=IDS)
def test_decode_events_reads_golden_bytes(events: list, mp: bytes, js: bytes) -> None:
    # the frame type says which: bytes are msgpack, text is JSON
    assert decode_events(mp) == events
    assert decode_events(js.decode("utf-8")) == events


@pytest.mark.parametrize(("events", "mp", "js"), GOLDEN, ids=IDS)
def test_decode_message_reads_golden_json_text(events: list, mp: bytes, js: bytes) -> None:
    assert decode_message(js.decode("utf-8")) == events


@pytest.mark.parametrize(("events", "mp", "js"), GOLDEN, ids=IDS)
def test_decode_message_reads_golden_msgpack(events: list, mp: bytes, js: bytes) -> None:
    assert decode_message(mp) == events


def test_decode_message_accepts_a_msgpack_op() -> None:
    # The smallest thing a msgpack client sends: {"op": "ping"}. (Regression: decode_message
    # once passed `max_buffer_size` to msgpack.unpackb, a TypeError it reported as
    # "undecodable", so every binary message was refused.)
    assert decode_message(_h("81 a2 6f70 a4 70696e67")) == {"op": "ping"}


def test_encode_value_matches_encode_for_lists() -> None:
    events = GOLDEN[2][0]
    assert encode_value(events, MP) == encode(events, MP)
    assert encode_value(events, JS) == encode(events, JS)
    assert encode_value({"op": "ping"}, JS) == b'{"op":"ping"}'
    assert encode_value({"op": "ping"}, MP) == _h("81 a2 6f70 a4 70696e67")


def test_decode_events_refuses_a_non_array() -> None:
    with pytest.raises(BadRequest, match="array"):
        decode_events('{"type":"likes"}')
    with pytest.raises(BadRequest, match="array"):
        decode_events(_h("81 a4 74797065 a5 6c696b6573"))


# -- negotiation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["liveroom.v1.msgpack"], MP),
        (["liveroom.v1.json"], JS),
        (["chat", "liveroom.v1.msgpack"], MP),
        (["liveroom.v1.json", "liveroom.v1.msgpack"], JS),  # the client's first choice wins
        (["liveroom.v1.msgpack", "liveroom.v1.json"], MP),
        ([], JS),
        (["chat", "liveroom.v2.msgpack", "LIVEROOM.V1.MSGPACK"], JS),
        (("liveroom.v1.msgpack",), MP),
    ],
)
def test_negotiate(offered: list[str], expected: Subprotocol) -> None:
    assert negotiate(offered) is expected


def test_subprotocol_binary_flag_and_names() -> None:
    assert MP.binary and not JS.binary
    assert MP.value == "liveroom.v1.msgpack" and JS.value == "liveroom.v1.json"


# -- limits ------------------------------------------------------------------------------------


def test_json_exactly_at_max_bytes_is_accepted() -> None:
    text = '"' + "a" * 98 + '"'
    assert len(text) == 100
    assert decode_message(text, max_bytes=100) == "a" * 98


@pytest.mark.parametrize(
    "data", ['"' + "a" * 99 + '"', b"\xc4\x63" + b"a" * 99], ids=["json-text", "msgpack-bytes"]
)
def test_over_max_bytes_is_bad_request(data: bytes | str) -> None:
    with pytest.raises(BadRequest, match="larger than 100 bytes") as exc:
        decode_message(data, max_bytes=100)
    assert exc.value.code == "bad_request"


def test_default_limit_is_64_kib() -> None:
    decode_message('"' + "a" * (64 * 1024 - 2) + '"')
    with pytest.raises(BadRequest, match="larger"):
        decode_message('"' + "a" * (64 * 1024 - 1) + '"')


def test_json_text_limit_counts_utf8_bytes() -> None:
    text = '"' + "€" * 60 + '"'  # 62 characters, 182 bytes
    with pytest.raises(BadRequest, match="larger"):
        decode_message(text, max_bytes=100)


def _nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _nested_map(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {f"k{i}": value}
    return value


@pytest.mark.parametrize("make", [_nested_list, _nested_map], ids=["lists", "maps"])
def test_json_depth_limit(make: Any) -> None:
    ok, deep = make(8), make(9)
    assert decode_message(encode_value(ok, JS).decode()) == ok
    with pytest.raises(BadRequest, match="nested deeper than 8"):
        decode_message(encode_value(deep, JS).decode())
    # the limit is a parameter
    assert decode_message(encode_value(make(2), JS).decode(), max_depth=2) == make(2)
    with pytest.raises(BadRequest, match="deeper than 2"):
        decode_message(encode_value(make(3), JS).decode(), max_depth=2)


def test_depth_counts_the_deepest_branch() -> None:
    value = {"a": 1, "b": [[[[[[[["deep"]]]]]]]], "c": []}  # 9 levels through "b"
    with pytest.raises(BadRequest, match="deeper"):
        decode_message(encode_value(value, JS).decode())


def test_msgpack_depth_limit() -> None:
    assert decode_message(encode_value(_nested_list(8), MP)) == _nested_list(8)
    with pytest.raises(BadRequest, match="nested deeper than 8"):
        decode_message(encode_value(_nested_list(9), MP))


@pytest.mark.parametrize(
    "text",
    ["", "nope", '{"a":', "[1,]", "{'op': 'ping'}", '{"op":"ping"} x', "1" * 5000],
    ids=[
        "empty",
        "word",
        "truncated",
        "trailing-comma",
        "single-quotes",
        "extra-data",
        "5000-digit-int",
    ],
)
def test_undecodable_json_is_bad_request(text: str) -> None:
    with pytest.raises(BadRequest, match="undecodable") as exc:
        decode_message(text)
    assert exc.value.code == "bad_request"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x92\x01",
        b"\x01\x02",
        b"\xa2\xff\xfe",
        b"\x81\x01\x02",
        b"\xd4\x01\x00",
        b"\xdd\xff\xff\xff\xff",
    ],
    ids=[
        "empty",
        "never-used-byte",
        "truncated",
        "extra-data",
        "bad-utf8",
        "int-map-key",
        "ext-type",
        "huge-array-header",
    ],
)
def test_undecodable_msgpack_is_bad_request(data: bytes) -> None:
    with pytest.raises(BadRequest, match="undecodable") as exc:
        decode_message(data)
    assert exc.value.code == "bad_request"


@pytest.mark.parametrize(
    "data",
    [
        "[" * 5000,
        "[" * 5000 + "]" * 5000,
        '{"a":' * 5000 + "1" + "}" * 5000,
        b"\x91" * 5000 + b"\xc0",
    ],
    ids=["json-open", "json-balanced", "json-maps", "msgpack"],
)
def test_pathological_nesting_is_bad_request_not_recursion_error(data: bytes | str) -> None:
    with pytest.raises(BadRequest):
        decode_message(data)


# -- property: JSON-compatible values round-trip ----------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # msgpack's integer range
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)


@cache
def _values(depth: int) -> st.SearchStrategy[Any]:
    """JSON-compatible values nested at most ``depth`` containers deep."""
    if depth == 0:
        return _scalars
    inner = _values(depth - 1)
    return (
        _scalars
        | st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    )


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells bool from int and int from float (1 == True == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


_prop = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_prop
@given(_values(8))
def test_json_round_trip(value: Any) -> None:
    data = encode_value(value, JS)
    assert _same(decode_message(data.decode("utf-8"), max_bytes=1 << 20), value)


@_prop
@given(_values(8))
def test_msgpack_round_trip(value: Any) -> None:
    data = encode_value(value, MP)
    assert _same(decode_message(data, max_bytes=1 << 20), value)


@_prop
@given(st.lists(st.dictionaries(st.text(max_size=10), _values(3), max_size=5), max_size=5))
def test_event_batches_round_trip_client_side(events: list[dict[str, Any]]) -> None:
    assert _same(decode_events(encode(events, MP)), events)
    assert _same(decode_events(encode(events, JS).decode("utf-8")), events)
