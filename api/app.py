"""The HTTP API (PROTOCOL.md §3) on FastAPI, plus the web player and host console pages.

Every error leaves as ``{"error": code, "message": text}`` with the status its
``LiveroomError`` carries; handlers raise, the one mapping below answers.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Annotated, Any, Literal, Protocol

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from engine import keys
from engine.access import Membership
from engine.codec import SUBPROTOCOLS, dumps_json
from engine.counters import RoomCounters
from engine.errors import Conflict, Forbidden, InvalidBody, LiveroomError, NotFound
from engine.ids import RoomId, is_valid_id
from engine.rooms import NewRoom, Room, RoomStatus
from engine.sales import MAX_DURATION_S, MAX_QTY, MAX_STOCK, NewSale
from engine.services import Services
from engine.settings import Settings
from engine.tokens import Identity, Role, verify_request
from engine.words import MAX_WORD_CHARS, MAX_WORDS
from media.counts import media_viewers

# -- schemas (for /openapi.json; the domain validates again in engine.rooms) ----------------
# They declare every limit the domain enforces, so that clients and fuzzers generated from
# /openapi.json agree with the server (PROTOCOL.md §3).

ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# The domain strips text and refuses what is left blank (str.strip() also takes \x1c-\x1f).
VISIBLE = r"[^\s\x1c-\x1f]"
MAX_EPOCH_S = 253_402_300_799  # the end of 9999: Redis refuses to EXPIREAT much later
MAX_PRICE_CENTS = 10**9
Cents = Annotated[int, Field(ge=0, le=MAX_PRICE_CENTS)]
EpochS = Annotated[float, Field(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False)]
UserPath = Annotated[str, Path(pattern=ID_PATTERN)]


class StrictIn(BaseModel):
    """A request body: `false` is not a number, `0` not a boolean, `"5"` not an integer, but
    `1.0` is the integer 1 (as JSON Schema counts integers)."""

    model_config = ConfigDict(strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _integral_floats(cls, v: Any) -> Any:
        if isinstance(v, dict):  # e.g. `tier_prices`
            return {k: _integral(x) for k, x in v.items()}
        return _integral(v)


def _integral(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


class AccessIn(StrictIn):
    mode: Literal["free", "paid"] = "free"
    price_cents: Cents = 0
    tiers: list[Literal["normal", "senior", "vip"]] = []
    preview_seconds: int = Field(0, ge=0, le=10**9)


class MediaPatternIn(BaseModel):
    model_config = ConfigDict(strict=True)  # a discriminator takes no validator
    source: Literal["pattern"]
    path: str | None = None


class MediaFileIn(BaseModel):
    model_config = ConfigDict(strict=True)  # a discriminator takes no validator
    source: Literal["file"]
    path: str = Field(..., description="a file on the server")


class RoomIn(StrictIn):
    id: str | None = Field(None, pattern=ID_PATTERN)
    title: str = Field(..., min_length=1, max_length=200, pattern=VISIBLE)
    access: AccessIn | None = None
    media: Annotated[MediaPatternIn | MediaFileIn, Field(discriminator="source")] | None = None


class RoomOut(BaseModel):
    id: str
    title: str
    status: Literal["scheduled", "live", "ended"]
    access: dict[str, Any]
    owner: str
    created_at: float
    media: dict[str, Any] | None = None
    online: int = 0
    likes: int = 0
    media_viewers: int = 0


class TicketIn(StrictIn):
    expires_at: EpochS | None = Field(None, description="epoch seconds; null = no expiry")


class TicketOut(BaseModel):
    room: str
    user: str
    expires_at: float | None = None
    revoked: bool | None = None


class MembershipIn(StrictIn):
    tier: Literal["normal", "senior", "vip"]
    expires_at: EpochS | None = Field(None, description="epoch seconds; null = no expiry")


class MembershipOut(BaseModel):
    user: str
    tier: str | None = None
    expires_at: float | None = None
    revoked: bool | None = None


class SaleIn(StrictIn):
    item: str = Field(..., min_length=1, max_length=200, pattern=VISIBLE)
    title: str = Field(..., min_length=1, max_length=200, pattern=VISIBLE)
    price_cents: Cents
    tier_prices: dict[Literal["normal", "senior", "vip"], Cents] | None = None
    stock: int = Field(..., ge=1, le=MAX_STOCK)
    per_user_limit: int = Field(1, ge=1, le=MAX_QTY)
    starts_in_s: int = Field(0, ge=0, le=MAX_DURATION_S)
    duration_s: int = Field(..., ge=1, le=MAX_DURATION_S)


class SaleOut(BaseModel):
    id: str
    room: str
    item: str
    title: str
    price_cents: int
    tier_prices: dict[str, int]
    stock: int
    per_user_limit: int
    starts_at: float
    ends_at: float
    status: Literal["scheduled", "open", "ended"]
    ended_by: str | None = None
    sold: int
    left: int
    revenue_cents: int
    buyers: int


class OrderOut(BaseModel):
    id: str
    sale: str
    user: str
    ref: str
    qty: int
    unit_price_cents: int
    total_cents: int
    ts: float


class NoticeIn(StrictIn):
    text: str = Field(..., min_length=1, max_length=500, pattern=VISIBLE)


class NoticeOut(BaseModel):
    id: str
    text: str


class MuteIn(StrictIn):
    user: str = Field(..., pattern=ID_PATTERN)
    seconds: int = Field(..., ge=0, le=30 * 86400, description="0 lifts the mute")


class MuteOut(BaseModel):
    room: str
    user: str
    muted_until: float


class BanIn(StrictIn):
    user: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    seconds: int | None = Field(
        None, ge=1, le=30 * 86400, strict=True, description="absent or null: for good"
    )


class BanOut(BaseModel):
    room: str
    user: str
    banned_until: float | None = Field(None, description="epoch seconds; null: for good")
    lifted: bool | None = Field(None, description="DELETE: whether a ban was in force")


class WordsIn(BaseModel):
    blocked: list[Annotated[str, Field(min_length=1, max_length=MAX_WORD_CHARS)]] = Field(
        ..., max_length=MAX_WORDS
    )


class WordsOut(BaseModel):
    room: str
    blocked: list[str] = Field(..., description="stripped, casefolded, sorted, no duplicates")


class RoomListItem(BaseModel):
    id: str
    title: str
    status: Literal["scheduled", "live", "ended"]
    access: dict[str, Any]
    owner: str
    created_at: float
    media: dict[str, Any] | None = None


class RoomListOut(BaseModel):
    rooms: list[RoomListItem]
    next_offset: int | None = Field(None, description="`offset` of the next page; null: last")


class SaleStats(BaseModel):
    sale: str
    status: str
    sold: int
    revenue_cents: int
    buyers: int


class StatsOut(BaseModel):
    room: str
    online: int
    peak_online: int
    unique_viewers: int
    danmaku: int
    likes: int
    media_viewers: int
    sales: list[SaleStats]


class RuleIn(StrictIn):
    like: bool = False
    keyword: str | None = Field(None, min_length=1, max_length=50, pattern=VISIBLE)
    paid_only: bool = False
    min_tier: Literal["normal", "senior", "vip"] | None = None


class LotteryIn(StrictIn):
    prize: str = Field(..., min_length=1, max_length=200, pattern=VISIBLE)
    winners: int = Field(..., ge=1, le=10_000)
    rule: RuleIn = Field(default_factory=RuleIn)
    duration_s: int = Field(..., ge=1, le=7 * 86400)


class LotteryOut(BaseModel):
    id: str
    room: str
    prize: str
    winners_count: int
    rule: dict[str, Any]
    status: Literal["open", "drawing", "drawn"]
    created_at: float
    ends_at: float
    commit: str
    entrants_count: int
    seed: str | None = None
    winners: list[str] | None = None
    entrants: list[str] | None = None
    drawn_at: float | None = None
    entrants_sha256: str | None = None


class ErrorOut(BaseModel):
    error: str
    message: str


class ConfigOut(BaseModel):
    ws_url: str
    ws_path: str
    subprotocols: list[str]
    whep_url: str
    whip_url: str
    tick_ms: int
    max_message_bytes: int


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 405, 409, 422, 429, 503)
}
ERRORS[405]["headers"] = {
    "Allow": {"description": "the methods the path answers", "schema": {"type": "string"}}
}


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid",
    429: "rate_limited",
}


def caller(request: Request) -> Identity:
    """The verified identity behind ``Authorization: Bearer`` (or ``?token=``)."""
    settings: Settings = request.app.state.settings
    return verify_request(
        settings.secret,
        request.headers.get("authorization"),
        request.query_params.get("token"),
        leeway_s=settings.token_leeway_s,
    )


Caller = Annotated[Identity, Depends(caller)]


class MediaMount(Protocol):
    """What the media role adds to the HTTP app (WHEP/WHIP routes); see media/."""

    def mount(self, app: FastAPI) -> None: ...


class BodyLimit:
    """Refuse a request body past ``limit`` bytes with 413, never reading more than that: by its
    Content-Length at once, or while a chunked body streams in (held, then handed on). WHEP and
    WHIP bound their SDP offers themselves (``media/http.py``, with CORS headers)."""

    def __init__(self, app: Any, limit: int, *, skip: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.skip = skip

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(send)
            else:
                await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._discard(receive, more)
                await self._refuse(send)
                return
        handed = False

        async def replay() -> Any:
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _discard(self, receive: Any, more: bool, most: int = 1 << 20) -> None:
        """Read (and drop) up to ``most`` more bytes of a body that is too large, so that a
        client still sending it can read the 413 instead of meeting a reset connection."""
        dropped = 0
        while more and dropped < most:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def _refuse(self, send: Any) -> None:
        body = dumps_json(
            {"error": "too_large", "message": f"a request body is at most {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(services: Services, *, media: MediaMount | None = None) -> FastAPI:
    settings, redis = services.settings, services.redis
    app = FastAPI(
        title="liveroom",
        version="1",
        description="Live-room interaction engine: rooms, access, sales, lotteries, media.",
        responses=ERRORS,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, skip=("/whep/", "/whip/"))
    rooms, bus, access = services.rooms, services.bus, services.access
    sales, lotteries, words = services.sales, services.lotteries, services.words
    counters = RoomCounters(redis, "api", settings.online_ttl_ms)

    @app.exception_handler(LiveroomError)
    async def _liveroom_error(_: Request, exc: LiveroomError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        # a bug: still the error body of §3 (the traceback goes to the log)
        return _error(500, "internal", f"internal error ({exc.__class__.__name__})")

    @app.exception_handler(RedisError)
    async def _redis_error(_: Request, exc: RedisError) -> JSONResponse:
        # e.g. the first call on a pooled connection after a Redis restart: retry shortly
        return _error(503, "unavailable", f"state is unreachable for a moment ({exc})")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, "invalid", f"{where}: {first.get('msg', 'invalid body')}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette's `Allow` names the methods of one route of the path: name them all
            headers = {"Allow": ", ".join(_allowed(app, request))}
        return _error(exc.status_code, code, str(exc.detail), headers)

    async def load(room: str) -> Room:
        if not is_valid_id(room):
            raise NotFound(f"no room {room[:64]!r}")
        return await rooms.get(RoomId(room))

    async def controlled(room: str, who: Identity) -> Room:
        record = await load(room)
        if not who.controls(record.id, record.owner):
            raise Forbidden("only this room's hosts and admins may do this")
        return record

    async def public(record: Room) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        likes, online = await counters.snapshot(record.id, now_ms)
        watching = await media_viewers(redis, record.id, now_ms)
        return {**record.to_dict(), "online": online, "likes": likes, "media_viewers": watching}

    @app.post("/api/rooms", status_code=201, response_model=RoomOut, tags=["rooms"])
    async def create_room(body: RoomIn, who: Caller) -> dict[str, Any]:
        """Create a room; the caller becomes its owner (hosts and admins only)."""
        if who.role is Role.VIEWER:
            raise Forbidden("only hosts and admins create rooms")
        new = NewRoom.parse(body.model_dump(exclude_none=True))
        return await public(await rooms.create(new, who.user))

    @app.get("/api/rooms", response_model=RoomListOut, tags=["rooms"])
    async def list_rooms(
        who: Caller,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> dict[str, Any]:
        """The rooms the caller may control, newest first (admins: every room; hosts: the
        rooms in their token's `rooms` and those they created). Page on with `next_offset`."""
        if who.role is Role.VIEWER:
            raise Forbidden("only hosts and admins list rooms")
        page, more = await rooms.list_controlled(who, offset=offset, limit=limit)
        return {
            "rooms": [r.to_dict() for r in page],
            "next_offset": offset + limit if more else None,
        }

    @app.get("/api/rooms/{room}", response_model=RoomOut, tags=["rooms"])
    async def get_room(room: str, who: Caller) -> dict[str, Any]:
        """The room with its status, access and live counters."""
        return await public(await load(room))

    @app.post("/api/rooms/{room}/live", response_model=RoomOut, tags=["rooms"])
    async def go_live(room: str, who: Caller) -> dict[str, Any]:
        """Go live: emits `room.live`."""
        return await _transition(room, who, RoomStatus.LIVE, "room.live")

    @app.post("/api/rooms/{room}/end", response_model=RoomOut, tags=["rooms"])
    async def end(room: str, who: Caller) -> dict[str, Any]:
        """End the show: emits `room.ended`."""
        return await _transition(room, who, RoomStatus.ENDED, "room.ended")

    async def _transition(room: str, who: Identity, status: RoomStatus, event: str) -> dict:
        record = await controlled(room, who)
        if record.status is not status:
            record = await rooms.set_status(record.id, status)
            await bus.publish(record.id, {"type": event, "ts": time.time()})
        return await public(record)

    def admin_only(who: Identity) -> None:
        if who.role is not Role.ADMIN:
            raise Forbidden("only admins manage tickets and memberships")

    def valid_user(user: str) -> str:
        if not is_valid_id(user):
            raise InvalidBody("user ids are 1-64 characters of [A-Za-z0-9_.-]")
        return user

    @app.put("/api/rooms/{room}/tickets/{user}", response_model=TicketOut, tags=["access"])
    async def grant_ticket(
        room: str, user: UserPath, who: Caller, body: TicketIn | None = None
    ) -> dict[str, Any]:
        """Grant a ticket (a payment callback); idempotent. Open preview connections of the
        user in this room become ticket holders at once."""
        admin_only(who)
        record = await load(room)
        exp = body.expires_at if body else None
        await access.grant_ticket(record.id, valid_user(user), exp)
        return {"room": record.id, "user": user, "expires_at": exp}

    @app.delete("/api/rooms/{room}/tickets/{user}", response_model=TicketOut, tags=["access"])
    async def refund_ticket(room: str, user: UserPath, who: Caller) -> dict[str, Any]:
        """Refund: revoke the ticket; the user's connections in the room close with 4403
        within a second. Idempotent (`revoked` says whether there was a ticket)."""
        admin_only(who)
        record = await load(room)
        revoked = await access.revoke_ticket(record.id, valid_user(user))
        return {"room": record.id, "user": user, "revoked": revoked}

    @app.put("/api/members/{user}", response_model=MembershipOut, tags=["access"])
    async def set_membership(user: UserPath, body: MembershipIn, who: Caller) -> dict[str, Any]:
        """Set a membership; idempotent. Connections that relied on a higher tier re-check."""
        admin_only(who)
        m = Membership.parse(body.model_dump())
        await access.set_membership(valid_user(user), m)
        return {"user": user, "tier": m.tier, "expires_at": m.expires_at}

    @app.get("/api/members/{user}", response_model=MembershipOut, tags=["access"])
    async def get_membership(user: UserPath, who: Caller) -> dict[str, Any]:
        """A user's membership (admins, or the user itself)."""
        if who.role is not Role.ADMIN and who.user != user:
            raise Forbidden("only admins and the member may read a membership")
        m = await access.get_membership(valid_user(user))
        if m is None or not m.active(time.time()):
            raise NotFound(f"{user!r} has no membership")
        return {"user": user, "tier": m.tier, "expires_at": m.expires_at}

    @app.delete("/api/members/{user}", response_model=MembershipOut, tags=["access"])
    async def revoke_membership(user: UserPath, who: Caller) -> dict[str, Any]:
        """Revoke a membership; connections in paid rooms that needed it close with 4403
        within a second. Idempotent."""
        admin_only(who)
        revoked = await access.revoke_membership(valid_user(user))
        return {"user": user, "revoked": revoked}

    @app.post("/api/rooms/{room}/sales", status_code=201, response_model=SaleOut, tags=["sales"])
    async def create_sale(room: str, body: SaleIn, who: Caller) -> dict[str, Any]:
        """Create a flash sale; it opens now (emits `sale.started`) or after `starts_in_s`,
        and ends after `duration_s`, at sell-out, or by the host."""
        record = await controlled(room, who)
        return await sales.create(record.id, NewSale.parse(body.model_dump(exclude_none=True)))

    @app.get("/api/rooms/{room}/sales/{sale}", response_model=SaleOut, tags=["sales"])
    async def get_sale(room: str, sale: str, who: Caller) -> dict[str, Any]:
        """The sale with `sold`, `left`, `status`."""
        record = await controlled(room, who)
        return await sales.get(record.id, sale)

    @app.get("/api/rooms/{room}/sales/{sale}/orders", response_model=list[OrderOut], tags=["sales"])
    async def get_orders(room: str, sale: str, who: Caller) -> list[dict[str, Any]]:
        """Every confirmed order, in order."""
        record = await controlled(room, who)
        return await sales.orders(record.id, sale)

    @app.post("/api/rooms/{room}/sales/{sale}/end", response_model=SaleOut, tags=["sales"])
    async def end_sale(room: str, sale: str, who: Caller) -> dict[str, Any]:
        """Close the sale early; emits `sale.ended` (a no-op if it already ended)."""
        record = await controlled(room, who)
        await sales.get(record.id, sale)
        await sales.end(record.id, sale, by="host")
        return await sales.get(record.id, sale)

    @app.post(
        "/api/rooms/{room}/notices", status_code=201, response_model=NoticeOut, tags=["rooms"]
    )
    async def post_notice(room: str, body: NoticeIn, who: Caller) -> dict[str, Any]:
        """Post a notice to the room; emits `notice {text}` (a history event)."""
        record = await controlled(room, who)
        text = body.text.strip()
        if not text:
            raise InvalidBody("`text` must not be blank")
        event_id = await bus.publish(record.id, {"type": "notice", "text": text, "ts": time.time()})
        return {"id": event_id, "text": text}

    @app.post("/api/rooms/{room}/mutes", response_model=MuteOut, tags=["rooms"])
    async def post_mute(room: str, body: MuteIn, who: Caller) -> dict[str, Any]:
        """Mute a user in the room for `seconds` (0 lifts it): `danmaku` gets `muted`."""
        record = await controlled(room, who)
        until = await access.mute(record.id, body.user, body.seconds, now=time.time())
        return {"room": record.id, "user": body.user, "muted_until": until}

    @app.post("/api/rooms/{room}/bans", response_model=BanOut, tags=["rooms"])
    async def post_ban(room: str, body: BanIn, who: Caller) -> dict[str, Any]:
        """Ban a user from the room for `seconds` (absent: for good): its connections and
        media sessions in the room end within a second (4403), joins get 403 `banned`.
        The room's hosts and admins keep access; banning the owner answers 409."""
        record = await controlled(room, who)
        until = await access.ban(record, body.user, body.seconds, now=time.time())
        return {"room": record.id, "user": body.user, "banned_until": until}

    @app.delete("/api/rooms/{room}/bans/{user}", response_model=BanOut, tags=["rooms"])
    async def delete_ban(room: str, user: UserPath, who: Caller) -> dict[str, Any]:
        """Lift a ban; idempotent (`lifted` says whether one was in force)."""
        record = await controlled(room, who)
        lifted = await access.unban(record.id, valid_user(user))
        return {"room": record.id, "user": user, "lifted": lifted}

    @app.put("/api/rooms/{room}/words", response_model=WordsOut, tags=["rooms"])
    async def put_words(room: str, body: WordsIn, who: Caller) -> dict[str, Any]:
        """Replace the room's blocked words at once (an empty list clears them): danmaku
        containing one, in any case, get `blocked` on every gateway. The deployment's own
        `blocked_words` setting applies as well."""
        record = await controlled(room, who)
        result = await words.replace(record.id, body.blocked)
        return {"room": record.id, "blocked": list(result.words)}

    @app.get("/api/rooms/{room}/words", response_model=WordsOut, tags=["rooms"])
    async def get_words(room: str, who: Caller) -> dict[str, Any]:
        """The room's own blocked words."""
        record = await controlled(room, who)
        return {"room": record.id, "blocked": list((await words.get(record.id)).words)}

    @app.get("/api/rooms/{room}/stats", response_model=StatsOut, tags=["rooms"])
    async def stats(room: str, who: Caller) -> dict[str, Any]:
        """Counters: online, peak, unique viewers, danmaku, likes, and per sale."""
        record = await controlled(room, who)
        likes, online = await counters.snapshot(record.id, int(time.time() * 1000))
        async with redis.pipeline(transaction=False) as p:
            p.get(keys.peak_online(record.id))
            p.pfcount(keys.unique_viewers(record.id))
            p.get(keys.danmaku_count(record.id))
            p.zrange(keys.sales(record.id), 0, -1)
            peak, uniq, chats, sale_ids = await p.execute()
        per_sale = []
        for sid in sale_ids:
            sale = await sales.get(record.id, sid.decode())
            per_sale.append(
                {
                    "sale": sale["id"],
                    "status": sale["status"],
                    "sold": sale["sold"],
                    "revenue_cents": sale["revenue_cents"],
                    "buyers": sale["buyers"],
                }
            )
        return {
            "room": record.id,
            "online": online,
            "peak_online": max(int(peak or 0), online),
            "unique_viewers": int(uniq),
            "danmaku": int(chats or 0),
            "likes": likes,
            "media_viewers": await media_viewers(redis, record.id, int(time.time() * 1000)),
            "sales": per_sale,
        }

    @app.post(
        "/api/rooms/{room}/lotteries",
        status_code=201,
        response_model=LotteryOut,
        response_model_exclude_none=True,
        tags=["lotteries"],
    )
    async def create_lottery(room: str, body: LotteryIn, who: Caller) -> dict[str, Any]:
        """Open a lottery; its rule is frozen from now on. The answer carries `commit`
        (sha256 of the secret seed); `lottery.started` goes to the room."""
        record = await controlled(room, who)
        return await lotteries.create(
            record.id,
            body.prize,
            body.winners,
            body.rule.model_dump(),
            body.duration_s,
            time.time(),
        )

    @app.post(
        "/api/rooms/{room}/lotteries/{lottery}/draw",
        response_model=LotteryOut,
        response_model_exclude_none=True,
        tags=["lotteries"],
    )
    async def draw_lottery(room: str, lottery: str, who: Caller) -> dict[str, Any]:
        """Close entry and draw now (it also happens by itself at the end of `duration_s`);
        `lottery.drawn` goes to the room. Drawing a drawn lottery answers its record."""
        record = await controlled(room, who)
        await lotteries.close_and_draw(record.id, lottery, time.time())
        result = await lotteries.get(record.id, lottery, with_entrants=False)
        if result["status"] != "drawn":
            raise Conflict("the draw is in progress; read the record in a moment")
        return result

    @app.get(
        "/api/rooms/{room}/lotteries/{lottery}",
        response_model=LotteryOut,
        response_model_exclude_none=True,
        tags=["lotteries"],
    )
    async def get_lottery(room: str, lottery: str, who: Caller) -> dict[str, Any]:
        """The record; after the draw also `seed`, sorted `entrants` and `winners`, so anyone
        can check `sha256(seed) == commit` and recompute the winners
        (`liveroom verify-lottery`)."""
        record = await load(room)
        return await lotteries.get(record.id, lottery)

    @app.get("/api/config", response_model=ConfigOut, tags=["meta"])
    async def config(request: Request) -> dict[str, Any]:
        """Where a page finds the gateway and media endpoints."""
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

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> JSONResponse:
        """200 when this process reaches Redis, else 503."""
        try:
            await redis.ping()
        except Exception as exc:
            return _error(503, "unavailable", f"redis unreachable: {exc.__class__.__name__}")
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", response_class=PlainTextResponse, tags=["meta"])
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/rooms/{room}", response_class=HTMLResponse, include_in_schema=False)
    async def player(room: str) -> HTMLResponse:
        return HTMLResponse(_page("player.html"))

    @app.get("/host/{room}", response_class=HTMLResponse, include_in_schema=False)
    async def host_console(room: str) -> HTMLResponse:
        return HTMLResponse(_page("host.html"))

    if media is not None:
        media.mount(app)
    return app


def _allowed(app: FastAPI, request: Request) -> list[str]:
    """Every method some route answers on the request's path."""
    methods: set[str] = set()
    for route in app.router.routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _page(name: str) -> str:
    return resources.files("web").joinpath("static", name).read_text("utf-8")
