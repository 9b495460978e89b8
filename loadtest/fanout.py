"""Fan-out benchmark: one room, N viewers, one gateway process, against the raw write limit.

    python -m loadtest.fanout --viewers 5000 --rate 500 --seconds 10 [--write-md docs/BENCHMARKS.md]

What it measures, in ONE run on the SAME connections:

1. Gateway fan-out. R danmaku/s are published to the room through ``engine.bus.RoomBus`` (the
   call a gateway makes for a viewer's danmaku op), from the harness process. The gateway
   under test (``loadtest.gateway_proc``, the production ``Gateway`` under uvloop) reads them
   with its one room reader, batches them per tick and writes each tick's frame to every
   viewer. Reported: frames/s and events/s received by the viewers and written by the hub,
   MB/s, publish-to-deliver latency (p50/p99/max, ``now - ts`` at the viewer), CPU by process.
2. Raw limit. The gateway process writes one pre-encoded frame, the size of an average tick
   frame, with ``transport.write`` to every connection, as fast as the viewers take it.

The ratio of the two is the figure to watch: how much of what these sockets, processes and
this machine can carry the gateway delivers. Viewers run in ``--clients`` processes of
``loadtest.viewers``; redis-server is a private one on a free port. Nothing here asserts:
this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import faulthandler
import os
import secrets
import shlex
import signal
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis

from engine.bus import RoomBus
from engine.ids import RoomId
from engine.rooms import NewRoom, RoomStatus, RoomStore
from engine.settings import Settings
from engine.store import connect
from loadtest.children import ROOT, Child, CpuClock, CpuSample, cpu_percent, raise_nofile
from loadtest.report import (
    Latency,
    Phase,
    Run,
    code_version,
    machine_info,
    markdown,
    text_table,
    write_section,
)
from runtime.redis_server import RedisServer, free_port

ROOM = RoomId("fanout-bench")


@dataclass(frozen=True, slots=True)
class Snap:
    """Counters of every process at one moment."""

    viewers: list[dict[str, Any]]
    gateway: dict[str, Any]
    cpu: CpuSample
    published: int


class Publisher:
    """Danmaku into the room at a steady rate, each stamped with its publish time.

    It stops on a flag, never by ``Task.cancel``: a cancel that lands while redis-py 8.1
    finishes a command can be swallowed, and the task would publish on forever.
    """

    def __init__(self, bus: RoomBus, room: RoomId, rate: float) -> None:
        self.bus = bus
        self.room = room
        self.rate = rate
        self.sent = 0
        self.stopping = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not self.stopping:
            # Catch up if a publish was slow, so the offered rate is the asked rate.
            while self.sent <= (loop.time() - t0) * self.rate and not self.stopping:
                n = self.sent
                await self.bus.publish(
                    self.room,
                    {
                        "type": "danmaku",
                        "user": {"id": f"user-{n % 100}", "name": f"viewer {n % 100}"},
                        "text": f"benchmark danmaku number {n}",
                        "ts": time.time(),
                    },
                )
                self.sent += 1
            # uvloop's timers have 1 ms resolution: a shorter sleep returns at once and spins.
            await asyncio.sleep(max(0.001, t0 + self.sent / self.rate - loop.time()))


class Bench:
    """The processes of one run and the ways to read their counters."""

    def __init__(self, args: argparse.Namespace, redis: Redis, settings: Settings) -> None:
        self.args = args
        self.redis = redis
        self.settings = settings
        self.gateway: Child | None = None
        self.viewers: list[Child] = []
        self.clock: CpuClock | None = None
        self.publisher = Publisher(RoomBus(redis, settings), ROOM, args.rate)
        self.connect_s = 0.0

    async def start(self, redis_pid: int) -> None:
        a, s = self.args, self.settings
        self.gateway = await Child.start(
            "gateway",
            "loadtest.gateway_proc",
            [
                "--redis-url",
                s.redis_url,
                "--port",
                str(s.ws_port),
                f"--secret={s.secret}",  # a secret may start with "-"
                "--tick-ms",
                str(s.tick_ms),
            ],
        )
        await self.gateway.read(60)
        t0 = time.monotonic()
        shares = [a.viewers // a.clients + (i < a.viewers % a.clients) for i in range(a.clients)]
        first = 0
        for i, count in enumerate(shares):
            self.viewers.append(
                await Child.start(
                    f"viewers-{i}",
                    "loadtest.viewers",
                    [
                        "--port",
                        str(s.ws_port),
                        "--room",
                        ROOM,
                        f"--secret={s.secret}",
                        "--first",
                        str(first),
                        "--count",
                        str(count),
                        "--sample-every",
                        str(a.sample_every),
                        "--concurrency",
                        str(a.concurrency),
                    ],
                )
            )
            first += count
        ready = await asyncio.gather(*(v.read(600) for v in self.viewers))
        self.connect_s = time.monotonic() - t0
        live = sum(r["ready"] for r in ready)
        failed: dict[str, int] = {}
        for r in ready:
            for why, n in r["failed"].items():
                failed[why] = failed.get(why, 0) + n
        print(
            f"{live:,} viewers live in {self.connect_s:.1f} s"
            + (f"; failed: {failed}" if failed else ""),
            flush=True,
        )
        self.clock = CpuClock(
            {
                "gateway": [self.gateway.pid],
                "viewers": [v.pid for v in self.viewers],
                "redis": [redis_pid],
                "harness": [os.getpid()],
            }
        )

    async def snap(self) -> Snap:
        assert self.gateway is not None and self.clock is not None
        cpu = self.clock.read()
        published = self.publisher.sent
        viewers = await asyncio.gather(*(v.ask("snap") for v in self.viewers))
        gateway = await self.gateway.ask("stats")
        return Snap(viewers, gateway, cpu, published)

    async def settle(self, quiet_s: float = 0.5, limit_s: float = 30.0) -> Snap:
        """Wait until the viewers receive nothing more (every sent frame is read)."""
        last = await self.snap()
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            await asyncio.sleep(quiet_s)
            now = await self.snap()
            if sum(v["frames"] for v in now.viewers) == sum(v["frames"] for v in last.viewers):
                return now
            last = now
        return last

    async def stop(self) -> None:
        for child in self.viewers:
            await child.stop()
        if self.gateway is not None:
            await self.gateway.stop()


def per_second(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> float:
    """Sum over viewer processes of each one's own rate (each stamps its own snapshots)."""
    return sum((y[key] - x[key]) / max(y["t"] - x["t"], 1e-9) for x, y in zip(a, b, strict=True))


