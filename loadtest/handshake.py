"""Handshake benchmark: connections accepted per second by one gateway process, free vs paid.

    python -m loadtest.handshake [--connections 3000] [--concurrency 64] [--rounds 2]

Every connection is a full viewer join: TCP connect, WebSocket upgrade with a bearer token,
token verification, room lookup, the entitlement check (a paid room adds one pipelined Redis
round trip: ticket + membership), the stream head, `welcome`, then a normal close. Free and paid
rooms are measured in alternating rounds of one run against the same gateway process, beside
the raw limit of the library on this machine: a bare `websockets` server (same settings, no
auth, no Redis) that sends a `welcome`-sized message. Client load comes from two processes.
Nothing here asserts; it prints a table (and markdown with ``--markdown``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SECRET = "handshake-bench-secret-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def _client_worker(args: tuple[str, list[str], int]) -> tuple[int, int, float, float]:
    """Open one connection per token (``concurrency`` at a time); return (ok, failed, secs, cpu)."""
    url, tokens, concurrency = args
    import uvloop
    from websockets.asyncio.client import connect

    async def run() -> tuple[int, int, float]:
        sem = asyncio.Semaphore(concurrency)
        ok = failed = 0

        async def one(tok: str) -> None:
            nonlocal ok, failed
            async with sem:
                try:
                    async with connect(
                        url,
                        additional_headers={"Authorization": f"Bearer {tok}"},
                        compression=None,
                        open_timeout=30,
                    ) as ws:
                        await ws.recv()
                    ok += 1
                except Exception:
                    failed += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(t) for t in tokens))
        return ok, failed, time.perf_counter() - t0

    c0 = time.process_time()
    ok, failed, secs = uvloop.run(run())
    return ok, failed, secs, time.process_time() - c0


BARE_SERVER = """
import asyncio, sys, uvloop
from websockets.asyncio.server import serve
WELCOME = b'[' + b'x' * 400 + b']'
async def handler(ws):
    await ws.send(WELCOME)
    async for _ in ws:
        pass
async def main():
    # the gateway's listen backlog (Settings.ws_backlog), so both queue alike
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None, backlog=4096):
        print("ready", flush=True)
        await asyncio.Future()
uvloop.run(main())
"""


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == b"ready":
            return
    raise RuntimeError("server did not start")


def _phase(pool, url: str, tokens: list[str], concurrency: int, server: psutil.Process) -> dict:
    halves = [tokens[0::2], tokens[1::2]]
    cpu0 = server.cpu_times()
    t0 = time.perf_counter()
    results = pool.map(_client_worker, [(url, h, concurrency // 2) for h in halves])
    wall = time.perf_counter() - t0
    cpu1 = server.cpu_times()
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "ok": ok,
        "failed": failed,
        "wall": wall,
        "rate": ok / wall,
        "server_cpu_pct": 100 * server_cpu / wall,
        "server_cpu_ms_per_conn": 1000 * server_cpu / max(ok, 1),
        "client_cpu_pct": 100 * sum(r[3] for r in results) / wall,
    }


async def _setup(redis_url: str, n: int) -> tuple[list[str], list[str]]:
    from engine.access import EntitlementCheck
    from engine.ids import RoomId
    from engine.rooms import Access, NewRoom, RoomStore
    from engine.store import connect
    from engine.tokens import issue

    redis = connect(redis_url)
    rooms = RoomStore(redis)
    await rooms.create(NewRoom(RoomId("free"), "free room"), "bench")
    await rooms.create(
        NewRoom(RoomId("paid"), "paid room", Access("paid", 100, ("vip",), 0)), "bench"
    )
    check = EntitlementCheck(redis)
    users = [f"u{i}" for i in range(n)]
    for i in range(0, n, 200):
        await asyncio.gather(
            *(check.grant_ticket(RoomId("paid"), u, None) for u in users[i : i + 200])
        )
    tokens = [issue(SECRET, u, "viewer", ttl_s=3600) for u in users]
    await redis.aclose()
    return tokens, tokens[:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=3000, help="connections per round")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)

    from runtime.redis_server import RedisServer, free_port

    tmp = Path(tempfile.mkdtemp(prefix="lr-handshake-"))
    redis = RedisServer(tmp / "redis", appendonly=False).start()
    ws_port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "LIVEROOM_SECRET": SECRET,
        "LIVEROOM_LOG_LEVEL": "WARNING",
        # a handshake benchmark, not a test of the per-process connection cap
        "LIVEROOM_MAX_CONNECTIONS": "100000",
    }
    gw = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "serve",
            "--role",
            "gateway",
            "--redis-url",
            redis.url,
            "--ws-port",
            str(ws_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(bare_port)], stdout=subprocess.PIPE
    )
    try:
        _wait_ready(gw)
        _wait_ready(bare)
        tokens, _ = asyncio.run(_setup(redis.url, args.connections))
        gw_ps, bare_ps = psutil.Process(gw.pid), psutil.Process(bare.pid)
        rows: dict[str, list[dict]] = {
            "bare websockets (raw limit)": [],
            "free room": [],
            "paid room (ticket)": [],
        }
        with mp.get_context("spawn").Pool(2) as pool:
            # warm-up: worker imports, first connections (not counted)
            _phase(pool, f"ws://127.0.0.1:{bare_port}/", tokens[:100], 16, bare_ps)
            _phase(pool, f"ws://127.0.0.1:{ws_port}/ws/rooms/free", tokens[:100], 16, gw_ps)
            for _ in range(args.rounds):
                rows["bare websockets (raw limit)"].append(
                    _phase(pool, f"ws://127.0.0.1:{bare_port}/", tokens, args.concurrency, bare_ps)
                )
                rows["free room"].append(
                    _phase(
                        pool,
                        f"ws://127.0.0.1:{ws_port}/ws/rooms/free",
                        tokens,
                        args.concurrency,
                        gw_ps,
                    )
                )
                rows["paid room (ticket)"].append(
                    _phase(
                        pool,
                        f"ws://127.0.0.1:{ws_port}/ws/rooms/paid",
                        tokens,
                        args.concurrency,
                        gw_ps,
                    )
                )
        report(rows, args)
    finally:
        for proc in (gw, bare):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.stop()
    return 0


def report(rows: dict[str, list[dict]], args: argparse.Namespace) -> None:
    def best(phases: list[dict]) -> dict:
        return max(phases, key=lambda r: r["rate"])

    raw = best(rows["bare websockets (raw limit)"])["rate"]
    lines = [
        f"connections per round: {args.connections}, in flight: {args.concurrency}, "
        f"rounds: {args.rounds} (best round shown), cpus: {os.cpu_count()}",
        "",
        "| server | accepted/s | vs raw | server CPU | server CPU ms/conn | client CPU | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, phases in rows.items():
        b = best(phases)
        lines.append(
            f"| {name} | {b['rate']:,.0f} | {b['rate'] / raw:.2f} | {b['server_cpu_pct']:.0f}% "
            f"| {b['server_cpu_ms_per_conn']:.2f} | {b['client_cpu_pct']:.0f}% "
            f"| {sum(p['failed'] for p in phases)} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
