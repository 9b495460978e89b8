"""The HTTP API (PROTOCOL.md §3) on FastAPI, plus the web player and host console pages.

``create_app`` only assembles: the body limit, the one error mapping (``api.errors``), the
shared state the routes depend on (``api.deps``) and one router per resource
(``api.routers``). Routes hold no state of their own and never build a client or a ledger.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import FastAPI

from api import errors
from api.deps import ApiState
from api.limits import BodyLimit
from api.routers import access, lotteries, meta, moderation, rooms, sales
from engine.services import Services

ROUTERS = (rooms.router, access.router, sales.router, moderation.router, lotteries.router)
ROUTERS += (meta.router,)


class MediaMount(Protocol):
    """What the media role adds to the HTTP app (WHEP/WHIP routes); see media/."""

    def mount(self, app: FastAPI) -> None: ...


def create_app(services: Services, *, media: MediaMount | None = None) -> FastAPI:
    settings = services.settings
    app = FastAPI(
        title="liveroom",
        version="1",
        description="Live-room interaction engine: rooms, access, sales, lotteries, media.",
        responses=errors.RESPONSES,
    )
    app.state.settings = settings  # media/http.py reads it
    app.state.api = ApiState.build(services)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, skip=("/whep/", "/whip/"))
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    if media is not None:
        media.mount(app)
    return app
