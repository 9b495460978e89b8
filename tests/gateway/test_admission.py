"""Who gets in, how many, and what a refused or abandoned handshake leaves behind (nothing).

Each case asserts the attacker's outcome AND that an honest client in the same room kept
receiving every event meanwhile.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from loadtest.wire import check_upgrade, upgrade_request
from tests.gateway.admission_helpers import Witness, _join, _status
from tests.support import Api, Proc, token, unique


async def test_requests_that_never_upgrade_give_their_capacity_back(api: Api, spawn) -> None:
    gw: Proc = spawn(env={"LIVEROOM_MAX_CONNECTIONS": "20"})
    room = unique()
    await api.create_room(room)
    tok = token("plain-get")
    async with Witness(gw.ws_url, room) as w:
        http_url = gw.ws_url.replace("ws://", "http://")
        async with httpx.AsyncClient() as c:
            for _ in range(25):  # authenticated, but no Upgrade: websockets answers 426
                r = await c.get(f"{http_url}/ws/rooms/{room}?token={tok}")
                assert r.status_code == 426
            await w.say()
        for _ in range(25):  # admitted, then the client vanishes before the 101 is read
            with socket.create_connection(("127.0.0.1", gw.ws_port)) as s:
                s.sendall(
                    f"GET /ws/rooms/{room}?token={tok} HTTP/1.1\r\nHost: x\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
        await asyncio.sleep(0.5)
        # 20 capacity minus the witness's 3 connections: all of it is there again
        async with AsyncExitStack() as stack:
            for i in range(17):
                ws = await _join(gw.ws_url, room, token(f"after-{i}"))
                stack.push_async_callback(ws.close)
            assert await _status(gw.ws_url, room, token("one-too-many")) == 503
            await w.say()


async def test_per_user_limit_holds_across_gateways_even_when_racing(
    api: Api, gateways: list[Proc]
) -> None:
    room = unique()
    await api.create_room(room)
    tok = token("greedy")
    urls = [gateways[i % 2].ws_url for i in range(12)]
    async with Witness(gateways[0].ws_url, room) as w:
        results = await asyncio.gather(*(_join(u, room, tok) for u in urls), return_exceptions=True)
        held = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        try:
            assert len(held) == 5  # the default limit, counted across both gateways
            assert {r.response.status_code for r in refused} == {429}  # type: ignore[attr-defined]
            await w.say()
            await held[0].close()
            deadline = time.monotonic() + 5
            while await _status(gateways[1].ws_url, room, tok) != 101:
                assert time.monotonic() < deadline, "a closed connection's slot never came back"
                await asyncio.sleep(0.1)
        finally:
            for ws in held:
                await ws.close()


async def test_per_ip_cap_refuses_one_address_not_the_others(api: Api, spawn) -> None:
    gw: Proc = spawn(env={"LIVEROOM_MAX_CONNS_PER_IP": "4", "LIVEROOM_IP_LIMIT_EXEMPT": ""})
    room = unique()
    await api.create_room(room)

    def from_ip(ip: str) -> socket.socket:
        s = socket.socket()
        s.bind((ip, 0))
        s.connect(("127.0.0.1", gw.ws_port))
        return s

    async with Witness(gw.ws_url, room) as w:  # 3 connections from 127.0.0.1
        ws = await _join(gw.ws_url, room, token("ip-a"), sock=from_ip("127.0.0.1"))
        status = await _status(gw.ws_url, room, token("ip-b"), sock=from_ip("127.0.0.1"))
        assert status == 429
        other = await _status(gw.ws_url, room, token("ip-c"), sock=from_ip("127.0.0.2"))
        assert other == 101
        await w.say()
        await ws.close()


async def test_origin_allow_list(api: Api, gateways: list[Proc], spawn) -> None:
    room = unique()
    await api.create_room(room)
    gw = gateways[0]
    async with Witness(gw.ws_url, room) as w:
        # Outside dev mode with no list: pages of the gateway's own host only.
        assert await _status(gw.ws_url, room, token("o1"), origin="https://evil.example") == 403
        assert await _status(gw.ws_url, room, token("o2"), origin="http://127.0.0.1:8080") == 101
        assert await _status(gw.ws_url, room, token("o3")) == 101  # no Origin: not a browser
        listed = spawn(env={"LIVEROOM_ALLOWED_ORIGINS": "https://live.example"})
        assert await _status(listed.ws_url, room, token("o4"), origin="https://live.example") == 101
        assert (
            await _status(listed.ws_url, room, token("o5"), origin="http://127.0.0.1:8080") == 403
        )
        await w.say()


async def test_a_dribbled_handshake_is_cut_off(api: Api, spawn) -> None:
    gw: Proc = spawn(env={"LIVEROOM_HANDSHAKE_TIMEOUT_S": "2"})
    room = unique()
    await api.create_room(room)
    request = f"GET /ws/rooms/{room} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    async with Witness(gw.ws_url, room) as w:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ws_port)
        t0 = time.monotonic()
        closed_after = None
        for i in range(len(request)):  # one byte a second, as a slowloris does
            writer.write(request[i : i + 1])
            try:
                data = await asyncio.wait_for(reader.read(1024), 1.0)
            except TimeoutError:
                await w.say()
                continue
            if data == b"":
                closed_after = time.monotonic() - t0
                break
        writer.close()
        assert closed_after is not None, "the dribbling client was never cut off"
        assert closed_after < 10
        print(f"dribbled handshake closed after {closed_after:.1f}s")


async def test_oversized_headers_get_4xx(api: Api, gateways: list[Proc]) -> None:
    room = unique()
    await api.create_room(room)
    gw = gateways[1]

    async def first_line(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ws_port)
        writer.write(request)
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return line

    async with Witness(gw.ws_url, room) as w:
        long_header = f"GET /ws/rooms/{room} HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * 20_000}\r\n\r\n"
        assert (await first_line(long_header.encode())).startswith(b"HTTP/1.1 431")
        many = "".join(f"X-H{i}: v\r\n" for i in range(500))
        request = f"GET /ws/rooms/{room} HTTP/1.1\r\nHost: x\r\n{many}\r\n"
        assert (await first_line(request.encode())).startswith(b"HTTP/1.1 431")
        long_path = f"GET /ws/rooms/{'r' * 20_000} HTTP/1.1\r\nHost: x\r\n\r\n"
        assert (await first_line(long_path.encode())).startswith(b"HTTP/1.1 414")
        await w.say()


def _listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    raise AssertionError("no TcpExt line in /proc/net/netstat")


async def _burst(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``n`` TCP connections opened at once; those the kernel has not completed within 2 s
    (their SYNs were dropped) are abandoned."""
    tries = [asyncio.ensure_future(asyncio.open_connection("127.0.0.1", port)) for _ in range(n)]
    await asyncio.wait(tries, timeout=2)
    for t in tries:
        t.cancel()
    return [t.result() for t in tries if t.done() and not t.cancelled() and not t.exception()]


