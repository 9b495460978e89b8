"""engine/tokens.py: HS256 tokens; every fault is the same 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from engine.errors import Unauthorized
from engine.ids import RoomId, UserId
from engine.tokens import Identity, Role, issue, quick_claims, verify

SECRET = "unit-test-secret-0123456789abcdef-0123456789abcdef-0123456789abcdef"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "name": "Alice",
        "role": "viewer",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


def _rejected(token: str | None, secret: str = SECRET) -> Unauthorized:
    with pytest.raises(Unauthorized) as exc:
        verify(secret, token)
    assert exc.value.status == 401 and exc.value.code == "unauthorized"
    return exc.value


# -- round trip --------------------------------------------------------------------------------


def test_issue_verify_round_trip() -> None:
    tok = issue(SECRET, "alice", "host", ttl_s=600, name="Alice A.", rooms=["r1", "r-2"])
    ident = verify(SECRET, tok)
    assert ident.user == "alice"
    assert ident.name == "Alice A."
    assert ident.role is Role.HOST
    assert ident.rooms == frozenset({"r1", "r-2"})
    assert time.time() + 590 < ident.exp <= time.time() + 600
    assert ident.public() == {"id": "alice", "name": "Alice A.", "role": "host"}


def test_issue_defaults() -> None:
    ident = verify(SECRET, issue(SECRET, "bob"))
    assert ident.role is Role.VIEWER and ident.name == "bob" and ident.rooms == frozenset()
    claims = jwt.decode(
        issue(SECRET, "bob", now=1000.0, ttl_s=60),
        options={"verify_signature": False, "verify_exp": False},
    )
    assert claims == {"sub": "bob", "name": "bob", "role": "viewer", "iat": 1000, "exp": 1060}


def test_issue_signs_hs256() -> None:
    tok = issue(SECRET, "alice")
    header, payload, sig = tok.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    expected = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert sig == _b64(expected)


@pytest.mark.parametrize("user", ["", "a b", "x" * 65, "bob!", "é"])
def test_issue_refuses_bad_user_ids(user: str) -> None:
    with pytest.raises(ValueError):
        issue(SECRET, user)


def test_issue_refuses_unknown_roles() -> None:
    with pytest.raises(ValueError):
        issue(SECRET, "alice", "superuser")


# -- expiry ------------------------------------------------------------------------------------


def test_expired_beyond_leeway_is_rejected() -> None:
    now = int(time.time())
    _rejected(_signed(_claims(iat=now - 100, exp=now - 10)))


def test_expired_within_leeway_is_accepted() -> None:
    now = int(time.time())
    ident = verify(SECRET, _signed(_claims(iat=now - 100, exp=now - 2)))
    assert ident.user == "alice" and ident.exp == now - 2


def test_issued_with_ttl_in_the_past_is_rejected() -> None:
    _rejected(issue(SECRET, "alice", now=time.time() - 3600, ttl_s=60))


def test_missing_exp_is_rejected() -> None:
    _rejected(_signed(_claims(exp=None)))


def test_non_numeric_exp_is_rejected() -> None:
    _rejected(_signed(_claims(exp="tomorrow")))


# -- signature and algorithm -------------------------------------------------------------------


def test_bad_signature_is_rejected() -> None:
    _rejected(_signed(_claims(), secret="another-secret-0123456789abcdef-0123456789"))
    # and a tampered payload under a valid signature
    header, _payload, sig = issue(SECRET, "alice").split(".")
    forged = _segment(_claims(role="admin"))
    _rejected(f"{header}.{forged}.{sig}")


def test_alg_none_is_rejected() -> None:
    token = _segment({"alg": "none", "typ": "JWT"}) + "." + _segment(_claims(role="admin")) + "."
    _rejected(token)


def test_hs512_with_the_same_secret_is_rejected() -> None:
    token = _signed(_claims(), alg="HS512")
    # the token is genuine HS512 under our secret: only the algorithm list refuses it
    assert jwt.decode(token, SECRET, algorithms=["HS512"])["sub"] == "alice"
    _rejected(token)


@pytest.mark.parametrize("token", [None, "", "not-a-jwt", "a.b.c", "a.b", "...."])
def test_garbage_and_missing_tokens_are_rejected(token: str | None) -> None:
    _rejected(token)


# -- claims ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["bad user", "a/b", "x" * 65, "é", "", 42, None])
def test_bad_sub_is_rejected(sub: Any) -> None:
    claims = _claims()
    if sub is None:
        del claims["sub"]
    else:
        claims["sub"] = sub
    _rejected(_signed(claims))


def test_sub_with_trailing_newline_is_rejected() -> None:
    # `$` in a regex matches before a final newline; the charset check must not.
    _rejected(_signed(_claims(sub="alice\n")))


@pytest.mark.parametrize("role", ["superuser", "", None, 1])
def test_bad_role_is_rejected(role: Any) -> None:
    claims = _claims()
    if role is None:
        del claims["role"]
    else:
        claims["role"] = role
    _rejected(_signed(claims))


@pytest.mark.parametrize("rooms", ["r1", ["ok", "not ok"], [1], {"r1": True}])
def test_bad_rooms_claim_is_rejected(rooms: Any) -> None:
    _rejected(_signed(_claims(role="host", rooms=rooms)))


@pytest.mark.parametrize("name", [None, "", 5, "n" * 65])
def test_unusable_name_falls_back_to_sub(name: Any) -> None:
    claims = _claims()
    if name is None:
        del claims["name"]
    else:
        claims["name"] = name
    assert verify(SECRET, _signed(claims)).name == "alice"


def test_leeway_parameter_is_honoured() -> None:
    now = int(time.time())
    tok = _signed(_claims(exp=now - 3))
    assert verify(SECRET, tok, leeway_s=5).user == "alice"
    with pytest.raises(Unauthorized):
        verify(SECRET, tok, leeway_s=0)


# -- the quick check against PyJWT ------------------------------------------------------------

# Times at least 60 s from any edge, so that PyJWT's own clock reading cannot fall on the other
# side of one from ours.
_TIME = st.sampled_from([-7200, -600, 600, 7200]).map(lambda d: int(time.time()) + d)
_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=8)
)
_CLAIM_VALUE = {
    "sub": st.one_of(st.sampled_from(["alice", "bob.b", "x" * 64]), _VALUE),
    "name": st.one_of(st.just("Alice"), _VALUE),
    "role": st.one_of(st.sampled_from(["viewer", "host", "admin"]), _VALUE),
    "iat": st.one_of(_TIME, _TIME.map(float), _VALUE),
    "exp": st.one_of(_TIME, _TIME.map(float), st.just("tomorrow"), _VALUE),
    "rooms": st.one_of(st.just(["r1"]), st.lists(st.text(max_size=4), max_size=2)),
    "aud": st.just("someone"),
    "nbf": _TIME,
    "jti": _VALUE,
}
_CLAIMS = st.fixed_dictionaries({}, optional=_CLAIM_VALUE)
_HEADER = st.sampled_from(
    [
        {"alg": "HS256", "typ": "JWT"},
        {"typ": "JWT", "alg": "HS256"},
        {"alg": "HS256"},
        {"alg": "HS512", "typ": "JWT"},
        {"alg": "none"},
        {"alg": "HS256", "kid": 7},
        {"alg": "HS256", "b64": False, "crit": ["b64"]},
    ]
)


def _mutate(token: str, how: int, at: int) -> str:
    """One of the ways a token arrives damaged (0: untouched)."""
    i = at % len(token)
    if how == 1:  # one character changed
        return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    if how == 2:  # padded
        return token + "="
    if how == 3:  # cut short
        return token[:i]
    if how == 4:  # a character outside the alphabet
        return token[:i] + "!" + token[i + 1 :]
    if how == 5:  # the last character's unused bits set (not canonical base64)
        return token[:-1] + ("B" if token[-1] == "A" else "A")
    return token


@settings(max_examples=400, deadline=None)
@given(
    header=_HEADER,
    claims=_CLAIMS,
    secret=st.sampled_from([SECRET, "another-secret-0123456789abcdef-0123456789"]),
    how=st.integers(0, 5),
    at=st.integers(0, 10_000),
)
def test_quick_check_never_differs_from_pyjwt(
    header: dict[str, Any], claims: dict[str, Any], secret: str, how: int, at: int
) -> None:
    head = _segment(header)
    body = _b64(json.dumps(claims).encode())
    mac = _b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    token = _mutate(f"{head}.{body}.{mac}", how, at)
    quick = quick_claims(SECRET, token, 5, time.time())
    event(f"judged quickly: {quick is not None}")
    if quick is None:
        return  # PyJWT judges it (the rest of this file: every refusal is a 401)
    options = {"require": ["exp", "sub", "role"]}
    assert jwt.decode(token, SECRET, algorithms=["HS256"], leeway=5, options=options) == quick


def test_quick_check_takes_the_tokens_we_issue() -> None:
    """The cheap path is the one a join takes (else the speed quietly goes back to PyJWT's)."""
    for role, rooms in (("viewer", None), ("host", ["r1", "r2"]), ("admin", None)):
        token = issue(SECRET, "alice", role, rooms=rooms, name="Alice")
        claims = quick_claims(SECRET, token, 5, time.time())
        assert claims is not None and claims["role"] == role
        assert claims == jwt.decode(token, SECRET, algorithms=["HS256"])
    # and a common header written by another library, key order and spacing its own
    head = _b64(b'{"typ": "JWT", "alg": "HS256"}')
    body = _segment(_claims())
    mac = _b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert quick_claims(SECRET, f"{head}.{body}.{mac}", 5, time.time()) == _claims()


def test_a_secret_pyjwt_refuses_is_never_judged_quickly() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----\n"
    head, body = _segment({"alg": "HS256", "typ": "JWT"}), _segment(_claims())
    mac = _b64(hmac.new(pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    token = f"{head}.{body}.{mac}"
    assert quick_claims(pem, token, 5, time.time()) is None
    _rejected(token, secret=pem)


def test_a_short_secret_is_left_to_pyjwt() -> None:
    """PyJWT warns on every call that a key under 32 bytes is short for HS256; such a secret
    is not used quickly, so the warning is not hidden."""
    short = "sixteen-chars-ok"
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        token = issue(short, "alice")
    assert quick_claims(short, token, 5, time.time()) is None
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        assert verify(short, token).user == "alice"


def test_quick_check_refuses_what_is_expired_or_not_yet_issued() -> None:
    now = time.time()
    assert quick_claims(SECRET, _signed(_claims(exp=int(now) - 6)), 5, now) is None
    assert quick_claims(SECRET, _signed(_claims(iat=int(now) + 60)), 5, now) is None
    _rejected(_signed(_claims(iat=int(now) + 60)))  # and PyJWT refuses it too


# -- Identity.controls -------------------------------------------------------------------------


def _ident(
    role: Role, rooms: frozenset[str] | set[str] = frozenset(), user: str = "u1"
) -> Identity:
    return Identity(
        user=UserId(user), name=user, role=role, exp=0.0, rooms=frozenset(RoomId(r) for r in rooms)
    )


def test_admin_controls_every_room() -> None:
    admin = _ident(Role.ADMIN)
    assert admin.controls(RoomId("any")) and admin.controls(RoomId("other"), owner="someone")


def test_host_controls_only_listed_rooms() -> None:
    host = _ident(Role.HOST, {"r1", "r2"})
    assert host.controls(RoomId("r1")) and host.controls(RoomId("r2"))
    assert not host.controls(RoomId("r3"))
    assert not host.controls(RoomId("r3"), owner="someone-else")


def test_owner_counts_as_host_of_their_room() -> None:
    host = _ident(Role.HOST, set(), user="olga")
    assert host.controls(RoomId("mine"), owner="olga")
    assert not host.controls(RoomId("mine"), owner="other")
    assert not host.controls(RoomId("mine"))


def test_viewer_controls_nothing() -> None:
    viewer = _ident(Role.VIEWER, {"r1"}, user="vic")
    assert not viewer.controls(RoomId("r1"))
    assert not viewer.controls(RoomId("r2"), owner="other")
    # Only hosts and admins create rooms; a viewer token of the owner does not act as host
    # (the code's deliberate rule: ownership does not outrank a token's role).
    assert not viewer.controls(RoomId("r2"), owner="vic")
