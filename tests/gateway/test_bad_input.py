"""Bad input gets a clear error and the connection stays, up to the limits of §4."""

from __future__ import annotations

import base64
import json
import time
import warnings

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine.codec import decode_events
from tests.gateway.helpers import raw_ws
from tests.support import SECRET, Api, Proc, token, unique


async def _reply(ws) -> dict:
    while True:
        for ev in decode_events(await ws.recv()):
            if ev["type"] in ("error", "ack"):
                return ev


@pytest.fixture
async def room(api: Api) -> str:
    rid = unique()
    await api.create_room(rid)
    return rid


@pytest.mark.parametrize(
    "message",
    [
        b"\xc1\xff\x00",  # not msgpack
        "{not json",
        json.dumps({"op": "dance", "ref": "q"}),
        json.dumps({"op": "danmaku", "text": 42, "ref": "q"}),
        json.dumps({"op": "like", "count": "many"}),
        json.dumps(["op", "danmaku"]),
        json.dumps({"op": "danmaku", "text": "hi", "ref": "q" * 100}),
    ],
    ids=[
        "bad-msgpack",
        "bad-json",
        "unknown-op",
        "text-not-str",
        "count-not-int",
        "not-a-map",
        "ref-too-long",
    ],
)
async def test_bad_message_gets_bad_request_and_connection_stays(
    gateways: list[Proc], room: str, message: bytes | str
) -> None:
    ws = await raw_ws(gateways[0].ws_url, room, token("bad"))
    await ws.send(message)
    err = await _reply(ws)
    assert err["type"] == "error" and err["code"] == "bad_request" and err["message"]
    await ws.send(json.dumps({"op": "ping", "ref": "still-here"}))
    assert (await _reply(ws))["ref"] == "still-here"
    await ws.close()


async def test_content_errors_have_their_own_codes(gateways: list[Proc], room: str) -> None:
    ws = await raw_ws(gateways[1].ws_url, room, token("chatty"), sub="liveroom.v1.msgpack")
    from engine.codec import Subprotocol, encode_value

    for text, code in (("   ", "empty"), ("y" * 201, "too_long")):
        await ws.send(
            encode_value({"op": "danmaku", "text": text, "ref": code}, Subprotocol.MSGPACK)
        )
        err = await _reply(ws)
        assert (err["code"], err.get("ref")) == (code, code), err
    await ws.close()


async def test_eleventh_bad_message_in_10s_closes_1008(gateways: list[Proc], room: str) -> None:
    ws = await raw_ws(gateways[0].ws_url, room, token("spammer"))
    for _ in range(10):
        await ws.send("garbage")
        assert (await _reply(ws))["code"] == "bad_request"
    await ws.send("garbage")
    with pytest.raises(ConnectionClosed):
        while True:
            await ws.recv()
    assert ws.close_code == 1008


async def test_message_over_64k_closes_1009(gateways: list[Proc], room: str) -> None:
    ws = await raw_ws(gateways[0].ws_url, room, token("big"))
    await ws.send(json.dumps({"op": "danmaku", "text": "z" * 100 * 1024}))
    with pytest.raises(ConnectionClosed):
        while True:
            await ws.recv()
    assert ws.close_code == 1009


def _alg_none(claims: dict) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def _hs512(claims: dict) -> str:
    """A genuine HS512 token under the deployment's secret (PyJWT warns that the secret is
    short for SHA-512: it is meant for HS256, and only the algorithm list refuses this)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, SECRET, algorithm="HS512")


BAD_TOKENS = {
    "expired": lambda: token("late", ttl=-60),
    "bad-signature": lambda: jwt.encode(
        {"sub": "x", "role": "viewer", "exp": time.time() + 60},
        "another-secret-of-enough-length-for-hs256",
        algorithm="HS256",
    ),
    "alg-none": lambda: _alg_none({"sub": "x", "role": "admin", "exp": int(time.time()) + 60}),
    "hs512": lambda: _hs512({"sub": "x", "role": "viewer", "exp": time.time() + 60}),
    "garbage": lambda: "not-a-token",
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_bad_tokens_get_401_json_before_upgrade(
    gateways: list[Proc], room: str, kind: str
) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(f"{gateways[0].ws_url}/ws/rooms/{room}?token={BAD_TOKENS[kind]()}")
    resp = info.value.response
    assert resp.status_code == 401
    body = json.loads(resp.body)
    assert body["error"] == "unauthorized" and body["message"]


async def test_no_token_is_401_and_unknown_room_is_404(gateways: list[Proc]) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(f"{gateways[0].ws_url}/ws/rooms/some-room")
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        await connect(f"{gateways[0].ws_url}/ws/rooms/{unique('nope')}?token={token('v')}")
    assert info.value.response.status_code == 404
    assert json.loads(info.value.response.body)["error"] == "not_found"


async def test_sixth_connection_of_a_user_is_429(gateways: list[Proc], room: str) -> None:
    tok = token("greedy")
    conns = [await raw_ws(gateways[0].ws_url, room, tok) for _ in range(5)]
    with pytest.raises(InvalidStatus) as info:
        await connect(f"{gateways[0].ws_url}/ws/rooms/{room}?token={tok}")
    assert info.value.response.status_code == 429
    for ws in conns:
        await ws.close()


async def test_bad_since_is_400(gateways: list[Proc], room: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(f"{gateways[0].ws_url}/ws/rooms/{room}?token={token('v')}&since=nonsense")
    assert info.value.response.status_code == 400


async def test_http_api_rejects_the_same_bad_tokens(api: Api) -> None:
    for make in BAD_TOKENS.values():
        async with httpx.AsyncClient(base_url=api.base_url) as c:
            r = await c.get("/api/rooms/x", headers={"Authorization": f"Bearer {make()}"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
