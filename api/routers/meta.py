"""What is not a resource: where pages find the gateway and media, health, metrics, and the
player and host console pages (``web/static``)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import Api
from api.errors import reply
from api.schemas import ConfigOut
from engine.codec import SUBPROTOCOLS
from engine.errors import NotFound, Unavailable

router = APIRouter(tags=["meta"])


@router.get("/api/config", response_model=ConfigOut)
async def config(request: Request, api: Api) -> dict[str, Any]:
    """Where a page finds the gateway and media endpoints."""
    settings = api.settings
    host = request.url.hostname or settings.host
    ws_url = settings.public_ws_url or f"ws://{host}:{settings.ws_port}"
    base = str(request.base_url).rstrip("/")
    return {
        "ws_url": ws_url,
        "ws_path": "/ws/rooms/{room}",
        "subprotocols": [sp.value for sp in SUBPROTOCOLS],
        "whep_url": base + "/whep/rooms/{room}",
        "whip_url": base + "/whip/rooms/{room}",
        "tick_ms": settings.tick_ms,
        "max_message_bytes": settings.max_message_bytes,
    }


@router.get("/healthz")
async def healthz(api: Api) -> JSONResponse:
    """200 when this process reaches Redis, else 503."""
    try:
        await api.services.redis.ping()
    except Exception as exc:
        return reply(Unavailable(f"redis unreachable: {exc.__class__.__name__}"))
    return JSONResponse({"status": "ok"})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/rooms/{room}", response_class=HTMLResponse, include_in_schema=False)
async def player(room: str) -> HTMLResponse:
    return HTMLResponse(_page("player.html"))


@router.get("/host/{room}", response_class=HTMLResponse, include_in_schema=False)
async def host_console(room: str) -> HTMLResponse:
    return HTMLResponse(_page("host.html"))


@router.get("/verify/{room}/{lottery}", response_class=HTMLResponse, include_in_schema=False)
async def verify_page(room: str, lottery: str) -> HTMLResponse:
    """Checks a drawn lottery's proof in the browser (PROTOCOL.md §5)."""
    return HTMLResponse(_page("verify.html"))


_ASSETS = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    """The pages' modules (``liveroom.js``, the browser client) and styles; nothing else."""
    media_type = _ASSETS.get(name[name.rfind(".") :]) if "." in name else None
    path = resources.files("web").joinpath("static", name)
    if media_type is None or "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no asset {name!r}")
    return Response(path.read_bytes(), media_type=media_type, headers={"Cache-Control": "no-cache"})


def _page(name: str) -> str:
    return resources.files("web").joinpath("static", name).read_text("utf-8")
