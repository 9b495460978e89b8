"""Flash sales: create, read, orders, end early (the room's hosts and admins)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import Api, Caller
from api.schemas import OrderOut, SaleIn, SaleOut
from engine.sales import NewSale

router = APIRouter(tags=["sales"])


@router.post("/api/rooms/{room}/sales", status_code=201, response_model=SaleOut)
async def create_sale(room: str, body: SaleIn, who: Caller, api: Api) -> dict[str, Any]:
    """Create a flash sale; it opens now (emits `sale.started`) or after `starts_in_s`,
    and ends after `duration_s`, at sell-out, or by the host."""
    record = await api.controlled(room, who)
    new = NewSale.parse(body.model_dump(exclude_none=True))
    return await api.services.sales.create(record.id, new)


@router.get("/api/rooms/{room}/sales/{sale}", response_model=SaleOut)
async def get_sale(room: str, sale: str, who: Caller, api: Api) -> dict[str, Any]:
    """The sale with `sold`, `left`, `status`."""
    record = await api.controlled(room, who)
    return await api.services.sales.get(record.id, sale)


@router.get("/api/rooms/{room}/sales/{sale}/orders", response_model=list[OrderOut])
async def get_orders(room: str, sale: str, who: Caller, api: Api) -> list[dict[str, Any]]:
    """Every confirmed order, in order."""
    record = await api.controlled(room, who)
    return await api.services.sales.orders(record.id, sale)


@router.post("/api/rooms/{room}/sales/{sale}/end", response_model=SaleOut)
async def end_sale(room: str, sale: str, who: Caller, api: Api) -> dict[str, Any]:
    """Close the sale early; emits `sale.ended` (a no-op if it already ended)."""
    record = await api.controlled(room, who)
    ledger = api.services.sales
    await ledger.get(record.id, sale)
    await ledger.end(record.id, sale, by="host")
    return await ledger.get(record.id, sale)
