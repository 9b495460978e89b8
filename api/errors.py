"""The one place where the HTTP API turns exceptions into replies (PROTOCOL.md §3).

Every error leaves as ``{"error": code, "message": text}`` with the status of an
``engine.errors`` class: handlers raise, these answer. No code is spelt here; each comes from
its class, so the API, the gateway and media name a refusal alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from api.schemas import ErrorOut
from engine.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Internal,
    InvalidBody,
    LiveroomError,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    Refused,
    TooLarge,
    Unauthorized,
    Unavailable,
)

# What every operation may answer besides its own success (the document declares them all).
_DECLARED = (
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    InvalidBody,
    TooLarge,  # a body past LIVEROOM_MAX_BODY_BYTES (api/limits.py)
    RateLimited,
    Unavailable,
)
RESPONSES: dict[int | str, dict[str, Any]] = {cls.status: {"model": ErrorOut} for cls in _DECLARED}
RESPONSES[MethodNotAllowed.status]["headers"] = {
    "Allow": {"description": "the methods the path answers", "schema": {"type": "string"}}
}

# Starlette's own refusals (no route, wrong method, unreadable body) by status.
_BY_STATUS: dict[int, type[LiveroomError]] = {
    cls.status: cls for cls in _DECLARED if cls is not Unavailable
}


def reply(
    exc: LiveroomError, headers: dict[str, str] | None = None, *, status: int | None = None
) -> JSONResponse:
    """The §3 error body for ``exc``, with its status (or ``status``)."""
    return JSONResponse(
        {"error": exc.code, "message": exc.message},
        status_code=exc.status if status is None else status,
        headers=headers,
    )


async def _liveroom_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LiveroomError)
    return reply(exc)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    # a bug: still the error body of §3 (the traceback goes to the log)
    return reply(Internal(f"internal error ({exc.__class__.__name__})"))


async def _redis_error(_: Request, exc: Exception) -> JSONResponse:
    # e.g. the first call on a pooled connection after a Redis restart: retry shortly
    return reply(Unavailable(f"state is unreachable for a moment ({exc})"))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return reply(InvalidBody(f"{where}: {first.get('msg', 'invalid body')}".strip(": ")))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    refusal = _BY_STATUS.get(exc.status_code, Refused)
    headers = exc.headers
    if exc.status_code == MethodNotAllowed.status:
        # Starlette's `Allow` names the methods of one route of the path: name them all
        headers = {"Allow": ", ".join(_allowed(request))}
    return reply(refusal(str(exc.detail)), headers, status=exc.status_code)


def _allowed(request: Request) -> list[str]:
    """Every method some route answers on the request's path."""
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, with those of included routers: FastAPI >= 0.130 keeps an included router
    as one entry (its `original_router`) instead of copying its routes in. Our routers are
    included without a prefix, so their routes match the request's path as they are."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route


def install(app: FastAPI) -> None:
    """Answer every exception of ``app`` with the §3 error body."""
    app.add_exception_handler(LiveroomError, _liveroom_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
