"""The media sessions of one process and their limits (no I/O).

A session is one WHEP viewer or one WHIP host. The book admits new viewers against the
per-process and per-user limits synchronously, before anything is awaited, so that concurrent
requests cannot overshoot a limit; a refused request never reaches a peer connection.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.errors import RateLimited, Unavailable
from engine.ids import RoomId
from engine.tokens import Identity


class SessionKind(StrEnum):
    WHEP = "whep"
    WHIP = "whip"


def new_session_id() -> str:
    """Unguessable: the session URL is the capability to end the session."""
    return secrets.token_urlsafe(18)


@dataclass(eq=False, slots=True)
class MediaSession:
    id: str
    kind: SessionKind
    room: RoomId
    identity: Identity
    access: str
    """The entitlement it was admitted with (``free``, ``ticket``, ``member``, ``host``,
    ``preview``); revocations re-check it."""
    created_at: float
    codec: str | None = None
    pc: Any = None
    track: Any = None
    feed: Any = None
    audio_track: Any = None
    """The viewer's sound (WHEP sessions whose offer has audio)."""
    end_timer: Any = None
    """Ends the session at ``ends_at``."""
    connect_timer: Any = None
    """Ends the session if it has not connected in time."""
    ends_at: float | None = None
    """When the preview (or the token) runs out, if it does."""
    end_reason: str | None = None

    @property
    def user(self) -> str:
        return self.identity.user

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "room": self.room,
            "user": self.user,
            "access": self.access,
            "codec": self.codec,
            "ends_at": self.ends_at,
            "state": getattr(self.pc, "connectionState", None),
        }


class SessionBook:
    def __init__(self, max_sessions: int, max_per_user: int) -> None:
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user
        self._sessions: dict[str, MediaSession] = {}
        self._per_user: Counter[tuple[RoomId, str]] = Counter()
        self.whep = 0
        self.refused: Counter[str] = Counter()

    def admit(self, room: RoomId, user: str) -> None:
        """Raise ``Unavailable`` (503) or ``RateLimited`` (429) if one more viewer is too many."""
        if self.whep >= self.max_sessions:
            self.refused["process"] += 1
            raise Unavailable("this media process is at capacity; try again later")
        if self._per_user[(room, user)] >= self.max_per_user:
            self.refused["user"] += 1
            raise RateLimited(
                f"at most {self.max_per_user} media sessions per user in a room; end one first"
            )

    def add(self, s: MediaSession) -> None:
        self._sessions[s.id] = s
        if s.kind is SessionKind.WHEP:
            self.whep += 1
            self._per_user[(s.room, s.user)] += 1

    def remove(self, sid: str) -> MediaSession | None:
        s = self._sessions.pop(sid, None)
        if s is not None and s.kind is SessionKind.WHEP:
            self.whep -= 1
            key = (s.room, s.user)
            self._per_user[key] -= 1
            if self._per_user[key] <= 0:
                del self._per_user[key]
        return s

    def get(self, sid: str, kind: SessionKind | None = None) -> MediaSession | None:
        s = self._sessions.get(sid)
        if s is None or (kind is not None and s.kind is not kind):
            return None
        return s

    def of_user(self, user: str) -> list[MediaSession]:
        return [s for s in self._sessions.values() if s.user == user]

    def in_room(self, room: RoomId, kind: SessionKind | None = None) -> list[MediaSession]:
        return [
            s
            for s in self._sessions.values()
            if s.room == room and (kind is None or s.kind is kind)
        ]

    def viewers_by_room(self) -> Counter[RoomId]:
        return Counter(s.room for s in self._sessions.values() if s.kind is SessionKind.WHEP)

    def all(self) -> list[MediaSession]:
        return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def whip(self) -> int:
        return len(self._sessions) - self.whep
