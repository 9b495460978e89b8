"""WHEP and WHIP over HTTP (PROTOCOL.md §6), mounted on the HTTP app of the media role.

The routes only read the request (token, content type, a bounded body) and turn refusals into
the JSON error body; ``MediaService`` decides. Every answer carries CORS headers, errors too,
so that a page on another origin can read why it was refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from engine.errors import Forbidden, LiveroomError, NotFound
from engine.ids import RoomId, is_valid_id
from engine.tokens import Identity, Role, verify_request
from media.errors import MethodNotAllowed, MethodNotSupported, TooLarge, UnsupportedMediaType
from media.sessions import SessionKind

if TYPE_CHECKING:
    from media.service import MediaService

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


def mount_routes(app: FastAPI, svc: MediaService) -> None:
    limit = svc.media.max_sdp_bytes

    async def post(kind: str, room: str, request: Request) -> Response:
        try:
            who = identity(request)
            body = await sdp_body(request, limit)
            opener = svc.open_whep if kind == "whep" else svc.open_whip
            sid, answer = await opener(room, who, body)
        except LiveroomError as exc:
            return _error(exc)
        return Response(
            answer,
            status_code=201,
            media_type=SDP,
            headers={**CORS, "Location": f"/{kind}/sessions/{sid}"},
        )

    async def delete(kind: str, sid: str) -> Response:
        # The session URL is the capability: its id is unguessable, as WHEP/WHIP intend.
        s = svc.book.get(sid, SessionKind(kind))
        if s is None or not await svc.close_session(sid, "ended by the client"):
            return _error(NotFound("no such media session (it may have ended already)"))
        return JSONResponse({"session": sid, "ended": True}, headers=CORS)

    def preflight() -> Response:
        return Response(status_code=204, headers=PREFLIGHT)

    def unsupported() -> Response:
        return _error(
            MethodNotSupported("trickle ICE and ICE restarts (PATCH) are not supported"),
            {"Allow": "DELETE, OPTIONS"},
        )

    @app.post(
        "/whep/rooms/{room}",
        status_code=201,
        tags=["media"],
        response_class=Response,
        responses={201: {"content": {SDP: {}}, "description": "the SDP answer"}},
        openapi_extra={"requestBody": {"content": {SDP: {}}, "required": True}},
    )
    async def whep_offer(room: str, request: Request) -> Response:
        """WHEP: an SDP offer (recvonly video) in, the answer out; `Location` names the session.
        401/403/404 as for WebSocket connections, 409 `not_publishing`, 429/503 limits."""
        return await post("whep", room, request)

    @app.post(
        "/whip/rooms/{room}",
        status_code=201,
        tags=["media"],
        response_class=Response,
        responses={201: {"content": {SDP: {}}, "description": "the SDP answer"}},
        openapi_extra={"requestBody": {"content": {SDP: {}}, "required": True}},
    )
    async def whip_offer(room: str, request: Request) -> Response:
        """WHIP: a host's SDP offer (sendonly video); replaces the room's previous ingest."""
        return await post("whip", room, request)

    @app.delete("/whep/sessions/{sid}", tags=["media"])
    async def whep_end(sid: str) -> Response:
        """End a WHEP session."""
        return await delete("whep", sid)

    @app.delete("/whip/sessions/{sid}", tags=["media"])
    async def whip_end(sid: str) -> Response:
        """End a WHIP ingest; the room falls back to its built-in source, if any."""
        return await delete("whip", sid)

    def not_allowed(allow: str) -> Callable[[], Response]:
        def answer() -> Response:
            return _error(MethodNotAllowed(f"this endpoint takes {allow}"), {"Allow": allow})

        return answer

    for path in ("/whep/rooms/{room}", "/whip/rooms/{room}"):
        app.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False)
        app.add_api_route(
            path, not_allowed("POST, OPTIONS"), methods=["GET", "PUT"], include_in_schema=False
        )
    for path in ("/whep/sessions/{sid}", "/whip/sessions/{sid}"):
        app.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False)
        app.add_api_route(path, unsupported, methods=["PATCH"], include_in_schema=False)
        app.add_api_route(
            path, not_allowed("DELETE, OPTIONS"), methods=["GET", "PUT"], include_in_schema=False
        )

    @app.get("/media/stats", tags=["media"])
    async def media_stats(request: Request) -> Response:
        """This media process: sessions, encoders and rooms (admins)."""
        try:
            if identity(request).role is not Role.ADMIN:
                raise Forbidden("only admins may read media process stats")
        except LiveroomError as exc:
            return _error(exc)
        return JSONResponse(svc.stats())

    @app.get("/media/rooms/{room}", tags=["media"])
    async def media_room(room: str, request: Request) -> Response:
        """One room's media in this process: source, viewers, encoders (hosts, admins)."""
        try:
            who = identity(request)
            record = await svc.load_room(room)
            if not who.controls(record.id, record.owner):
                raise Forbidden("only this room's hosts and admins may read its media stats")
        except LiveroomError as exc:
            return _error(exc)
        return JSONResponse(svc.room_stats(RoomId(room) if is_valid_id(room) else record.id))
