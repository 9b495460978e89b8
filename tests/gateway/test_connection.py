"""The gateway's own receive path (gateway/connection.py): what websockets' did, a client sees."""

from __future__ import annotations

import asyncio
import contextlib
import json

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from engine.codec import decode_events
from tests.gateway.helpers import raw_ws
from tests.support import Api, Proc, token, unique


async def _answers(ws, n: int) -> list[dict]:
    out: list[dict] = []
    while len(out) < n:
        async with asyncio.timeout(10):
            out += [e for e in decode_events(await ws.recv()) if e["type"] in ("ack", "error")]
    return out


async def _closed(ws) -> int | None:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    return ws.close_code


@pytest.fixture
async def room(api: Api) -> str:
    rid = unique()
    await api.create_room(rid)
    return rid


async def test_fragmented_messages_are_one_op_each(gateways: list[Proc], room: str) -> None:
    ws = await raw_ws(gateways[0].ws_url, room, token("fragments"))
    text = json.dumps({"op": "ping", "ref": "text-in-parts"})
    await ws.send([text[:5], text[5:17], text[17:]])  # three frames: TEXT, CONT, CONT (fin)
    packed = msgpack.packb({"op": "ping", "ref": "binary-in-parts"})
    await ws.send([packed[:4], packed[4:]])
    await ws.send(json.dumps({"op": "ping", "ref": "whole"}))
    refs = [a.get("ref") for a in await _answers(ws, 3)]
    assert refs == ["text-in-parts", "binary-in-parts", "whole"]
    await ws.close()


async def test_many_messages_in_one_write_are_all_answered_in_order(
    gateways: list[Proc], room: str
) -> None:
    """More messages than the inbox holds before reading pauses (16) arrive in one TCP write:
    reading pauses and resumes, nothing is lost or reordered."""
    ws = await raw_ws(gateways[1].ws_url, room, token("burst"))
    for i in range(40):  # queued by the client, flushed together
        ws.protocol.send_text(json.dumps({"op": "ping", "ref": f"p{i}"}).encode())
    ws.send_data()
    answers = await _answers(ws, 40)
    assert [a.get("ref") for a in answers] == [f"p{i}" for i in range(40)]
    await ws.send(json.dumps({"op": "ping", "ref": "after"}))  # reading resumed
    assert [a.get("ref") for a in await _answers(ws, 1)] == ["after"]
    await ws.close()


async def test_text_that_is_not_utf8_closes_1007(gateways: list[Proc], room: str) -> None:
    ws = await raw_ws(gateways[0].ws_url, room, token("not-utf8"))
    ws.protocol.send_text(b'{"op": "ping", "ref": "\xff\xfe"}')
    ws.send_data()
    assert await _closed(ws) == 1007


async def test_a_message_of_too_many_fragments_closes_1009(gateways: list[Proc], room: str) -> None:
    ws = await raw_ws(gateways[1].ws_url, room, token("many-fragments"))
    with contextlib.suppress(ConnectionClosed):  # (the close may come while it sends)
        await ws.send(["x"] * 5000)
    assert await _closed(ws) == 1009
