"""A viewer load generator: many cheap WebSocket viewers of one room in one process.

Run by ``loadtest.fanout``; it speaks a line protocol on stdin/stdout. It opens ``--count``
connections (one user each, subprotocol ``liveroom.v1.msgpack``), prints one JSON line once
they are live, then answers ``snap`` with its counters since the start (frames, events and bytes
received, close codes) and the publish-to-deliver latencies sampled since the last ``snap``,
and exits on ``quit`` or end of input.

Every connection counts frames and events from frame headers alone; one in ``--sample-every``
also decodes every frame and records ``now - ts`` for each event carrying ``ts``. The receive
time is taken once per read, so a viewer process that falls behind shows up as latency, not
as a hidden cost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import faulthandler
import json
import signal
import sys
import time
from array import array
from collections import Counter

import msgpack

from engine.tokens import issue
from loadtest.children import raise_nofile
from loadtest.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameScanner,
    check_upgrade,
    close_code,
    masked_frame,
    msgpack_array_len,
    upgrade_request,
)

SUBPROTOCOL = "liveroom.v1.msgpack"


class Totals:
    """What every viewer of this process received."""

    __slots__ = ("frames", "events", "bytes", "closes", "lost", "latencies_ms")

    def __init__(self) -> None:
        self.frames = 0
        self.events = 0
        self.bytes = 0
        self.closes: Counter[int] = Counter()
        self.lost = 0
        self.latencies_ms = array("f")


class Viewer(asyncio.Protocol):
    """One connection: upgrade, wait for ``welcome``, then count (and maybe time) frames."""

    def __init__(self, totals: Totals, request: bytes, accept: bytes, sample: bool) -> None:
        self.totals = totals
        self.request = request
        self.accept = accept
        self.sample = sample
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.scanner: FrameScanner | None = None
        self.live: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.scanner is None:
            data = self._upgrade(data)
            if not data:
                return
        frames = self.scanner.feed(data)  # type: ignore[union-attr]
        if not frames:
            return
        t = self.totals
        now = time.time()
        for opcode, payload in frames:
            if opcode in (OP_BINARY, OP_TEXT):
                if not self.live.done():
                    self.live.set_result(None)  # the welcome
                    continue
                t.frames += 1
                t.bytes += len(payload)
                t.events += msgpack_array_len(payload)
                if self.sample:
                    self._time(payload, now)
            elif opcode == OP_PING:
                self.transport.write(masked_frame(OP_PONG, payload))  # type: ignore[union-attr]
            elif opcode == OP_CLOSE:
                t.closes[close_code(payload)] += 1
                self.closed = True
                self.transport.close()  # type: ignore[union-attr]
                self._fail(f"closed {close_code(payload)}")

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
        self.scanner = FrameScanner()
        return rest

    def _time(self, payload: bytes, now: float) -> None:
        lat = self.totals.latencies_ms
        for event in msgpack.unpackb(payload, raw=False):
            ts = event.get("ts")
            if ts is not None:
                lat.append((now - ts) * 1000.0)

    def _fail(self, why: str) -> None:
        if not self.live.done():
            self.live.set_exception(ConnectionError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and self.live.done():
            self.totals.lost += 1
        self.closed = True
        self._fail(f"connection lost: {exc}")


async def open_viewer(
    host: str,
    port: int,
    room: str,
    token: str,
    totals: Totals,
    sample: bool,
    timeout: float,
) -> Viewer:
    request, accept = upgrade_request(host, port, f"/ws/rooms/{room}", token, SUBPROTOCOL)
    loop = asyncio.get_running_loop()
    transport, viewer = await loop.create_connection(
        lambda: Viewer(totals, request, accept, sample), host, port
    )
    try:
        await asyncio.wait_for(asyncio.shield(viewer.live), timeout)
    except BaseException:
        transport.abort()
        raise
    return viewer


async def open_all(args: argparse.Namespace, totals: Totals) -> tuple[list[Viewer], Counter[str]]:
    gate = asyncio.Semaphore(args.concurrency)
    viewers: list[Viewer] = []
    errors: Counter[str] = Counter()

    async def one(i: int) -> None:
        token = issue(args.secret, f"viewer-{i}", ttl_s=3 * 3600)
        for attempt in range(3):
            async with gate:
                try:
                    viewers.append(
                        await open_viewer(
                            args.host,
                            args.port,
                            args.room if args.rooms <= 1 else f"{args.room}{i % args.rooms}",
                            token,
                            totals,
                            i % args.sample_every == 0,
                            30.0,
                        )
                    )
                    return
                except (OSError, ConnectionError, TimeoutError) as exc:
                    why = str(exc)[:80] or exc.__class__.__name__
            await asyncio.sleep(0.2 * (attempt + 1))
        errors[why] += 1

    await asyncio.gather(*(one(i) for i in range(args.first, args.first + args.count)))
    return viewers, errors


def snapshot(totals: Totals, viewers: list[Viewer]) -> dict[str, object]:
    lat, totals.latencies_ms = totals.latencies_ms, array("f")
    return {
        "t": time.time(),
        "frames": totals.frames,
        "events": totals.events,
        "bytes": totals.bytes,
        "open": sum(1 for v in viewers if not v.closed),
        "closes": {str(k): v for k, v in totals.closes.items()},
        "lost": totals.lost,
        "lat_ms": base64.b64encode(lat.tobytes()).decode(),
    }


def say(value: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def serve_commands(totals: Totals, viewers: list[Viewer]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "snap":
            say(snapshot(totals, viewers))
        elif line in ("quit", ""):
            return


async def main(args: argparse.Namespace) -> None:
    totals = Totals()
    t0 = time.monotonic()
    viewers, errors = await open_all(args, totals)
    say({"ready": len(viewers), "failed": dict(errors), "connect_s": time.monotonic() - t0})
    try:
        await serve_commands(totals, viewers)
    finally:
        for v in viewers:
            if v.transport is not None:
                v.transport.abort()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--room", required=True)
    p.add_argument(
        "--rooms", type=int, default=1, help="viewer i joins ROOM + str(i %% N) when N > 1"
    )
    p.add_argument("--secret", required=True)
    p.add_argument("--first", type=int, default=0, help="index of this process's first viewer")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sample-every", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=32, help="handshakes in flight")
    return p.parse_args(argv)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; Ctrl-C is its to handle
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a stuck run is
    raise_nofile()
    import uvloop

    uvloop.run(main(parse()))
