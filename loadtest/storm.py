"""Reconnect storm: every viewer of a gateway resumes with `since` at once after it restarts.

    python -m loadtest.storm [--viewers 10000] [--clients 2] [--rate 5] [--write-md [PATH]]

ONE private redis-server, ONE gateway process (``liveroom serve --role gateway``) on a fixed
port, ``--viewers`` connections of one room from ``--clients`` processes (raw sockets, one user
each, ``liveroom.v1.msgpack``). This harness publishes numbered danmaku straight into the room's
stream (``RoomBus.publish``) at ``--rate`` per second the whole time. Then:

1. the gateway is killed (SIGKILL: no drain, no close frames) and a new one started on the same
   port, while the numbered danmaku keep coming;
2. once it is ready, every client process reconnects all its viewers at once (``--in-flight``
   handshakes at a time per process), each with ``since=<epoch>:<the last id it saw>``;
3. "back" is a viewer's new `welcome` (with `recovered`); the storm's time runs from the new
   gateway's readiness to the last viewer back, and from the kill;
4. a last numbered danmaku is published; each viewer must then hold every number from its first
   to the last, once: missing and duplicated numbers are counted.

Beside it, in the same run: a bare ``websockets`` server's accept rate for the same number of
connections from the same clients (the raw limit of a storm on this machine). Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from engine.ids import RoomId
from engine.rooms import NewRoom, RoomStore
from engine.settings import Settings
from engine.store import connect
from engine.tokens import issue
from loadtest.children import ROOT, Child, raise_nofile, start_server, stop_server
from loadtest.handshake import BARE_SERVER
from loadtest.report import code_version, machine_info, put_section
from loadtest.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameScanner,
    check_upgrade,
    masked_frame,
    upgrade_request,
)
from runtime.redis_server import RedisServer, free_port

SECRET = "storm-bench-secret-0123456789abcdef-0123456789"
ROOM = RoomId("storm-bench")
SP = "liveroom.v1.msgpack"


# -- the viewers: a child process -------------------------------------------------------------


class Viewer(asyncio.Protocol):
    """One connection: upgrade, `welcome`, then numbered danmaku; remembers where it stands."""

    def __init__(self, state: ViewerState, request: bytes, accept: bytes) -> None:
        self.state = state
        self.request, self.accept = request, accept
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.scanner: FrameScanner | None = None
        self.welcomed: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.scanner is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            why = check_upgrade(head, self.accept)
            if why is not None:
                self._fail(why)
                return
            self.scanner = FrameScanner()
        for opcode, payload in self.scanner.feed(data):
            if opcode == OP_BINARY:
                try:
                    events = msgpack.unpackb(payload, raw=False)
                except Exception:  # the bare server's `welcome`-sized stand-in
                    if not self.welcomed.done():
                        self.welcomed.set_result({})
                    continue
                for ev in events:
                    self._event(ev)
            elif opcode == OP_PING:
                self.transport.write(masked_frame(OP_PONG, payload))  # type: ignore[union-attr]
            elif opcode == OP_CLOSE:
                self.transport.close()  # type: ignore[union-attr]

    def _event(self, ev: dict) -> None:
        st = self.state
        if ev.get("type") == "welcome":
            st.epoch = ev["epoch"]
            if not self.welcomed.done():
                self.welcomed.set_result(ev)
            return
        if "id" in ev:
            st.last_id = ev["id"]
        if ev.get("type") == "danmaku" and ev.get("text", "").startswith("n "):
            st.seen.append(int(ev["text"][2:]))

    def _fail(self, why: str) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"lost: {exc}")
        if not self.lost.done():
            self.lost.set_result(None)


class ViewerState:
    __slots__ = ("user", "epoch", "last_id", "seen", "proto")

    def __init__(self, user: str) -> None:
        self.user = user
        self.epoch = ""
        self.last_id = ""
        self.seen: list[int] = []
        self.proto: Viewer | None = None


async def _connect(args: argparse.Namespace, st: ViewerState, gate: asyncio.Semaphore) -> float:
    """Connect (resuming when it has a cursor); seconds until its `welcome`."""
    loop = asyncio.get_running_loop()
    path = f"/ws/rooms/{args.room}"
    if st.last_id:
        path += f"?since={st.epoch}:{st.last_id}"
    token = issue(args.secret, st.user, ttl_s=3 * 3600)
    t0 = time.monotonic()
    for attempt in range(40):
        request, accept = upgrade_request(args.host, args.port, path, token, SP)
        async with gate:
            try:
                _, proto = await loop.create_connection(
                    lambda r=request, a=accept: Viewer(st, r, a), args.host, args.port
                )
                await asyncio.wait_for(asyncio.shield(proto.welcomed), 30)
                st.proto = proto
                return time.monotonic() - t0
            except (OSError, ConnectionError, TimeoutError):
                pass
        await asyncio.sleep(0.05 * (attempt + 1))
    raise ConnectionError(f"{st.user} could not connect")


def _gaps(seen: list[int], last: int) -> tuple[int, int]:
    """(numbers missing from the first seen to ``last``, numbers seen more than once)."""
    if not seen:
        return last + 1, 0
    distinct = set(seen)
    missing = sum(1 for n in range(min(distinct), last + 1) if n not in distinct)
    return missing, len(seen) - len(distinct)


async def viewers_main(args: argparse.Namespace) -> None:
    states = [ViewerState(f"storm-{args.first + i}") for i in range(args.count)]
    gate = asyncio.Semaphore(args.in_flight)
    t0 = time.monotonic()
    await asyncio.gather(*(_connect(args, st, gate) for st in states))
    say({"ready": len(states), "connect_s": time.monotonic() - t0})
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        words = (await reader.readline()).decode().split()
        if not words or words[0] == "quit":
            return
        if words[0] == "lost":  # wait until every connection has dropped
            await asyncio.gather(*(st.proto.lost for st in states if st.proto))
            say({"lost": len(states)})
        elif words[0] == "resume":
            t0 = time.monotonic()
            took = await asyncio.gather(*(_connect(args, st, gate) for st in states))
            say({"back_s": time.monotonic() - t0, "slowest_s": max(took)})
        elif words[0] == "check":  # wait (up to 30 s) for the last number, then count
            last, deadline = int(words[1]), time.monotonic() + 30
            while time.monotonic() < deadline and any(
                not st.seen or st.seen[-1] < last for st in states
            ):
                await asyncio.sleep(0.05)
            gaps = [_gaps(st.seen, last) for st in states]
            say(
                {
                    "missing": sum(m for m, _ in gaps),
                    "dupes": sum(d for _, d in gaps),
                    "viewers_with_gaps": sum(1 for m, _ in gaps if m),
                }
            )


def say(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def viewers_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="loadtest.storm viewers")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--in-flight", type=int, default=256)
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile()
    import uvloop

    uvloop.run(viewers_main(args))
    return 0


# -- the harness ------------------------------------------------------------------------------


async def _viewers(args: argparse.Namespace, port: int, room: str) -> list[Child]:
    per = -(-args.viewers // args.clients)
    children = []
    for i in range(args.clients):
        count = min(per, args.viewers - i * per)
        argv = (
            f"viewers --port {port} --room {room} --secret {SECRET} --first {i * per} "
            f"--count {count} --in-flight {args.in_flight}"
        )
        children.append(await Child.start(f"viewers-{i}", "loadtest.storm", argv.split()))
    return children


async def _bare(args: argparse.Namespace) -> float:
    """Seconds for the bare server to accept ``--viewers`` from the same clients."""
    port = free_port()
    server = await start_server(
        [sys.executable, "-c", BARE_SERVER, str(port)], dict(os.environ), quiet=True
    )
    try:
        children = await _viewers(args, port, "bare")
        ready = [await c.read(timeout=300) for c in children]
        for c in children:
            await c.stop()
        return max(r["connect_s"] for r in ready)  # (timed inside the clients, as a storm is)
    finally:
        await stop_server(server)


class Publisher:
    """Numbered danmaku into the room's stream at ``rate``/s, with no gateway in the way."""

    def __init__(self, url: str, rate: float) -> None:
        from engine.bus import RoomBus

        self.redis = connect(url)
        self.bus = RoomBus(self.redis, Settings(redis_url=url, secret=SECRET))
        self.rate = rate
        self.n = -1
        self.task: asyncio.Task[None] | None = None

    async def one(self) -> int:
        self.n += 1
        event = {"type": "danmaku", "user": {"id": "pub", "name": "pub"}, "text": f"n {self.n}"}
        await self.bus.publish(ROOM, {**event, "ts": time.time()})
        return self.n

    async def _run(self) -> None:
        while True:
            await self.one()
            await asyncio.sleep(1 / self.rate)

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> int:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        return await self.one()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="lr-storm-"))
    server = RedisServer(tmp / "redis", appendonly=False).start()
    out: dict[str, Any] = {}
    try:
        redis = connect(server.url)
        await RoomStore(redis).create(NewRoom(ROOM, "storm benchmark"), "bench")
        await redis.aclose()
        out["bare_s"] = await _bare(args)  # the same clients opening as many at once
        print(f"bare websockets: {args.viewers:,} accepted in {out['bare_s']:.1f} s", flush=True)

        port = free_port()
        env = {**os.environ, "LIVEROOM_SECRET": SECRET, "LIVEROOM_LOG_LEVEL": "WARNING"}
        env["LIVEROOM_MAX_CONNECTIONS"] = "100000"
        cmd = [sys.executable, "-m", "runtime.cli", "serve", "--role", "gateway"]
        cmd += ["--redis-url", server.url, "--ws-port", str(port)]
        gw = await start_server(cmd, env, quiet=True)
        pub = Publisher(server.url, args.rate)
        pub.start()
        children = await _viewers(args, port, ROOM)
        try:
            ready = [await c.read(timeout=600) for c in children]
            out["first_connect_s"] = max(r["connect_s"] for r in ready)
            print(f"{args.viewers:,} viewers joined in {out['first_connect_s']:.1f} s", flush=True)
            await asyncio.sleep(args.settle)
            killed = time.monotonic()
            await stop_server(gw, signal.SIGKILL)
            for c in children:
                await c.ask("lost", timeout=60)
            await asyncio.sleep(args.down)  # the gateway is away; history keeps growing
            gw = await start_server(cmd, env, quiet=True)
            ready_at = time.monotonic()
            backs = await asyncio.gather(*(c.ask("resume", timeout=600) for c in children))
            out["storm_s"] = max(b["back_s"] for b in backs)
            out["since_kill_s"] = time.monotonic() - killed
            out["restart_s"] = ready_at - killed
            print(f"all back in {out['storm_s']:.2f} s after the new gateway was ready", flush=True)
            await asyncio.sleep(1.0)
            last = await pub.stop()
            checks = [await c.ask(f"check {last}", timeout=60) for c in children]
            out["published"] = last + 1
            out["missing"] = sum(c["missing"] for c in checks)
            out["dupes"] = sum(c["dupes"] for c in checks)
            out["viewers_with_gaps"] = sum(c["viewers_with_gaps"] for c in checks)
        finally:
            for c in children:
                with contextlib.suppress(Exception):
                    await c.stop()
            await stop_server(gw)
            await pub.redis.aclose()
    finally:
        server.stop()
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> list[str]:
    n = args.viewers
    rate = n / out["storm_s"] if out["storm_s"] else 0.0
    bare = n / out["bare_s"] if out["bare_s"] else 0.0
    return [
        "| measure | value |",
        "|---|---:|",
        f"| viewers | {n:,} |",
        f"| first join of all viewers | {out['first_connect_s']:.1f} s |",
        f"| gateway killed -> new one ready | {out['restart_s']:.1f} s |",
        f"| **new gateway ready -> every viewer back (`welcome`)** | **{out['storm_s']:.2f} s** |",
        f"| resumes per second | {rate:,.0f} |",
        f"| bare websockets, same clients: accepts per second | {bare:,.0f} |",
        f"| storm / bare | {rate / bare if bare else 0:.2f} |",
        f"| numbered danmaku published (the last after the storm) | {out['published']:,} |",
        f"| numbers missed, over all viewers | {out['missing']:,} |",
        f"| numbers received twice | {out['dupes']:,} |",
        f"| viewers with a gap | {out['viewers_with_gaps']:,} |",
    ]


