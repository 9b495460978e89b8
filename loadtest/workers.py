"""Gateway scaling with worker processes: ``liveroom serve --workers 1`` against ``--workers 2``
on the same port, machine and load, alternated in one run.

    python -m loadtest.workers [--viewers 6000] [--rooms 60] [--rate 20] [--repeats 3]
                               [--write-md docs/BENCHMARKS.md]

The gateways are the production command (``python -m runtime.cli serve --role gateway
--workers K``, SO_REUSEPORT); viewers are ``loadtest.viewers`` processes spread over
``--rooms`` rooms; the harness publishes ``--rate`` danmaku per second into EACH room (as a
gateway publishes a viewer's danmaku). Fan-out is the gateway's main work: every tick, each
room's batch is framed once and written to each of its viewers. Reported per K: events and
frames per second the viewers received, the gateways' CPU (all worker processes), publish-to-
deliver latency; then the ratios K=2 / K=1 of frames delivered per second (the tick sends a
room's viewers one frame each per tick with news, so frames are the gateway's unit of work) and
of frames per gateway CPU-second, each from the median of ``--repeats`` runs (alternated, so a
slow minute of the machine hits both).

The load is offered, not closed-loop: when one worker cannot keep up, the latency grows and the
viewers receive less than is offered. With 2 cores the viewers, the publisher and Redis share
the machine with the gateways, so 2 workers cannot double anything here; the machine's CPU
line says what was left. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from engine.bus import RoomBus
from engine.ids import RoomId
from engine.rooms import NewRoom, RoomStatus, RoomStore
from engine.settings import Settings
from engine.store import connect
from loadtest.children import (
    ROOT,
    Child,
    CpuClock,
    cpu_percent,
    raise_nofile,
    start_server,
    stop_server,
)
from loadtest.fanout import Publisher, samples
from loadtest.report import Latency, code_version, machine_info, put_section
from runtime.redis_server import RedisServer, free_port

TAG = "workers"
SECTION = "## Gateway worker processes (`serve --workers`)"


@dataclass(frozen=True, slots=True)
class Result:
    workers: int
    events_rx: float
    frames_rx: float
    offered: float
    """Events per second the viewers would receive if every one were delivered."""
    gateway_cpu: float
    machine_cpu: float
    latency: Latency | None
    connect_s: float


async def one_run(args: argparse.Namespace, workers: int, redis_url: str, secret: str) -> Result:
    port = free_port()
    env = {**os.environ, "LIVEROOM_SECRET": secret, "LIVEROOM_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "runtime.cli", "serve", "--role", "gateway"]
    cmd += ["--redis-url", redis_url, "--ws-port", str(port), "--http-port", str(free_port())]
    cmd += ["--workers", str(workers), "--tick-ms", str(args.tick_ms)]
    server = await start_server(cmd, env)
    viewers: list[Child] = []
    redis = connect(redis_url)
    publishers = [
        Publisher(RoomBus(redis, Settings(redis_url=redis_url)), RoomId(f"w{r}"), args.rate)
        for r in range(args.rooms)
    ]
    try:
        t0 = time.monotonic()
        per = args.viewers // args.clients
        for i in range(args.clients):
            viewers.append(await _viewer_child(args, i, per, port, secret))
        await asyncio.gather(*(v.read(600) for v in viewers))
        connect_s = time.monotonic() - t0
        gateway_pids = [server.pid] + [c.pid for c in psutil.Process(server.pid).children()]
        clock = CpuClock({"gateway": gateway_pids, "viewers": [v.pid for v in viewers]})
        tasks = [asyncio.ensure_future(p.run()) for p in publishers]
        await asyncio.sleep(args.warmup)
        a, ca = await asyncio.gather(*(v.ask("snap") for v in viewers)), clock.read()
        await asyncio.sleep(args.seconds)
        b, cb = await asyncio.gather(*(v.ask("snap") for v in viewers)), clock.read()
        for p in publishers:
            p.stopping = True
        await asyncio.gather(*tasks)
    finally:
        for v in viewers:
            await v.stop()
        await stop_server(server)
        await redis.aclose()
    cpu = cpu_percent(ca, cb)
    wall = cb.t - ca.t

    def rate(key: str) -> float:
        return sum(y[key] - x[key] for x, y in zip(a, b, strict=True)) / wall

    return Result(
        workers=workers,
        events_rx=rate("events"),
        frames_rx=rate("frames"),
        offered=args.rate * (per * args.clients),
        gateway_cpu=cpu["gateway"],
        machine_cpu=cpu["machine"],
        latency=Latency.of(samples([v["lat_ms"] for v in b])),
        connect_s=connect_s,
    )


async def _viewer_child(
    args: argparse.Namespace, i: int, count: int, port: int, secret: str
) -> Child:
    """Viewer process ``i``: ``count`` viewers, viewer j in room ``w(j % rooms)``."""
    return await Child.start(
        f"viewers-{i}",
        "loadtest.viewers",
        [
            "--port", str(port), "--room", "w", "--rooms", str(args.rooms),
            f"--secret={secret}", "--first", str(i * count), "--count", str(count),
            "--sample-every", "50",
        ],
    )  # fmt: skip


def median_of(results: list[Result], workers: int) -> Result:
    """The run with the median frames/s among those with ``workers``."""
    runs = sorted((r for r in results if r.workers == workers), key=lambda r: r.frames_rx)
    return runs[(len(runs) - 1) // 2]


def per_core(r: Result) -> float:
    """Frames delivered per second of gateway CPU (all workers): the work's unit cost."""
    return r.frames_rx / max(r.gateway_cpu / 100, 1e-9)


