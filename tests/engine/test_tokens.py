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

from engine.errors import Unauthorized
from engine.ids import RoomId, UserId
from engine.tokens import Identity, Role, issue, verify

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