BEGIN = "<!-- storm:begin (generated by loadtest.storm; edits inside are overwritten) -->"
END = "<!-- storm:end -->"
SECTION = "## Reconnect storm (gateway restart)"


def write_md(path: Path, out: dict[str, Any], args: argparse.Namespace, argv: list[str]) -> None:
    m = machine_info()
    body = "\n".join(
        [
            BEGIN,
            "```",
            ("python -m loadtest.storm " + shlex.join(argv)).strip(),
            "```",
            "",
            f"Run at commit {code_version(ROOT)}. Machine: {m['cpus']} CPUs ({m['cpu']}), "
            f"Python {m['python']}, websockets {m['websockets']}. {args.clients} client "
            f"processes, {args.in_flight} handshakes in flight each; numbered danmaku at "
            f"{args.rate:g}/s throughout; the gateway was down {args.down:g} s beyond its "
            "restart.",
            "",
            *report(out, args),
            END,
        ]
    )
    put_section(path, "storm", SECTION, body)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--viewers", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=256, help="handshakes at once per client")
    p.add_argument("--rate", type=float, default=2.0, help="numbered danmaku per second")
    p.add_argument("--settle", type=float, default=2.0, help="seconds live before the kill")
    p.add_argument("--down", type=float, default=1.0, help="extra seconds the gateway is away")
    p.add_argument("--write-md", nargs="?", const="docs/BENCHMARKS.md", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["viewers"]:
        return viewers_cli(argv[1:])
    args = parse(argv)
    raise_nofile()
    import uvloop

    out = uvloop.run(run(args))
    print("\n".join(report(out, args)))
    if args.write_md:
        path = Path(args.write_md)
        write_md(path if path.is_absolute() else ROOT / path, out, args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
