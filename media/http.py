"""WHEP and WHIP over HTTP (PROTOCOL.md §6), mounted on the HTTP app of the media role.

The routes only read the request (token, content type, a bounded body) and turn refusals into
the JSON error body; the media role (``MediaEndpoints``, i.e. ``MediaService``) decides. Every
answer carries CORS headers, errors too, so that a page on another origin can read why it was
refused. This module never imports the service: the service mounts these routes on itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from engine.errors import Forbidden, LiveroomError, NotFound
from engine.ids import RoomId, is_valid_id
from engine.rooms import Room
from engine.settings import MediaSettings
from engine.tokens import Identity, Role, verify_request
from media.errors import MethodNotAllowed, MethodNotSupported, TooLarge, UnsupportedMediaType
from media.sessions import SessionBook, SessionKind

SDP = "application/sdp"

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, Link, Accept-Post",
}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
    "Accept-Post": SDP,
}


class MediaEndpoints(Protocol):
    """What the routes ask of the media role; ``MediaService`` is the one implementation."""

    media: MediaSettings
    book: SessionBook

    async def open_whep(self, room_id: str, identity: Identity, body: bytes) -> tuple[str, str]:
        """Admit a viewer and answer its offer: (session id, SDP answer)."""
        ...

    async def open_whip(self, room_id: str, identity: Identity, body: bytes) -> tuple[str, str]:
        """Admit a host's ingest and answer its offer: (session id, SDP answer)."""
        ...

    async def close_session(self, sid: str, reason: str) -> bool:
        """End a session (idempotent); False if there was none."""
        ...

    async def load_room(self, room: str) -> Room:
        """The room record, or ``NotFound``."""
        ...

    def stats(self) -> dict[str, Any]:
        """This process's sessions, encoders and rooms."""
        ...

    def room_stats(self, room: RoomId) -> dict[str, Any]:
        """One room's media in this process."""
        ...


def _error(exc: LiveroomError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": exc.code, "message": exc.message},
        status_code=exc.status,
        headers={**CORS, **(headers or {})},
    )


def identity(request: Request) -> Identity:
    """``Authorization: Bearer`` or ``?token=`` (browsers), verified; else ``Unauthorized``."""
    settings = request.app.state.settings
    return verify_request(
        settings.secret,
        request.headers.get("authorization"),
        request.query_params.get("token"),
        leeway_s=settings.token_leeway_s,
    )


