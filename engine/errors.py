"""The one exception tree.

Every error a client can see carries its protocol ``code`` (PROTOCOL.md §3, §4) and the HTTP
status the API answers with, so each edge maps errors to replies in exactly one place.
"""

from __future__ import annotations


class LiveroomError(Exception):
    """Root of every error raised on purpose by liveroom."""

    code: str = "internal"
    status: int = 500

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


# -- the peer broke the rules ------------------------------------------------------------------


class BadRequest(LiveroomError):
    """The message or body could not be understood."""

    code = "bad_request"
    status = 400


class InvalidBody(LiveroomError):
    """The body was understood but a field is invalid."""

    code = "invalid"
    status = 422


class Unauthorized(LiveroomError):
    """The token is missing, malformed, badly signed or expired."""

    code = "unauthorized"
    status = 401


class Forbidden(LiveroomError):
    """The caller is known but may not do this."""

    code = "forbidden"
    status = 403


class NotEntitled(Forbidden):
    """The caller has no entitlement for this room."""

    code = "not_entitled"


class NotFound(LiveroomError):
    """The thing named does not exist."""

    code = "not_found"
    status = 404


class Conflict(LiveroomError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class MethodNotAllowed(LiveroomError):
    """The path does not take this method (the answer's ``Allow`` names those it takes)."""

    code = "method_not_allowed"
    status = 405


class TooLarge(LiveroomError):
    """The body is larger than allowed."""

    code = "too_large"
    status = 413


class Refused(LiveroomError):
    """Refused with an HTTP status that has no code of its own (the status says why)."""

    code = "error"
    status = 400


class RateLimited(LiveroomError):
    """Too many requests; slow down."""

    code = "rate_limited"
    status = 429


class Unavailable(LiveroomError):
    """The server is draining or over capacity."""

    code = "unavailable"
    status = 503


class Internal(LiveroomError):
    """A bug: the request could not be completed (the traceback goes to the log)."""

    code = "internal"
    status = 500


# -- op-level refusals (WebSocket `error` replies) ----------------------------------------------


class TooLong(BadRequest):
    """The danmaku is longer than allowed."""

    code = "too_long"


class Empty(BadRequest):
    """The danmaku has no visible text."""

    code = "empty"


class Muted(Forbidden):
    """The user is muted in this room."""

    code = "muted"


class Banned(Forbidden):
    """The user is banned from this room."""

    code = "banned"


class Blocked(Forbidden):
    """The danmaku contains a word blocked in this room."""

    code = "blocked"
