"""Tokens (PROTOCOL.md §1): HS256 JWTs, verified with an explicit algorithm list."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import jwt

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


def verify(secret: str, token: str | None, *, leeway_s: int = 5) -> Identity:
    """Return the identity of a valid token or raise ``Unauthorized`` (one error for all faults)."""
    if not token:
        raise Unauthorized("a token is required")
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
