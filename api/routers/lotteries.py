"""Lotteries: open (the room's hosts and admins), draw, and the public record with its proof."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api.deps import Api, Caller
from api.schemas import LotteryIn, LotteryOut
from engine.errors import Conflict

router = APIRouter(tags=["lotteries"])


@router.post(
    "/api/rooms/{room}/lotteries",
    status_code=201,
    response_model=LotteryOut,
    response_model_exclude_none=True,
)
async def create_lottery(room: str, body: LotteryIn, who: Caller, api: Api) -> dict[str, Any]:
    """Open a lottery; its rule is frozen from now on. The answer carries `commit`
    (sha256 of the secret seed); `lottery.started` goes to the room."""
    record = await api.controlled(room, who)
    return await api.services.lotteries.create(
        record.id,
        body.prize,
        body.winners,
        body.rule.model_dump(),
        body.duration_s,
        time.time(),
    )


@router.post(
    "/api/rooms/{room}/lotteries/{lottery}/draw",
    response_model=LotteryOut,
    response_model_exclude_none=True,
)
async def draw_lottery(room: str, lottery: str, who: Caller, api: Api) -> dict[str, Any]:
    """Close entry and draw now (it also happens by itself at the end of `duration_s`);
    `lottery.drawn` goes to the room. Drawing a drawn lottery answers its record."""
    record = await api.controlled(room, who)
    book = api.services.lotteries
    await book.close_and_draw(record.id, lottery, time.time())
    result = await book.get(record.id, lottery, with_entrants=False)
    if result["status"] != "drawn":
        raise Conflict("the draw is in progress; read the record in a moment")
    return result


@router.get(
    "/api/rooms/{room}/lotteries/{lottery}",
    response_model=LotteryOut,
    response_model_exclude_none=True,
)
async def get_lottery(room: str, lottery: str, who: Caller, api: Api) -> dict[str, Any]:
    """The record; after the draw also `seed`, sorted `entrants` and `winners`, so anyone
    can check `sha256(seed) == commit` and recompute the winners
    (`liveroom verify-lottery`)."""
    record = await api.load(room)
    return await api.services.lotteries.get(record.id, lottery)
