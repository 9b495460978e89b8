"""A Socket.IO viewer load generator: many cheap Engine.IO v4 clients in one process.

Run by ``loadtest.peers``; it is ``loadtest.viewers`` for a Socket.IO server, with the same
stdin/stdout line protocol: it opens ``--count`` connections, prints one JSON line once they
are live (or once ``--connect-timeout`` has passed: then it says how many it reached and why
the rest failed), answers ``snap`` with its counters since the start (frames, events and bytes
received, close codes) and the publish-to-deliver latencies sampled since the last ``snap``,
and exits on ``quit`` or end of input.

A connection speaks Engine.IO v4 over the websocket transport only, on raw sockets under
uvloop: ``GET /socket.io/?EIO=4&transport=websocket``, the server's open packet ``0{...}``,
then ``40`` to join the default namespace; it is live when the server answers ``40{...}``
(the servers under test put every socket in the room on connect). Server pings ``2`` are
answered ``3``, WebSocket pings with a pong. Events arrive one per text frame, ``42[name,
data]``: every connection counts them from the frame's first two bytes, without copying the
payload; one in ``--sample-every`` also decodes each event and records ``now - data["ts"]``.
The receive time is taken once per read, so a process that falls behind shows as latency.

Close codes are WebSocket codes, or 41 / 44 for a Socket.IO DISCONNECT / CONNECT_ERROR packet.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import faulthandler
import hashlib
import json
import os
import signal
import time
from collections import Counter
from typing import cast

from loadtest.children import raise_nofile
from loadtest.viewers import Totals, say, serve_commands
from loadtest.wire import (
    GUID,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    check_upgrade,
    close_code,
    masked_frame,
)

PATH = "/socket.io/?EIO=4&transport=websocket"


def upgrade_request(host: str, port: int, path: str = PATH) -> tuple[bytes, bytes]:
    """(the HTTP upgrade request, the Sec-WebSocket-Accept value the server must answer)."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()
    return request, accept


