"""Fuzzing engine/codec.py and engine/ops.py: whatever a client sends, only `bad_request` comes out.

Every test feeds hostile input through ``decode_message`` and ``parse_op`` exactly as the
gateway does and accepts one outcome besides success: ``BadRequest`` with code ``bad_request``.
Any other exception (a ``UnicodeEncodeError``, an ``OverflowError``, a ``RecursionError``)
would close the client's connection with 1011 instead of answering ``error``.
"""

from __future__ import annotations

import json
import math
import struct
import tracemalloc
from dataclasses import asdict
from functools import cache
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, example, given, reject, settings
from hypothesis import strategies as st

from engine.codec import Subprotocol, decode_message, encode_value
from engine.errors import BadRequest
from engine.ops import MAX_REF_CHARS, Buy, Danmaku, Enter, Like, Op, Ping, parse_op, ref_of

MP = Subprotocol.MSGPACK
JS = Subprotocol.JSON
LIMIT = 64 * 1024
DEPTH = 8

_fuzz = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
# tracemalloc makes every allocation slow: fewer, bigger examples
_mem = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


def _refused(exc: BadRequest) -> None:
    assert type(exc) is BadRequest, exc  # not a subclass with another code
    assert exc.code == "bad_request" and exc.status == 400
    assert isinstance(exc.message, str) and 0 < len(exc.message) < 200


def _handle(data: bytes | str) -> Op | None:
    """What the gateway does with one message: the op, or None when it answers `bad_request`."""
    try:
        value = decode_message(data, max_bytes=LIMIT, max_depth=DEPTH)
    except BadRequest as exc:
        _refused(exc)
        return None
    assert _exact_depth(value) <= DEPTH
    ref = ref_of(value)
    if ref is not None:
        _echoable(ref)
    try:
        op = parse_op(value)
    except BadRequest as exc:
        _refused(exc)
        return None
    # every string an op carries may be written back to a client or stored (ack `ref`,
    # danmaku `text`): it must encode in both subprotocols
    _echoable({k: v for k, v in asdict(op).items() if isinstance(v, str)})
    return op


def _echoable(value: Any) -> None:
    encode_value(value, MP)
    encode_value(value, JS).decode("utf-8")


def _exact_depth(value: Any) -> int:
    """Nesting depth of containers, computed independently of the codec's own check."""
    if isinstance(value, dict):
        return 1 + max(map(_exact_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_exact_depth, value), default=0)
    return 0


def _peak_bytes(data: bytes | str) -> int:
    """Peak Python memory while the gateway handles ``data`` (the input itself not counted)."""
    tracemalloc.start()
    try:
        _handle(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- random bytes and text ---------------------------------------------------------------------


@_fuzz
@given(st.binary(max_size=512))
@example(b"\xc1")
@example(b"\x81\xa2op\xa4ping\x00")
def test_random_bytes_as_msgpack(data: bytes) -> None:
    _handle(data)


# text that looks like JSON often enough to get past the first byte
_json_alphabet = st.sampled_from(
    list('{}[]":,\\ 0123456789.-+eEtrufalsnNIiy') + ["\\u", "\\ud800", "\\udc00", "é", "好", "😀"]
)
_any_char = st.characters(codec=None, exclude_categories=())  # lone surrogates too


@_fuzz
@given(st.lists(_json_alphabet | _any_char, max_size=200).map("".join))
@example('{"op":"ping","ref":"\\ud800"}')
@example('{"op":"danmaku","text":"\\udfff x"}')
@example('{"op":"ping","ref":"\ud800"}')
@example('{"op":"ping","\\ud800":1}')
def test_random_text_as_json(text: str) -> None:
    _handle(text)


def test_an_escaped_lone_surrogate_is_bad_request_and_a_pair_is_text() -> None:
    # `{"op":"ping","ref":"\ud800"}` once decoded, and the ack echoing the ref raised
    # UnicodeEncodeError in the gateway's write path
    for text in ['{"op":"ping","ref":"\\ud800"}', '{"op":"danmaku","text":"a\\uDC00b"}']:
        with pytest.raises(BadRequest, match="surrogate") as exc:
            decode_message(text)
        _refused(exc.value)
    assert _handle('{"op":"danmaku","text":"\\ud83d\\ude00"}') == Danmaku(text="😀")
    assert _handle('{"op":"danmaku","text":"\\u597d"}') == Danmaku(text="好")


@st.composite
def _mutated(draw: st.DrawFn, sp: Subprotocol) -> bytes:
    """A valid op's bytes with a few bytes flipped, cut or inserted."""
    message = draw(_op_messages())
    try:
        data = bytearray(encode_value(message, sp))
    except (OverflowError, TypeError):  # ints past 64 bits in msgpack, bytes in JSON
        reject()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif how == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=5))
    return bytes(data)


