"""Refusals of the WHEP/WHIP endpoints, in the project's one exception tree.

Each carries its protocol ``code`` and HTTP status; the routes turn them into the JSON error
body of PROTOCOL.md §3 in one place (with CORS headers, so that browsers can read them).
"""

from __future__ import annotations

from engine.errors import (
    BadRequest,
    Conflict,
    InvalidBody,
    LiveroomError,
    MethodNotAllowed,
    TooLarge,
)

# The HTTP API answers these too (its body limit, its 405s): one class each, in engine/errors.py.
__all__ = [
    "BadSdp",
    "MethodNotAllowed",
    "MethodNotSupported",
    "NoVideo",
    "NotPublishing",
    "TooLarge",
    "UnsupportedCodec",
    "UnsupportedMediaType",
]


class NotPublishing(Conflict):
    """Nothing is published in this room: it has no built-in source and no WHIP ingest."""

    code = "not_publishing"


class BadSdp(BadRequest):
    """The body is not an SDP offer this server can read."""

    code = "bad_sdp"


class NoVideo(InvalidBody):
    """The offer has no video this endpoint can serve (WHEP: recvonly; WHIP: sendonly)."""

    code = "no_video"


class UnsupportedCodec(InvalidBody):
    """The offer has no video codec in common with this room's stream."""

    code = "unsupported_codec"


class UnsupportedMediaType(LiveroomError):
    """The body must be ``application/sdp``."""

    code = "unsupported_media_type"
    status = 415


class MethodNotSupported(MethodNotAllowed):
    """This WHEP/WHIP method is not supported (trickle ICE and ICE restarts)."""

    code = "not_supported"
    status = 405