async def sdp_body(request: Request, limit: int) -> bytes:
    """The SDP offer, refused past ``limit`` bytes without reading the rest into memory."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != SDP:
        raise UnsupportedMediaType(f"the body must be {SDP}, not {ctype or 'missing'}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"an SDP offer is at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"an SDP offer is at most {limit} bytes")
    return bytes(body)


#: The two documented POST routes share their OpenAPI description of an SDP exchange.
_OFFER_ROUTE: dict[str, Any] = {
    "methods": ["POST"],
    "status_code": 201,
    "tags": ["media"],
    "response_class": Response,
    "responses": {201: {"content": {SDP: {}}, "description": "the SDP answer"}},
    "openapi_extra": {"requestBody": {"content": {SDP: {}}, "required": True}},
}
_HIDDEN: dict[str, Any] = {"include_in_schema": False}


class MediaRoutes:
    """The WHEP/WHIP endpoints of one media role; each method is one route."""

    def __init__(self, svc: MediaEndpoints) -> None:
        self.svc = svc
        self.limit = svc.media.max_sdp_bytes

    def mount(self, app: FastAPI) -> None:
        app.add_api_route("/whep/rooms/{room}", self.whep_offer, **_OFFER_ROUTE)
        app.add_api_route("/whip/rooms/{room}", self.whip_offer, **_OFFER_ROUTE)
        app.add_api_route("/whep/sessions/{sid}", self.whep_end, methods=["DELETE"], tags=["media"])
        app.add_api_route("/whip/sessions/{sid}", self.whip_end, methods=["DELETE"], tags=["media"])
        for path in ("/whep/rooms/{room}", "/whip/rooms/{room}"):
            app.add_api_route(path, self.preflight, methods=["OPTIONS"], **_HIDDEN)
            app.add_api_route(
                path, _not_allowed("POST, OPTIONS"), methods=["GET", "PUT"], **_HIDDEN
            )
        for path in ("/whep/sessions/{sid}", "/whip/sessions/{sid}"):
            app.add_api_route(path, self.preflight, methods=["OPTIONS"], **_HIDDEN)
            app.add_api_route(path, self.unsupported, methods=["PATCH"], **_HIDDEN)
            app.add_api_route(
                path, _not_allowed("DELETE, OPTIONS"), methods=["GET", "PUT"], **_HIDDEN
            )
        app.add_api_route("/media/stats", self.media_stats, methods=["GET"], tags=["media"])
        app.add_api_route("/media/rooms/{room}", self.media_room, methods=["GET"], tags=["media"])

    async def _post(self, kind: str, room: str, request: Request) -> Response:
        try:
            who = identity(request)
            body = await sdp_body(request, self.limit)
            opener = self.svc.open_whep if kind == "whep" else self.svc.open_whip
            sid, answer = await opener(room, who, body)
        except LiveroomError as exc:
            return _error(exc)
        return Response(
            answer,
            status_code=201,
            media_type=SDP,
            headers={**CORS, "Location": f"/{kind}/sessions/{sid}"},
        )

    async def _delete(self, kind: str, sid: str) -> Response:
        # The session URL is the capability: its id is unguessable, as WHEP/WHIP intend.
        s = self.svc.book.get(sid, SessionKind(kind))
        if s is None or not await self.svc.close_session(sid, "ended by the client"):
            return _error(NotFound("no such media session (it may have ended already)"))
        return JSONResponse({"session": sid, "ended": True}, headers=CORS)

    async def whep_offer(self, room: str, request: Request) -> Response:
        """WHEP: an SDP offer (recvonly video) in, the answer out; `Location` names the session.
        401/403/404 as for WebSocket connections, 409 `not_publishing`, 429/503 limits."""
        return await self._post("whep", room, request)

    async def whip_offer(self, room: str, request: Request) -> Response:
        """WHIP: a host's SDP offer (sendonly video); replaces the room's previous ingest."""
        return await self._post("whip", room, request)

    async def whep_end(self, sid: str) -> Response:
        """End a WHEP session."""
        return await self._delete("whep", sid)

    async def whip_end(self, sid: str) -> Response:
        """End a WHIP ingest; the room falls back to its built-in source, if any."""
        return await self._delete("whip", sid)

    def preflight(self) -> Response:
        return Response(status_code=204, headers=PREFLIGHT)

    def unsupported(self) -> Response:
        return _error(
            MethodNotSupported("trickle ICE and ICE restarts (PATCH) are not supported"),
            {"Allow": "DELETE, OPTIONS"},
        )

    async def media_stats(self, request: Request) -> Response:
        """This media process: sessions, encoders and rooms (admins)."""
        try:
            if identity(request).role is not Role.ADMIN:
                raise Forbidden("only admins may read media process stats")
        except LiveroomError as exc:
            return _error(exc)
        return JSONResponse(self.svc.stats())

    async def media_room(self, room: str, request: Request) -> Response:
        """One room's media in this process: source, viewers, encoders (hosts, admins)."""
        try:
            who = identity(request)
            record = await self.svc.load_room(room)
            if not who.controls(record.id, record.owner):
                raise Forbidden("only this room's hosts and admins may read its media stats")
        except LiveroomError as exc:
            return _error(exc)
        return JSONResponse(self.svc.room_stats(RoomId(room) if is_valid_id(room) else record.id))


def _not_allowed(allow: str) -> Callable[[], Response]:
    def answer() -> Response:
        return _error(MethodNotAllowed(f"this endpoint takes {allow}"), {"Allow": allow})

    return answer


def mount_routes(app: FastAPI, svc: MediaEndpoints) -> None:
    """Add the WHEP/WHIP routes of ``svc`` to ``app``."""
    MediaRoutes(svc).mount(app)