@_fuzz
@given(_mutated(MP))
def test_mutated_msgpack_ops(data: bytes) -> None:
    _handle(data)


@_fuzz
@given(_mutated(JS))
def test_mutated_json_ops(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # the WebSocket layer refuses a text frame that is not UTF-8; as binary it is msgpack
        _handle(data)
        return
    _handle(text)


# -- non-UTF-8 ---------------------------------------------------------------------------------


@_fuzz
@given(st.binary(min_size=1, max_size=40))
def test_msgpack_strings_must_be_utf8(payload: bytes) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    else:
        valid = True
    str_header = b"\xd9" + bytes([len(payload)])  # str 8
    message = b"\x82\xa2op\xa7danmaku\xa4text" + str_header + payload
    if valid:
        assert _handle(message) == Danmaku(text=payload.decode("utf-8"))
    else:
        with pytest.raises(BadRequest, match="undecodable"):
            decode_message(message)
    # as `bin` the same bytes are never a string
    assert _handle(encode_value({"op": "danmaku", "text": payload}, MP)) is None
    assert _handle(encode_value({"op": "ping", "ref": payload}, MP)) is None


# -- sizes that lie ----------------------------------------------------------------------------

_CLAIMS = {
    "str32": b"\xdb",
    "bin32": b"\xc6",
    "ext32": b"\xc9",
    "array32": b"\xdd",
    "map32": b"\xdf",
}


@pytest.mark.parametrize("header", _CLAIMS.values(), ids=_CLAIMS.keys())
@pytest.mark.parametrize("filler", [b"\x00", b"\xc0", b"a"], ids=["zero", "nil", "a"])
def test_a_64_kib_message_claiming_4_gib_is_refused_in_bounded_memory(
    header: bytes, filler: bytes
) -> None:
    data = header + b"\xff\xff\xff\xff" + filler * (LIMIT - 5)
    assert len(data) == LIMIT
    assert _peak_bytes(data) < 256 * 1024
    assert _handle(data) is None


# Container headers that claim many elements, nested: msgpack allocates an array's slots at
# the header, so 21,845 nested array16 headers claiming 65,535 each once took 32 MiB.
_NESTING_HEADERS = st.sampled_from(
    [
        b"\xdc\xff\xff",  # array16, 65,535
        b"\xdc\x10\x00",  # array16, 4,096
        b"\xdc\x0f\xff",  # array16, 4,095
        b"\xdd\xff\xff\xff\xff",  # array32
        b"\xdd\x00\x00\x10\x00",  # array32, 4,096
        b"\xde\x01\x00\xa1k",  # map16 of 256 and a key
        b"\xdf\x00\x00\x01\x00\xa1k",  # map32 of 256 and a key
        b"\x9f",  # fixarray of 15
        b"\x8f\xa1k",  # fixmap of 15 and a key
    ]
)


@_mem
@given(st.lists(_NESTING_HEADERS, min_size=1, max_size=8), st.sampled_from([b"", b"\xc0"]))
@example([b"\xdc\xff\xff"], b"")
@example([b"\xdc\x10\x00"], b"")
@example([b"\xdc\x10\x00", b"\x9f"], b"\xc0")
@example([b"\xdd\x00\x00\x10\x00"], b"")
def test_nested_lying_headers_are_refused_in_bounded_memory(
    pattern: list[bytes], tail: bytes
) -> None:
    unit = b"".join(pattern)
    data = unit * ((LIMIT - len(tail)) // len(unit)) + tail
    assert _peak_bytes(data) < 2 * 1024 * 1024
    assert _handle(data) is None


def test_honest_arrays_still_decode_next_to_lying_headers() -> None:
    # up to 4,096 elements while a message holds at most 16 bytes 0xdc/0xdd (array16, array32)
    value = {"op": "ping", "a": [0] * 4096, "b": [[0] * 16] * 14, "c": b"\xdc"}
    assert decode_message(encode_value(value, MP)) == value
    with pytest.raises(BadRequest):
        decode_message(encode_value({"op": "ping", "a": [0] * 4097}, MP))
    # past that the 65,536 slots are shared out: 100 array16 headers, 655 elements each
    shared = {"op": "ping", "a": [[0] * 655] * 99}
    assert decode_message(encode_value(shared, MP), max_bytes=1 << 20) == shared
    with pytest.raises(BadRequest, match="undecodable"):
        decode_message(encode_value({"op": "ping", "a": [[0] * 656] * 99}, MP), max_bytes=1 << 20)
    # ops carry no arrays: text full of 0xdc lead bytes (Thaana, U+0780..) is just text
    text = "\u0780\u0781" * 100
    assert _handle(encode_value({"op": "danmaku", "text": text}, MP)) == Danmaku(text=text)


# JSON can not lie about sizes, but small tokens become big objects
_JSON_UNITS = st.sampled_from(["[],", "{},", '"",', "1.5,", "0,", "[[{}]],", '{"":[]},', "1e999,"])


@_mem
@given(_JSON_UNITS, st.booleans())
def test_64_kib_of_json_decodes_in_bounded_memory(unit: str, close: bool) -> None:
    body = unit * ((LIMIT - 2) // len(unit))
    text = "[" + (body[:-1] + "]" if close else body)
    assert len(text.encode()) <= LIMIT
    assert _peak_bytes(text) < 4 * 1024 * 1024
    if not close:
        assert _handle(text) is None


# -- nesting -----------------------------------------------------------------------------------


def _nest(path: list[str], leaf: Any) -> Any:
    value = leaf
    for kind in reversed(path):
        value = [value] if kind == "l" else {"k": value}
    return value


@_fuzz
@given(
    st.lists(st.sampled_from("lm"), max_size=40) | st.integers(900, 5000).map(lambda n: ["l"] * n),
    st.sampled_from([1, "x", None, [], {}]),
    st.sampled_from([MP, JS]),
)
@example(["l"] * 8, 1, JS)
@example(["m"] * 8, "x", MP)
@example(["l"] * 8, [], MP)
def test_deep_nesting_in_both_codecs(path: list[str], leaf: Any, sp: Subprotocol) -> None:
    value = _nest(path, leaf)
    depth = len(path) + (1 if leaf in ([], {}) else 0)
    try:
        data: bytes | str = encode_value(value, sp)
    except (RecursionError, ValueError):
        # the encoders have their own limits: write the JSON or msgpack by hand
        data = _hand_encoded(path, leaf, sp)
    if sp is JS:
        data = data.decode("utf-8") if isinstance(data, bytes) else data
    if depth <= DEPTH:
        assert decode_message(data) == value
    else:
        with pytest.raises(BadRequest) as exc:
            decode_message(data)
        _refused(exc.value)


def _hand_encoded(path: list[str], leaf: Any, sp: Subprotocol) -> bytes | str:
    if sp is JS:
        opens = "".join("[" if k == "l" else '{"k":' for k in path)
        closes = "".join("]" if k == "l" else "}" for k in reversed(path))
        return opens + json.dumps(leaf) + closes
    opens = b"".join(b"\x91" if k == "l" else b"\x81\xa1k" for k in path)
    return opens + msgpack.packb(leaf)


# -- every field of every op, with every type --------------------------------------------------

_HUGE = 10**40
_any_value = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.sampled_from([0, 1, 100, 101, -1, _HUGE, -_HUGE, 2**64, 2**63 - 1])
    | st.floats()  # NaN and ±inf included
    | st.sampled_from([1.0, 5.0, math.nan, math.inf, -math.inf])
    | st.text(max_size=80)
    | st.sampled_from(["", "r" * MAX_REF_CHARS, "r" * (MAX_REF_CHARS + 1), "danmaku", "ping"])
    | st.binary(max_size=8)
    | st.lists(st.integers(0, 3), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2)
)
_FIELDS = ("op", "ref", "text", "count", "sale", "qty", "lottery")
_OPS = ("danmaku", "like", "buy", "enter", "ping")


@st.composite
def _op_messages(draw: st.DrawFn) -> dict[str, Any]:
    """An op map where each field is absent, of the right type, or of any type at all."""
    message: dict[str, Any] = {"op": draw(st.sampled_from(_OPS) | _any_value)}
    right = {
        "ref": st.text(max_size=70) | st.none(),
        "text": st.text(max_size=30),
        "count": st.integers(-2, 103),
        "sale": st.text(max_size=10),
        "qty": st.integers(-2, 10),
        "lottery": st.text(max_size=10),
    }
    for field, good in right.items():
        kind = draw(st.sampled_from(["absent", "right", "any"]))
        if kind != "absent":
            message[field] = draw(good if kind == "right" else _any_value)
    return message


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _expected(m: dict[str, Any]) -> tuple[Op | None, set[str]]:
    """An independent model of §4's ops: the op, or None and the fields that could be named."""
    if not isinstance(m["op"], str):
        return None, {"op"}
    ref = m.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_CHARS):
        return None, {"ref"}
    op = m["op"]
    if op == "ping":
        return Ping(ref), set()
    if op == "danmaku":
        text = m.get("text")
        return (Danmaku(text, ref), set()) if isinstance(text, str) else (None, {"text"})
    if op == "like":
        count = m.get("count", 1)
        return (
            (Like(count, ref), set()) if _is_int(count) and 1 <= count <= 100 else (None, {"count"})
        )
    if op == "buy":
        sale, qty = m.get("sale"), m.get("qty", 1)
        bad = {f for f, ok in (("sale", isinstance(sale, str)), ("qty", _is_int(qty))) if not ok}
        return (None, bad) if bad else (Buy(sale, qty, ref), set())
    if op == "enter":
        lottery = m.get("lottery")
        return (Enter(lottery, ref), set()) if isinstance(lottery, str) else (None, {"lottery"})
    return None, {"op"}


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_op_messages())
@example({"op": "like", "count": math.nan})
@example({"op": "like", "count": math.inf})
@example({"op": "like", "count": _HUGE})
@example({"op": "buy", "sale": "s", "qty": math.nan})
@example({"op": "buy", "sale": "s", "qty": 2.0})
@example({"op": "buy", "sale": b"s", "qty": 1})
@example({"op": "danmaku", "text": b"hi"})
@example({"op": "enter", "lottery": 1.5})
@example({"op": b"ping"})
@example({"op": "ping", "ref": b"r"})
def test_every_field_of_every_op_with_every_type(message: dict[str, Any]) -> None:
    expected, blame = _expected(message)
    if expected is not None:
        assert parse_op(message) == expected
    else:
        with pytest.raises(BadRequest) as exc:
            parse_op(message)
        _refused(exc.value)
        assert any(f"`{field}`" in exc.value.message for field in blame) or (
            blame == {"op"} and "unknown op" in exc.value.message
        ), (exc.value.message, blame)


