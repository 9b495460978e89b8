"""Memory per idle connection: one gateway process against a bare websockets server.

    python -m loadtest.memory [--connections 10000] [--clients 2] [--write-md [PATH]]

In ONE run, on the same machine, with the same client processes (``loadtest.sales buyers``: raw
sockets that upgrade, read `welcome`, then only answer pings):

1. the raw limit: a bare ``websockets`` server (the library's defaults but compression off, like
   ours) whose handler sends a `welcome`-sized message and waits for the connection to end;
2. the gateway as it runs in production (``python -m runtime.cli serve --role gateway``): every
   connection a full viewer of one free room;
3. the breakdown: the same gateway in ``loadtest.gateway_proc`` with ``tracemalloc`` on from the
   start, the same number of connections, and the Python allocations still alive per
   connection, by the source line that made them.

RSS and USS are read from ``/proc`` (psutil) once the connections are all open and the process
has been idle for ``--settle`` seconds; per connection = (after - before) / connections, where
"before" is the process with one connection opened and closed (imports and pools warm). Kernel
socket buffers are not in a process's RSS and are not counted. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from engine.ids import RoomId
from engine.rooms import NewRoom, RoomStore
from engine.store import connect
from loadtest.children import ROOT, Child, raise_nofile, start_server, stop_server
from loadtest.handshake import BARE_SERVER
from loadtest.report import code_version, machine_info, put_section
from runtime.redis_server import RedisServer, free_port

SECRET = "memory-bench-secret-0123456789abcdef-0123456789"
ROOM = RoomId("memory-bench")


@dataclass(frozen=True, slots=True)
class Measured:
    name: str
    connections: int
    rss_before: int
    rss_after: int
    uss_before: int
    uss_after: int
    connect_s: float

    @property
    def rss_per_conn(self) -> float:
        return (self.rss_after - self.rss_before) / max(1, self.connections)

    @property
    def uss_per_conn(self) -> float:
        return (self.uss_after - self.uss_before) / max(1, self.connections)


def _mem(pid: int) -> tuple[int, int]:
    info = psutil.Process(pid).memory_full_info()
    return info.rss, info.uss


async def _open(port: int, n: int, clients: int) -> tuple[list[Child], float, int]:
    per = -(-n // clients)
    t0 = time.monotonic()
    children = []
    for i in range(clients):
        count = min(per, n - i * per)
        argv = (
            f"buyers --port {port} --room {ROOM} --secret {SECRET} --first {i * per} "
            f"--count {count} --tag {chr(ord('a') + i)}"
        )
        children.append(await Child.start(f"clients-{i}", "loadtest.sales", argv.split()))
    ready = [await c.read(timeout=300) for c in children]
    return children, time.monotonic() - t0, sum(r["ready"] for r in ready)


async def _close(children: list[Child]) -> None:
    for c in children:
        await c.stop()


async def _warm(port: int) -> None:
    """One connection opened and closed: imports, pools and caches are warm before 'before'."""
    children, _, _ = await _open(port, 1, 1)
    await _close(children)
    await asyncio.sleep(0.5)


async def measure(name: str, pid: int, port: int, args: argparse.Namespace) -> Measured:
    await _warm(port)
    rss0, uss0 = _mem(pid)
    children, took, ready = await _open(port, args.connections, args.clients)
    try:
        await asyncio.sleep(args.settle)
        rss1, uss1 = _mem(pid)
    finally:
        await _close(children)
    m = Measured(name, ready, rss0, rss1, uss0, uss1, took)
    print(
        f"{name}: {ready:,} connections in {took:.1f} s; RSS {m.rss_per_conn / 1024:.1f} KiB, "
        f"USS {m.uss_per_conn / 1024:.1f} KiB per connection",
        flush=True,
    )
    return m


async def breakdown(redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PYTHONTRACEMALLOC": "1"}
    cmd = [sys.executable, "-m", "loadtest.gateway_proc", "--redis-url", redis_url]
    cmd += ["--port", str(port), "--secret", SECRET]
    proc = await start_server(cmd, env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        await _warm(port)
        proc.stdin.write(b"mem-mark\n")
        await proc.stdin.drain()
        await proc.stdout.readline()
        children, _, ready = await _open(port, args.connections, args.clients)
        try:
            await asyncio.sleep(args.settle)
            proc.stdin.write(b"mem-diff %d\n" % args.top)
            await proc.stdin.drain()
            out = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
        finally:
            await _close(children)
        out["connections"] = ready
        return out
    finally:
        proc.stdin.write(b"quit\n")
        with contextlib.suppress(Exception):
            await proc.stdin.drain()
        await stop_server(proc)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="lr-memory-"))
    server = RedisServer(tmp / "redis", appendonly=False).start()
    results: list[Measured] = []
    try:
        redis = connect(server.url)
        await RoomStore(redis).create(NewRoom(ROOM, "memory benchmark"), "bench")
        await redis.aclose()

        bare_port = free_port()
        bare = await start_server(
            [sys.executable, "-c", BARE_SERVER, str(bare_port)], dict(os.environ), quiet=True
        )
        try:
            results.append(await measure("bare websockets (raw limit)", bare.pid, bare_port, args))
        finally:
            await stop_server(bare)

        port = free_port()
        env = {
            **os.environ,
            "LIVEROOM_SECRET": SECRET,
            "LIVEROOM_LOG_LEVEL": "WARNING",
            "LIVEROOM_MAX_CONNECTIONS": "100000",
        }
        cmd = [sys.executable, "-m", "runtime.cli", "serve", "--role", "gateway"]
        cmd += ["--redis-url", server.url, "--ws-port", str(port)]
        gw = await start_server(cmd, env)
        try:
            results.append(await measure("gateway (liveroom serve)", gw.pid, port, args))
        finally:
            await stop_server(gw)
        parts = await breakdown(server.url, args) if args.top else None
    finally:
        server.stop()
    return {"results": results, "breakdown": parts}


def _kib(b: float) -> str:
    return f"{b / 1024:.1f} KiB"


def table(report: dict[str, Any]) -> list[str]:
    rows: list[Measured] = report["results"]
    lines = [
        "| server | connections | connect s | RSS per connection | USS per connection |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in rows:
        lines.append(
            f"| {m.name} | {m.connections:,} | {m.connect_s:.1f} | {_kib(m.rss_per_conn)} "
            f"| {_kib(m.uss_per_conn)} |"
        )
    if len(rows) == 2 and rows[0].rss_per_conn:
        lines += [
            "",
            f"- gateway / bare websockets, RSS per connection: "
            f"{rows[1].rss_per_conn / rows[0].rss_per_conn:.2f}x",
        ]
    parts = report.get("breakdown")
    if parts:
        n = max(1, parts["connections"])
        lines += [
            "",
            f"Python allocations alive per connection (tracemalloc, {parts['connections']:,} "
            f"connections): {_kib(parts['total'] / n)} in all; the largest sources:",
            "",
            "| source line | per connection | blocks per connection |",
            "|---|---:|---:|",
        ]
        for where, size, count in parts["top"]:
            lines.append(f"| `{where}` | {size / n:,.0f} B | {count / n:.1f} |")
    return lines


BEGIN = "<!-- memory:begin (generated by loadtest.memory; edits inside are overwritten) -->"
END = "<!-- memory:end -->"
SECTION = "## Memory per idle connection"


def markdown(report: dict[str, Any], command: str, started: str, machine: dict[str, str]) -> str:
    return "\n".join(
        [
            BEGIN,
            "```",
            command,
            "```",
            "",
            f"Run {started} at commit {code_version(ROOT)}. Machine: {machine['cpus']} CPUs "
            f"({machine['cpu']}), Linux {machine['kernel']}, Python {machine['python']}, "
            f"websockets {machine['websockets']}. Idle connections (`welcome` read, then "
            "nothing but pings), one user each, one free room; per connection = growth of the "
            "server process after the connections opened, over the count. Kernel socket "
            "buffers are outside RSS.",
            "",
            *table(report),
            END,
        ]
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--settle", type=float, default=3.0, help="idle seconds before reading")
    p.add_argument("--top", type=int, default=15, help="breakdown rows (0: no breakdown)")
    p.add_argument(
        "--write-md", nargs="?", const="docs/BENCHMARKS.md", default=None, metavar="PATH"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    raise_nofile()
    import uvloop

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = machine_info()
    report = uvloop.run(run(args))
    print("\n".join(table(report)))
    if args.write_md:
        path = Path(args.write_md)
        path = path if path.is_absolute() else ROOT / path
        command = "python -m loadtest.memory " + shlex.join(argv)
        put_section(path, "memory", SECTION, markdown(report, command.strip(), started, machine))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
