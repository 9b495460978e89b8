"""Session limits (pure): per user and room, per process, and release on removal."""

from __future__ import annotations

import pytest

from engine.errors import RateLimited, Unavailable
from engine.ids import RoomId
from engine.tokens import Identity, Role
from media.sessions import MediaSession, SessionBook, SessionKind, new_session_id


def _s(room: str, user: str, kind: SessionKind = SessionKind.WHEP) -> MediaSession:
    who = Identity(user, user, Role.VIEWER, 0.0)  # type: ignore[arg-type]
    return MediaSession(new_session_id(), kind, RoomId(room), who, "free", 0.0)


def test_limits_and_release() -> None:
    book = SessionBook(max_sessions=3, max_per_user=2)
    a1, a2 = _s("r", "a"), _s("r", "a")
    book.add(a1)
    book.add(a2)
    with pytest.raises(RateLimited):
        book.admit(RoomId("r"), "a")
    book.admit(RoomId("other"), "a")  # the per-user limit is per room
    book.add(_s("r", "b"))
    with pytest.raises(Unavailable):
        book.admit(RoomId("r"), "c")
    book.add(_s("r", "h", SessionKind.WHIP))  # ingest sessions do not count as viewers
    assert (book.whep, book.whip) == (3, 1)
    assert book.remove(a1.id) is a1 and book.remove(a1.id) is None
    book.admit(RoomId("r"), "a")
    assert book.viewers_by_room() == {"r": 2}
    assert book.refused == {"user": 1, "process": 1}


def test_session_ids_are_unguessable() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) >= 24 for i in ids)