def table(args: argparse.Namespace, results: list[Result]) -> list[str]:
    ceiling = args.viewers * 1000 / args.tick_ms
    out = [
        "| workers | runs | frames/s delivered (median) | of the tick's ceiling | events/s "
        "| gateway CPU (all workers, % of a core) | frames per gateway CPU-second "
        "| machine CPU | latency p50 / p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in sorted({r.workers for r in results}):
        m = median_of(results, k)
        n = sum(1 for r in results if r.workers == k)
        lat = f"{m.latency.p50_ms:.0f} / {m.latency.p99_ms:.0f} ms" if m.latency else "-"
        out.append(
            f"| {k} | {n} | {m.frames_rx:,.0f} | {m.frames_rx / ceiling:.0%} | "
            f"{m.events_rx:,.0f} | {m.gateway_cpu:.0f}% | {per_core(m):,.0f} | "
            f"{m.machine_cpu:.0f}% of {100 * (psutil.cpu_count() or 1)}% | {lat} |"
        )
    return out


def markdown(args: argparse.Namespace, command: str, results: list[Result]) -> str:
    one, two = median_of(results, 1), median_of(results, 2)
    each = ", ".join(f"{r.workers}: {r.frames_rx:,.0f}" for r in results)
    m = machine_info()
    lines = [
        f"<!-- {TAG}:begin (generated by loadtest/workers.py; edit the text outside) -->",
        f"`{command}`",
        "",
        f"{args.viewers:,} viewers in {args.rooms} rooms, {args.rate} danmaku/s into each room "
        f"({args.rate * args.rooms:,}/s in all; {one.offered:,.0f} deliveries/s offered; the "
        f"tick allows at most {args.viewers * 1000 / args.tick_ms:,.0f} frames/s), "
        f"{args.seconds:.0f} s windows, runs alternated; machine: {m['cpu']}, "
        f"{m['cpus']} CPUs (load average before: {m['load']}), shared by the gateways, "
        f"{args.clients} viewer processes, Redis and the publisher; code "
        f"{code_version(ROOT)}, {time.strftime('%Y-%m-%d')}.",
        "",
        *table(args, results),
        "",
        f"**Scaling 1 -> 2 workers: {two.frames_rx / one.frames_rx:.2f}x frames/s delivered; "
        f"{per_core(two) / per_core(one):.2f}x frames per gateway CPU-second** (medians; every "
        f"run, workers: frames/s: {each}).",
        f"<!-- {TAG}:end -->",
    ]
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace, command: str) -> list[Result]:
    raise_nofile()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="liveroom-workers-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        secret = secrets.token_urlsafe(32)
        redis = connect(server.url)
        store = RoomStore(redis)
        for r in range(args.rooms):
            await store.create(NewRoom(RoomId(f"w{r}"), "workers benchmark"), owner="bench")
            await store.set_status(RoomId(f"w{r}"), RoomStatus.LIVE)
        await redis.aclose()
        try:
            for _ in range(args.repeats):
                for k in (1, 2):
                    r = await one_run(args, k, server.url, secret)
                    print(
                        f"workers={k}: {r.frames_rx:,.0f} frames/s, {r.events_rx:,.0f} events/s, "
                        f"gateways {r.gateway_cpu:.0f}% CPU, machine {r.machine_cpu:.0f}%",
                        flush=True,
                    )
                    results.append(r)
        finally:
            server.stop()
    print("\n".join(table(args, results)))
    if args.write_md:
        put_section(Path(args.write_md), TAG, SECTION, markdown(args, command, results))
        print(f"wrote {args.write_md}")
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.workers", description=__doc__.splitlines()[0]
    )
    p.add_argument("--viewers", type=int, default=6000)
    p.add_argument("--rooms", type=int, default=60, help="rooms the viewers spread over")
    p.add_argument("--rate", type=int, default=20, help="danmaku per second into EACH room")
    p.add_argument("--clients", type=int, default=2, help="viewer processes")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window of each run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3, help="runs of each worker count")
    p.add_argument("--tick-ms", type=int, default=50)
    p.add_argument("--write-md", help="rewrite this section of the file (docs/BENCHMARKS.md)")
    return p.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    cli = parse()
    uvloop.run(main(cli, "python -m loadtest.workers " + shlex.join(sys.argv[1:])))