async def test_a_burst_of_viewers_at_a_busy_gateway_is_queued_not_dropped(api: Api, spawn) -> None:
    """After a gateway restart every viewer reconnects at once. While the gateway is busy
    (here: stopped), the kernel holds their connections in the listen queue; with the
    default ``ws_backlog`` none is dropped (a dropped SYN waits 1 s, 3 s, ... to retry), and
    once the gateway runs again every one of them is welcomed."""
    n = min(600, int(Path("/proc/sys/net/core/somaxconn").read_text()) - 10)
    room = unique("burst")
    await api.create_room(room)
    short = spawn(env={"LIVEROOM_WS_BACKLOG": "16"})  # the control: a short queue drops
    gw = spawn()
    for proc in (short, gw):
        proc.signal(signal.SIGSTOP)
    try:
        before = _listen_overflows()
        conns = await _burst(gw.ws_port, n)
        assert _listen_overflows() == before
        assert len(conns) == n
        # (the control last: its half-open leftovers could bump the counter a while after)
        before = _listen_overflows()
        dropped = await _burst(short.ws_port, n)
        assert _listen_overflows() > before  # the counter does see a full queue here
        for _, w in dropped:
            w.close()
    finally:
        for proc in (short, gw):
            proc.signal(signal.SIGCONT)
    welcomed = await asyncio.gather(*(_upgrade(r, w, gw.ws_port, room) for r, w in conns))
    assert all(welcomed)


async def _upgrade(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, room: str
) -> bool:
    request, accept = upgrade_request(
        "127.0.0.1", port, f"/ws/rooms/{room}", token(unique("v")), "liveroom.v1.json"
    )
    try:
        writer.write(request)
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
            assert check_upgrade(head[:-4], accept) is None
            got = b""
            while b"welcome" not in got and (chunk := await reader.read(65536)):
                got += chunk
        return b"welcome" in got
    finally:
        writer.close()
