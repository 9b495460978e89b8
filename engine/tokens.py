"""Tokens (PROTOCOL.md §1): HS256 JWTs, verified with an explicit algorithm list."""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import jwt
from jwt.algorithms import HMACAlgorithm

from engine.errors import Unauthorized
from engine.ids import RoomId, UserId, is_valid_id

ALGORITHMS = ["HS256"]  # never taken from the token header


class Role(StrEnum):
    VIEWER = "viewer"
    HOST = "host"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token says the caller is."""

    user: UserId
    name: str
    role: Role
    exp: float
    rooms: frozenset[RoomId] = frozenset()

    def controls(self, room: RoomId, owner: str | None = None) -> bool:
        """Whether this identity may act as a host of ``room``."""
        if self.role is Role.ADMIN:
            return True
        if self.role is Role.HOST and room in self.rooms:
            return True
        return owner is not None and owner == self.user and self.role is not Role.VIEWER

    def public(self) -> dict[str, str]:
        return {"id": self.user, "name": self.name, "role": self.role.value}


def issue(
    secret: str,
    user: str,
    role: str = "viewer",
    *,
    ttl_s: int = 3600,
    name: str | None = None,
    rooms: list[str] | None = None,
    now: float | None = None,
) -> str:
    now = time.time() if now is None else now
    if not is_valid_id(user):
        raise ValueError("user must be 1-64 characters of [A-Za-z0-9_.-]")
    claims: dict[str, object] = {
        "sub": user,
        "name": name or user,
        "role": Role(role).value,
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    if rooms:
        claims["rooms"] = list(rooms)
    return jwt.encode(claims, secret, algorithm="HS256")


# The quick check (``quick_claims``) takes only the tokens it can judge in full: one of these
# headers, exactly as PyJWT and the usual libraries write them ...
_HEADERS = frozenset(
    base64.urlsafe_b64encode(h.encode()).rstrip(b"=").decode()
    for h in (
        '{"alg":"HS256","typ":"JWT"}',
        '{"typ":"JWT","alg":"HS256"}',
        '{"alg":"HS256"}',
        '{"alg": "HS256", "typ": "JWT"}',
        '{"typ": "JWT", "alg": "HS256"}',
    )
)
# ... unpadded base64url segments, and no claims but these (``aud``, ``nbf``, ``iss``, ``jti``
# and any other go to PyJWT, which knows their rules).
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_CLAIMS = frozenset({"sub", "name", "role", "iat", "exp", "rooms"})


@lru_cache(maxsize=4)
def _hmac_key(secret: str) -> bytes | None:
    """The secret as PyJWT's HS256 would use it, or None where PyJWT refuses it (empty, or
    shaped like an asymmetric key) or warns on every call that it is short (under 32 bytes):
    then every token goes to PyJWT, which says why."""
    hs256 = HMACAlgorithm(HMACAlgorithm.SHA256)
    try:
        key = hs256.prepare_key(secret)
    except jwt.PyJWTError:
        return None
    return None if hs256.check_key_length(key) else key


def _segment(seg: str) -> bytes | None:
    """A canonical unpadded base64url segment decoded, else None."""
    if len(seg) % 4 == 1 or _SEGMENT.fullmatch(seg) is None:
        return None
    raw = base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
    # (unused low bits set: PyJWT refuses it as not canonical, and so does this)
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == seg else None


def quick_claims(secret: str, token: str, leeway_s: int, now: float) -> dict[str, object] | None:
    """The claims of a common, valid token, checked the way ``jwt.decode`` checks it, without
    PyJWT's per-call key and per-character checks (about 8x cheaper: a join pays it once).
    None means "not judged here", never "valid" or "invalid": the caller asks PyJWT, so what
    is accepted and refused is PyJWT's answer exactly (tests compare the two on random
    tokens). Only one of the usual HS256 headers, our own claims, and integer times pass."""
    key = _hmac_key(secret)
    head, _, rest = token.partition(".")
    body, _, sig = rest.partition(".")
    if key is None or head not in _HEADERS or not sig or "." in sig:
        return None
    mac = _segment(sig)
    if mac is None:
        return None
    signing_input = token[: len(head) + 1 + len(body)].encode()
    if not hmac.compare_digest(hmac.digest(key, signing_input, "sha256"), mac):
        return None  # (before the body is decoded: a forged token costs no more here)
    payload = _segment(body)
    if payload is None:
        return None
    try:
        claims = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if type(claims) is not dict or not claims.keys() <= _CLAIMS:
        return None
    exp, iat = claims.get("exp"), claims.get("iat", 0)
    if type(exp) is not int or exp <= now - leeway_s:
        return None
    if type(iat) is not int or iat > now + leeway_s:
        return None
    if type(claims.get("sub")) is not str or claims.get("role") is None:
        return None
    return claims


def verify(secret: str, token: str | None, *, leeway_s: int = 5) -> Identity:
    """Return the identity of a valid token or raise ``Unauthorized`` (one error for all faults)."""
    if not token:
        raise Unauthorized("a token is required")
    claims = quick_claims(secret, token, leeway_s, time.time())  # (PyJWT reads the clock too)
    if claims is None:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=ALGORITHMS,
                leeway=leeway_s,
                options={"require": ["exp", "sub", "role"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
    sub, role, rooms = claims.get("sub"), claims.get("role"), claims.get("rooms", [])
    if not is_valid_id(sub):
        raise Unauthorized("invalid token: bad sub")
    try:
        role_ = Role(role)
    except ValueError:
        raise Unauthorized("invalid token: bad role") from None
    if not isinstance(rooms, list) or not all(is_valid_id(r) for r in rooms):
        raise Unauthorized("invalid token: bad rooms")
    name = claims.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        name = sub
    return Identity(
        user=UserId(sub),
        name=name,
        role=role_,
        exp=float(claims["exp"]),
        rooms=frozenset(RoomId(r) for r in rooms),
    )


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token a request presents: ``Authorization: Bearer <token>`` (other clients), else
    ``?token=`` (browsers, which cannot set headers on a WebSocket). The one place that reads
    it, for the gateway, the HTTP API and media alike."""
    if authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
        if token:
            return token
    return query_token or None


def verify_request(
    secret: str, authorization: str | None, query_token: str | None, *, leeway_s: int
) -> Identity:
    """The verified identity a request presents (see ``bearer_token``); ``Unauthorized``
    when it presents none or a bad one."""
    token = bearer_token(authorization, query_token)
    if not token:
        raise Unauthorized("Authorization: Bearer <token> (or ?token=) is required")
    return verify(secret, token, leeway_s=leeway_s)