def samples(encoded: list[str]) -> list[float]:
    """Latency samples (ms) sent as base64 float32 arrays."""
    out = array("f")
    for e in encoded:
        out.frombytes(base64.b64decode(e))
    return out.tolist()


def closes(a: Snap, b: Snap) -> tuple[dict[str, int], int]:
    codes: dict[str, int] = {}
    for x, y in zip(a.viewers, b.viewers, strict=True):
        for code, n in y["closes"].items():
            d = n - x["closes"].get(code, 0)
            if d:
                codes[code] = codes.get(code, 0) + d
    lost = sum(y["lost"] - x["lost"] for x, y in zip(a.viewers, b.viewers, strict=True))
    return codes, lost


def phase(
    a: Snap,
    b: Snap,
    frames_tx: float,
    events_tx: float,
    seconds: float,
    rounds: tuple[int, float, float, float],
    latency: Latency | None = None,
    gateway_latency: Latency | None = None,
    empty_ticks: int = 0,
) -> Phase:
    """``rounds``: (count, total wall s, total CPU s, max wall s) of the gateway's writes."""
    codes, lost = closes(a, b)
    n, wall, cpu, max_wall = rounds
    return Phase(
        seconds=seconds,
        frames_rx=per_second(a.viewers, b.viewers, "frames"),
        events_rx=per_second(a.viewers, b.viewers, "events"),
        bytes_rx=per_second(a.viewers, b.viewers, "bytes"),
        frames_tx=frames_tx,
        events_tx=events_tx,
        cpu=cpu_percent(a.cpu, b.cpu),
        closes=codes,
        lost=lost,
        open_at_end=sum(v["open"] for v in b.viewers),
        latency=latency,
        gateway_latency=gateway_latency,
        published=(b.published - a.published) / max(b.cpu.t - a.cpu.t, 1e-9),
        rounds=n / seconds,
        round_wall_ms=1000 * wall / n if n else 0.0,
        round_cpu_ms=1000 * cpu / n if n else 0.0,
        round_max_ms=1000 * max_wall,
        empty_ticks=empty_ticks / seconds,
    )


async def measure_fanout(bench: Bench) -> Phase:
    a_ = bench.args
    task = asyncio.get_running_loop().create_task(bench.publisher.run(), name="publisher")
    try:
        await asyncio.sleep(a_.warmup)
        a = await bench.snap()
        await asyncio.sleep(a_.seconds)
        b = await bench.snap()
    except BaseException:
        bench.publisher.stopping = True
        with contextlib.suppress(Exception):  # Ctrl-C reaches redis-server too: it may be gone
            await asyncio.wait_for(task, 5)
        raise
    bench.publisher.stopping = True
    await asyncio.wait_for(task, 30)
    ga, gb = a.gateway, b.gateway
    wall = gb["t"] - ga["t"]
    return phase(
        a,
        b,
        frames_tx=(gb["frames_written"] - ga["frames_written"]) / wall,
        events_tx=(gb["events_delivered"] - ga["events_delivered"]) / wall,
        seconds=b.cpu.t - a.cpu.t,
        rounds=(
            gb["flushes"] - ga["flushes"],
            gb["flush_wall_s"] - ga["flush_wall_s"],
            gb["flush_cpu_s"] - ga["flush_cpu_s"],
            gb["flush_max_wall_s"],
        ),
        latency=Latency.of(samples([v["lat_ms"] for v in b.viewers])),
        gateway_latency=Latency.of(samples([gb["out_ms"]])),
        empty_ticks=gb["empty_ticks"] - ga["empty_ticks"],
    )