@_fuzz
@given(_op_messages(), st.sampled_from([MP, JS]))
def test_ops_through_the_codec_match_the_model(message: dict[str, Any], sp: Subprotocol) -> None:
    # the same maps as they arrive on the wire; bin and huge ints do not exist in one of the two
    if sp is JS:
        assume(not any(isinstance(v, bytes) for v in message.values()))
        data: bytes | str = json.dumps(message)
    else:
        try:
            data = encode_value(message, MP)
        except OverflowError:
            assume(False)
    got = _handle(data)
    decoded = json.loads(data) if sp is JS else msgpack.unpackb(data, raw=False)
    want, _ = _expected(decoded)
    assert got == want


@pytest.mark.parametrize("sp", [MP, JS], ids=["msgpack", "json"])
@pytest.mark.parametrize("field", ["count", "qty"])
@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", "1.0", "true"])
def test_nan_inf_and_floats_in_integer_fields_are_bad_request(
    sp: Subprotocol, field: str, raw: str
) -> None:
    op = "like" if field == "count" else "buy"
    if sp is JS:
        data: bytes | str = f'{{"op":"{op}","sale":"s","{field}":{raw}}}'
    else:
        number = json.loads(raw)
        packed = b"\xc3" if number is True else b"\xcb" + struct.pack(">d", number)
        data = b"\x83\xa2op" + msgpack.packb(op) + b"\xa4sale\xa1s" + msgpack.packb(field) + packed
    with pytest.raises(BadRequest, match=f"`{field}` must be an integer"):
        parse_op(decode_message(data))


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ('{"op":"buy","sale":"s","qty":' + "9" * 4000 + "}", Buy("s", int("9" * 4000))),
        ('{"op":"like","count":' + "9" * 4000 + "}", None),
        ('{"op":"like","count":' + "9" * 4301 + "}", None),  # past Python's int-string limit
        ('{"op":"ping","ref":"r","n":-' + "9" * 5000 + "}", None),
        ('{"op":"like","count":1' + "0" * 400 + "e-400}", None),  # a float, even if 1.0
    ],
    ids=["huge-qty", "huge-count", "too-many-digits", "huge-extra", "float-count"],
)
def test_huge_ints_in_json(text: str, op: Op | None) -> None:
    # a huge qty parses: the gateway answers `qty must be 1..N` for the sale
    assert _handle(text) == op


@pytest.mark.parametrize(
    "data",
    [
        b"\x82\xa2op\xa4like\xa5count\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint64 max
        b"\x82\xa2op\xa4like\xa5count\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # int64 min
    ],
    ids=["uint64-max", "int64-min"],
)
def test_msgpack_int_extremes_in_count(data: bytes) -> None:
    with pytest.raises(BadRequest, match="1..100"):
        parse_op(decode_message(data))


# -- what the codec's depth check agrees with --------------------------------------------------

_leaf = st.none() | st.integers() | st.text(max_size=3)


@cache
def _trees(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return _leaf
    inner = _trees(depth - 1)
    return (
        _leaf
        | st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=2), inner, max_size=4)
    )


@_fuzz
@given(_trees(11))
def test_depth_limit_agrees_with_an_independent_count(value: Any) -> None:
    depth = _exact_depth(value)
    text = json.dumps(value)
    if depth <= DEPTH:
        assert decode_message(text) == value
    else:
        with pytest.raises(BadRequest, match=f"nested deeper than {DEPTH}"):
            decode_message(text)
