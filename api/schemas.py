"""The HTTP API's request and response bodies, as published in ``/openapi.json``.

They declare every limit the domain enforces, so that clients and fuzzers generated from the
document agree with the server (PROTOCOL.md §3). Each limit is the engine's own constant, never
a copy of it: the domain validates again (``engine.rooms``, ``engine.sales``, ...) and the two
must not drift apart. Nothing here touches Redis.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine import lottery, sales
from engine.access import MAX_BAN_S, MAX_EXPIRES_AT, MAX_MUTE_S
from engine.ids import ID_PATTERN
from engine.lottery import LotteryStatus
from engine.rooms import (
    ACCESS_MODES,
    MAX_NOTICE_CHARS,
    MAX_PREVIEW_S,
    MAX_PRICE_CENTS,
    MAX_TITLE_CHARS,
    TIERS,
    RoomStatus,
)
from engine.words import MAX_WORD_CHARS, MAX_WORDS

ID = f"^{ID_PATTERN}$"
# The domain strips text and refuses what is left blank (str.strip() also takes \x1c-\x1f).
VISIBLE = r"[^\s\x1c-\x1f]"
# `Literal[*TIERS]` needs Python 3.11's PEP 646 in subscripts, which `Literal` lacks; this
# builds the same type from the engine's tuple.
Tier = Literal.__getitem__(TIERS)
AccessMode = Literal.__getitem__(ACCESS_MODES)
RoomState = Literal.__getitem__(tuple(s.value for s in RoomStatus))
SaleState = Literal.__getitem__(tuple(s.value for s in sales.SaleStatus))
LotteryState = Literal.__getitem__(tuple(s.value for s in LotteryStatus))

Cents = Annotated[int, Field(ge=0, le=MAX_PRICE_CENTS)]
EpochS = Annotated[float, Field(ge=0, le=MAX_EXPIRES_AT, allow_inf_nan=False)]
UserPath = Annotated[str, Path(pattern=ID)]


def text(most: int) -> Any:
    """A required text field of 1..``most`` characters with something visible in it."""
    return Field(..., min_length=1, max_length=most, pattern=VISIBLE)


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


# -- rooms -------------------------------------------------------------------------------------


class AccessIn(StrictIn):
    mode: AccessMode = "free"
    price_cents: Cents = 0
    tiers: list[Tier] = []
    preview_seconds: int = Field(0, ge=0, le=MAX_PREVIEW_S)


class MediaPatternIn(BaseModel):
    model_config = ConfigDict(strict=True)  # a discriminator takes no validator
    source: Literal["pattern"]
    path: str | None = None


class MediaFileIn(BaseModel):
    model_config = ConfigDict(strict=True)  # a discriminator takes no validator
    source: Literal["file"]
    path: str = Field(..., description="a file on the server")


class RoomIn(StrictIn):
    id: str | None = Field(None, pattern=ID)
    title: str = text(MAX_TITLE_CHARS)
    access: AccessIn | None = None
    media: Annotated[MediaPatternIn | MediaFileIn, Field(discriminator="source")] | None = None


class RoomListItem(BaseModel):
    id: str
    title: str
    status: RoomState
    access: dict[str, Any]
    owner: str
    created_at: float
    media: dict[str, Any] | None = None


class RoomOut(RoomListItem):
    """A room with its live counters."""

    online: int = 0
    likes: int = 0
    media_viewers: int = 0


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


# -- access ------------------------------------------------------------------------------------


class TicketIn(StrictIn):
    expires_at: EpochS | None = Field(None, description="epoch seconds; null = no expiry")


class TicketOut(BaseModel):
    room: str
    user: str
    expires_at: float | None = None
    revoked: bool | None = None


class MembershipIn(StrictIn):
    tier: Tier
    expires_at: EpochS | None = Field(None, description="epoch seconds; null = no expiry")


class MembershipOut(BaseModel):
    user: str
    tier: str | None = None
    expires_at: float | None = None
    revoked: bool | None = None


# -- sales -------------------------------------------------------------------------------------


class SaleIn(StrictIn):
    item: str = text(sales.MAX_ITEM_CHARS)
    title: str = text(sales.MAX_TITLE_CHARS)
    price_cents: Cents
    tier_prices: dict[Tier, Cents] | None = None
    stock: int = Field(..., ge=1, le=sales.MAX_STOCK)
    per_user_limit: int = Field(1, ge=1, le=sales.MAX_QTY)
    starts_in_s: int = Field(0, ge=0, le=sales.MAX_DURATION_S)
    duration_s: int = Field(..., ge=1, le=sales.MAX_DURATION_S)


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
    status: SaleState
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


# -- moderation --------------------------------------------------------------------------------


class NoticeIn(StrictIn):
    text: str = text(MAX_NOTICE_CHARS)


class NoticeOut(BaseModel):
    id: str
    text: str


class MuteIn(StrictIn):
    user: str = Field(..., pattern=ID)
    seconds: int = Field(..., ge=0, le=MAX_MUTE_S, description="0 lifts the mute")


class MyAccessOut(BaseModel):
    room: str
    access: str = Field(..., description="free | ticket | member | host | preview")
    preview_ends_at: float | None = None
    tier: str | None = Field(None, description="the caller's active membership tier")


class MuteOut(BaseModel):
    room: str
    user: str
    muted_until: float


class BanIn(StrictIn):
    user: str = Field(..., pattern=ID)
    seconds: int | None = Field(
        None, ge=1, le=MAX_BAN_S, strict=True, description="absent or null: for good"
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


# -- lotteries ---------------------------------------------------------------------------------


class RuleIn(StrictIn):
    like: bool = False
    keyword: str | None = Field(
        None, min_length=1, max_length=lottery.MAX_KEYWORD_CHARS, pattern=VISIBLE
    )
    paid_only: bool = False
    min_tier: Tier | None = None


class LotteryIn(StrictIn):
    prize: str = text(lottery.MAX_PRIZE_CHARS)
    winners: int = Field(..., ge=1, le=lottery.MAX_WINNERS)
    rule: RuleIn = Field(default_factory=RuleIn)
    duration_s: int = Field(..., ge=1, le=lottery.MAX_DURATION_S)


class LotteryOut(BaseModel):
    id: str
    room: str
    prize: str
    winners_count: int
    rule: dict[str, Any]
    status: LotteryState
    created_at: float
    ends_at: float
    commit: str
    entrants_count: int
    seed: str | None = None
    winners: list[str] | None = None
    entrants: list[str] | None = None
    drawn_at: float | None = None
    entrants_sha256: str | None = None


# -- meta --------------------------------------------------------------------------------------


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