class EventScanner:
    """Splits server frames out of a byte stream and counts Socket.IO events among them.

    ``feed`` returns (events, their payload bytes, the other frames). An event frame (text,
    ``42``: an Engine.IO message carrying a Socket.IO EVENT) is counted from its first two
    bytes and only copied out when ``keep_events`` (a sampled connection); every other frame
    (open, connect, ping, close) is returned to be handled.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes, keep_events: bool) -> tuple[int, int, list[tuple[int, bytes]]]:
        buf = self._buf + data if self._buf else data
        n = len(buf)
        pos = events = size = 0
        other: list[tuple[int, bytes]] = []
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F  # a server never masks
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            start = pos + head
            end = start + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            if opcode == OP_TEXT and length > 2 and buf[start] == 0x34 and buf[start + 1] == 0x32:
                events += 1
                size += length
                if keep_events:
                    other.append((opcode, buf[start:end]))
            else:
                other.append((opcode, buf[start:end]))
            pos = end
        self._buf = buf[pos:] if pos < n else b""
        return events, size, other


class SioViewer(asyncio.Protocol):
    """One connection: upgrade, Engine.IO open, namespace join, then count (and maybe time)."""

    def __init__(self, totals: Totals, request: bytes, accept: bytes, sample: bool) -> None:
        self.totals = totals
        self.request = request
        self.accept = accept
        self.sample = sample
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.scanner: EventScanner | None = None
        self.live: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A handshake given up on (the connect phase's deadline) still fails its future later:
        # mark that exception as seen, so it is not reported as "never retrieved".
        self.live.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.scanner is None:
            data = self._upgrade(data)
            if not data:
                return
        events, size, other = self.scanner.feed(data, self.sample)  # type: ignore[union-attr]
        t = self.totals
        if events:
            t.frames += events
            t.events += events
            t.bytes += size
        if other:
            now = time.time()
            for opcode, payload in other:
                self._frame(opcode, payload, now)

    def _frame(self, opcode: int, payload: bytes, now: float) -> None:
        """A frame that is not a plain counted event (or any frame of a sampled connection)."""
        tr = self.transport
        assert tr is not None
        if opcode == OP_TEXT:
            if payload[:2] == b"42":
                self._time(payload, now)
            elif payload == b"2":  # Engine.IO ping
                tr.write(masked_frame(OP_TEXT, b"3"))
            elif payload[:1] == b"0":  # Engine.IO open: join the default namespace
                tr.write(masked_frame(OP_TEXT, b"40"))
            elif payload[:2] == b"40":
                if not self.live.done():
                    self.live.set_result(None)
            elif payload[:2] in (b"41", b"44") or payload == b"1":
                self._close(int(payload[:2]) if payload != b"1" else 1000)
        elif opcode == OP_PING:
            tr.write(masked_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._close(close_code(payload))

    def _close(self, code: int) -> None:
        self.totals.closes[code] += 1
        self.closed = True
        self.transport.close()  # type: ignore[union-attr]
        self._fail(f"closed {code}")

    def _upgrade(self, data: bytes) -> bytes:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self.head[:end], self.head[end + 4 :]
        self.head = b""
        why = check_upgrade(head, self.accept)
        if why is not None:
            self.transport.close()  # type: ignore[union-attr]
            self._fail(why)
            return b""
        self.scanner = EventScanner()
        return rest

    def _time(self, payload: bytes, now: float) -> None:
        message = json.loads(payload[2:])
        data = message[1] if len(message) > 1 else None
        if isinstance(data, dict) and "ts" in data:
            self.totals.latencies_ms.append((now - data["ts"]) * 1000.0)

    def _fail(self, why: str) -> None:
        if not self.live.done():
            self.live.set_exception(ConnectionError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and self.live.done():
            self.totals.lost += 1
        self.closed = True
        self._fail(f"connection lost: {exc}")


async def open_viewer(
    host: str, port: int, totals: Totals, sample: bool, timeout: float
) -> SioViewer:
    """One live connection (in the room), within ``timeout`` seconds from the TCP connect."""
    request, accept = upgrade_request(host, port)
    loop = asyncio.get_running_loop()
    viewer: SioViewer | None = None

    async def connect() -> None:
        nonlocal viewer
        _, viewer = await loop.create_connection(
            lambda: SioViewer(totals, request, accept, sample), host, port
        )
        await asyncio.shield(viewer.live)

    try:
        await asyncio.wait_for(connect(), timeout)
    except BaseException:
        if viewer is not None and viewer.transport is not None:
            viewer.transport.abort()
        raise
    assert viewer is not None
    return viewer


async def open_all(
    args: argparse.Namespace, totals: Totals
) -> tuple[list[SioViewer], Counter[str]]:
    """Every connection, ``--concurrency`` handshakes at a time, within ``--connect-timeout``."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.concurrency)
    viewers: list[SioViewer] = []
    errors: Counter[str] = Counter()
    deadline = loop.time() + args.connect_timeout

    async def one(i: int) -> None:
        why = "no attempt"
        for attempt in range(3):
            async with gate:
                left = deadline - loop.time()
                if left <= 0:
                    errors["connect phase timed out"] += 1
                    return
                try:
                    sample = i % args.sample_every == 0
                    viewers.append(
                        await open_viewer(args.host, args.port, totals, sample, min(30.0, left))
                    )
                    return
                except (OSError, ConnectionError, TimeoutError) as exc:
                    why = str(exc)[:80] or exc.__class__.__name__
            await asyncio.sleep(0.2 * (attempt + 1))
        errors[why] += 1

    tasks = [loop.create_task(one(i)) for i in range(args.first, args.first + args.count)]
    _, pending = await asyncio.wait(tasks, timeout=args.connect_timeout + 5)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        errors["connect phase timed out"] += len(pending)
    return viewers, errors


async def main(args: argparse.Namespace) -> None:
    totals = Totals()
    t0 = time.monotonic()
    viewers, errors = await open_all(args, totals)
    say({"ready": len(viewers), "failed": dict(errors), "connect_s": time.monotonic() - t0})
    try:
        await serve_commands(totals, viewers)  # type: ignore[arg-type]
    finally:
        for v in viewers:
            if v.transport is not None:
                v.transport.abort()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--first", type=int, default=0, help="index of this process's first viewer")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sample-every", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=32, help="handshakes in flight")
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=120.0,
        help="seconds the whole connect phase may take (then report what it reached)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; Ctrl-C is its to handle
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a stuck run is
    raise_nofile()
    import uvloop

    uvloop.run(main(parse()))