async def measure_raw(bench: Bench, events: int) -> tuple[Phase, dict[str, Any], int]:
    assert bench.gateway is not None
    a_ = bench.args
    a = await bench.settle()
    raw = await bench.gateway.ask(
        f"raw {a_.seconds} {ROOM} {events} {a_.raw_high_water}", timeout=a_.seconds + 120
    )
    b = await bench.snap()
    c = await bench.settle()
    backlog = sum(v["frames"] for v in c.viewers) - sum(v["frames"] for v in b.viewers)
    p = phase(
        a,
        b,
        frames_tx=raw["frames"] / raw["seconds"],
        events_tx=raw["frames"] * events / raw["seconds"],
        seconds=raw["seconds"],
        rounds=(raw["rounds"], raw["round_wall_s"], raw["round_cpu_s"], raw["round_max_wall_s"]),
    )
    return p, raw, backlog


async def run(args: argparse.Namespace, command: str) -> Run:
    raise_nofile()
    # SIGTERM cancels the run like Ctrl-C does, so the `finally` below stops every child.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="liveroom-fanout-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        settings = Settings(
            redis_url=server.url,
            host="127.0.0.1",
            ws_port=free_port(),
            secret=secrets.token_urlsafe(32),
            tick_ms=args.tick_ms,
        ).check()
        redis = connect(settings.redis_url)
        bench = Bench(args, redis, settings)
        try:
            store = RoomStore(redis)
            await store.create(NewRoom(ROOM, "fan-out benchmark"), owner="bench")
            await store.set_status(ROOM, RoomStatus.LIVE)
            assert server.proc is not None
            await bench.start(server.proc.pid)
            print(f"fan-out: {args.rate} danmaku/s for {args.seconds} s ...", flush=True)
            fanout = await measure_fanout(bench)
            events = args.raw_events or max(
                1, round(fanout.events_rx / fanout.frames_rx) if fanout.frames_rx else 1
            )
            print(f"raw limit: one {events}-event frame, {args.seconds} s ...", flush=True)
            raw, detail, backlog = await measure_raw(bench, events)
        finally:
            await bench.stop()
            await redis.aclose()
            server.stop()
    return Run(
        command=command,
        viewers=args.viewers,
        rate=args.rate,
        tick_ms=args.tick_ms,
        clients=args.clients,
        sample_every=args.sample_every,
        fanout=fanout,
        raw=raw,
        raw_events_per_frame=events,
        raw_frame_bytes=detail["frame_bytes"],
        raw_backlog_frames=backlog,
        connect_s=bench.connect_s,
        machine=machine,
        code=code_version(ROOT),
        when=time.strftime("%Y-%m-%d %H:%M %Z"),
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.fanout", description=__doc__.splitlines()[0]
    )
    p.add_argument("--viewers", type=int, default=5000, help="connections in the room")
    p.add_argument("--rate", type=int, default=500, help="danmaku published per second")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    p.add_argument("--warmup", type=float, default=2.0, help="publishing before measuring")
    p.add_argument("--tick-ms", type=int, default=50, help="the gateway's tick")
    p.add_argument("--clients", type=int, default=2, help="viewer processes")
    p.add_argument(
        "--sample-every", type=int, default=50, help="one connection in this many records latencies"
    )
    p.add_argument(
        "--concurrency", type=int, default=32, help="handshakes in flight per viewer process"
    )
    p.add_argument(
        "--raw-events",
        type=int,
        default=0,
        help="events in the raw frame (default: the fan-out's mean per frame)",
    )
    p.add_argument(
        "--raw-high-water",
        type=int,
        default=16 * 1024,
        help="skip a connection in a raw round while it holds this many unsent bytes",
    )
    p.add_argument(
        "--write-md",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the figures into this Markdown file (docs/BENCHMARKS.md)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a stuck run is
    command = "python -m loadtest.fanout " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        result = uvloop.run(run(args, command))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; children stopped", file=sys.stderr)
        return 130
    print()
    print(text_table(result))
    if args.write_md is not None:
        write_section(args.write_md, markdown(result))
        print(f"\nwritten to {args.write_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
