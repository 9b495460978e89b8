"""Every client of a room, on any gateway, sees every history event once, in id order."""

from __future__ import annotations

import asyncio

from sdk.client import LiveroomClient
from tests.gateway.helpers import close_all, collect_history, connect_all, ids_in_order
from tests.support import Api, Proc, token, unique


async def test_two_gateways_200_clients_see_all_1000_events_once_in_order(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique()
    await api.create_room(room)
    clients = [LiveroomClient(gateways[i % 2].ws_url, room, token(f"u{i}")) for i in range(200)]
    await connect_all(clients)
    try:

        async def chat(i: int, c: LiveroomClient) -> list[str]:
            return [(await c.danmaku(f"hello {k} from {i}"))["id"] for k in range(5)]

        acked = await asyncio.gather(*(chat(i, c) for i, c in enumerate(clients)))
        received = await asyncio.gather(*(collect_history(c, 1000, 60) for c in clients))
    finally:
        await close_all(clients)

    reference = [e["id"] for e in received[0]]
    assert ids_in_order(received[0])
    assert sorted(reference) == sorted(i for ids in acked for i in ids)
    for events in received[1:]:
        assert [e["id"] for e in events] == reference
