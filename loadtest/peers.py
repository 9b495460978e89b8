"""Fan-out against the peers: the liveroom gateway, the raw write limit, python-socketio and
Node Socket.IO, side by side in ONE run on one machine.

    python -m loadtest.peers [--viewers 1000,5000,10000] [--rate 500] [--seconds 8]
                             [--repeats 3] [--write-md docs/BENCHMARKS.md]

For each N in ``--viewers`` and each repeat, one system after the other, on one private
redis-server (flushed between systems), N viewers in one room:

1. ours: ``loadtest.gateway_proc`` (the production gateway under uvloop, as ``loadtest.fanout``
   runs it), ``loadtest.viewers`` raw-socket viewers, danmaku published into the room's stream
   with ``engine.bus.RoomBus.publish`` from this process (``loadtest.fanout.Publisher``);
2. the raw limit, on the same connections right after: gateway_proc's ``raw`` command writes
   one pre-encoded frame (as many events as the fan-out's mean frame) with ``transport.write``
   to every connection as fast as the viewers take it. Its memory figure is the bare
   ``websockets`` server of ``loadtest.memory`` (``loadtest.handshake.BARE_SERVER``) holding N
   idle ``loadtest.viewers`` connections;
3. python-socketio: ``loadtest/peers/sio_server.py`` (``AsyncServer`` + ``AsyncRedisManager``,
   ASGI under uvicorn), events emitted from outside it through Redis pub/sub by
   ``loadtest/peers/sio_publisher.py`` (``AsyncRedisManager(write_only=True).emit``);
4. Node Socket.IO 4 with ``@socket.io/redis-streams-adapter``: ``loadtest/peers/node/
   server.js``, events XADDed to the adapter's stream by ``loadtest/peers/node/publisher.js``
   (a Socket.IO server listening on nothing, with the same adapter).

Peers 3 and 4 are read by ``loadtest.sio_viewers`` (built like ``loadtest.viewers``: raw
sockets on uvloop, thousands per process). Every system gets the same offered rate
(``--rate`` events/s), warm-up, measured window (``--seconds``) and load-generator processes
(``--clients``). The peers are installed from the registries, pinned, into ``.peers/``
(``loadtest/peers/requirements.txt``; ``loadtest/peers/node/package-lock.json``) on the
first run and reused after.

Measured, in the window after the warm-up: events and frames per second the viewers received
(summed over the load-generator processes); publish-to-deliver latency p50/p99/p999 (``now -
ts`` at 1 viewer in ``--sample-every``, ``ts`` stamped by the publisher); CPU (% of one core)
of the server process, of each load-generator process (the busiest near 100% means the load
generator, not the server, was the bound), of the publisher, of redis-server and of the whole
machine; delivered events/s per server core (events/s / server CPU). Before any publishing:
RSS per idle connection, the server's RSS after N connected and ``--settle`` s idle minus its
RSS before (after a few warm-up connections opened and closed), over the connections made. A
peer that cannot connect N within ``--connect-timeout`` is measured with what it reached.
Each figure in the table is the median of its repeats. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import math
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import psutil
from redis.asyncio import Redis

from engine.bus import RoomBus
from engine.ids import RoomId
from engine.rooms import NewRoom, RoomStatus, RoomStore
from engine.settings import Settings
from engine.store import connect
from engine.tokens import issue
from loadtest import sio_viewers, viewers
from loadtest.children import ROOT, Child, CpuClock, CpuSample, cpu_percent, raise_nofile
from loadtest.fanout import Publisher, per_second, samples
from loadtest.handshake import BARE_SERVER
from loadtest.report import (
    EVENTS_PER_CORE_AIM,
    Latency,
    code_version,
    machine_info,
    put_section,
)
from runtime.redis_server import RedisServer, free_port

ROOM = RoomId("peers-bench")
TAG = "peers"
SECTION = "## Fan-out against the peers (python-socketio, Node Socket.IO)"
SRC = ROOT / "loadtest" / "peers"
PEERS = ROOT / ".peers"
VENV_PY = PEERS / "venv" / "bin" / "python"
NODE_DIR = PEERS / "node"
SYSTEMS = ("ours", "raw", "python-socketio", "node")
NAMES = {
    "ours": "**liveroom gateway**",
    "raw": "raw limit",
    "python-socketio": "python-socketio",
    "node": "Node Socket.IO",
}
WARM = 16
"""Connections opened and closed before the "before" RSS (imports, pools, JIT warm)."""
WATCHDOG = (
    "import os, sys, threading\n"
    "threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n"
)
"""Prepended to BARE_SERVER: it exits when its stdin ends, like every other child."""


# -- installing the peers ------------------------------------------------------------------


def _fresh(stamp: Path, want: str) -> bool:
    return stamp.exists() and stamp.read_text() == want


def install() -> None:
    """The pinned peers into ``.peers/`` (a venv; node_modules), unless already there."""
    req = (SRC / "requirements.txt").read_text()
    stamp = PEERS / "venv" / ".liveroom-requirements"
    if not _fresh(stamp, req):
        print("installing python-socketio into .peers/venv ...", flush=True)
        if not VENV_PY.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS / "venv")], check=True)
        pip = [str(VENV_PY), "-m", "pip", "install", "-q", "-r", str(SRC / "requirements.txt")]
        subprocess.run(pip, check=True)
        stamp.write_text(req)
    files = ("package.json", "package-lock.json")
    want = "".join((SRC / "node" / f).read_text() for f in files)
    stamp = NODE_DIR / ".liveroom-packages"
    if not (_fresh(stamp, want) and (NODE_DIR / "node_modules").is_dir()):
        print("installing Socket.IO into .peers/node ...", flush=True)
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(SRC / "node" / f, NODE_DIR / f)
        npm = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        subprocess.run(npm, cwd=NODE_DIR, check=True)
        stamp.write_text(want)


def versions() -> dict[str, str]:
    """The versions actually installed, by package."""
    names = ["python-socketio", "python-engineio", "uvicorn", "httptools", "websockets", "redis"]
    code = "import importlib.metadata as m, json, sys; print(json.dumps({p: m.version(p) for p in "
    code += f"{names!r}}}))"
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True, check=True)
    found: dict[str, str] = {f"py:{k}": v for k, v in json.loads(out.stdout).items()}
    for pkg in ("socket.io", "engine.io", "ws", "@socket.io/redis-streams-adapter", "redis"):
        meta = json.loads((NODE_DIR / "node_modules" / pkg / "package.json").read_text())
        found[f"node:{pkg}"] = meta["version"]
    found["node"] = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return found


# -- processes -----------------------------------------------------------------------------


async def spawn(
    name: str, argv: list[str], env: dict[str, str] | None = None, *, quiet: bool = False
) -> Child:
    """A peer-side child (any executable) with the JSON-lines conversation of ``Child``. It has
    a session of its own, so Ctrl-C reaches only the harness, which then stops it. ``quiet``:
    its stderr is dropped (a bare server's tracebacks for aborted clients)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL if quiet else None,
        cwd=ROOT,
        env=env,
        limit=1024 * 1024,
        start_new_session=True,
    )
    return Child(name, proc)


def node_env() -> dict[str, str]:
    return {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}


def shares(n: int, parts: int) -> list[tuple[int, int]]:
    """(first, count) of each of ``parts`` load-generator processes."""
    out, first = [], 0
    for i in range(parts):
        count = n // parts + (i < n % parts)
        out.append((first, count))
        first += count
    return [s for s in out if s[1]]


@dataclass(frozen=True, slots=True)
class Connected:
    """The load generators once their connections are open, and what that cost the server."""

    viewers: list[Child]
    live: int
    failed: dict[str, int]
    connect_s: float
    rss_per_conn: float
    """Bytes of server RSS per connection: (after - before) / live."""


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def connect_measured(
    ctx: Ctx,
    stack: AsyncExitStack,
    server_pid: int,
    warm: Callable[[], Awaitable[None]],
    module: str,
    argv: Callable[[int, int], list[str]],
) -> Connected:
    """Warm the server, read its RSS, open the viewers, let it idle, read its RSS again."""
    await warm()
    await asyncio.sleep(0.5)
    before = rss(server_pid)
    t0 = time.monotonic()
    children = []
    for i, (first, count) in enumerate(shares(ctx.n, ctx.args.clients)):
        child = await Child.start(f"{module}-{i}", module, argv(first, count))
        stack.push_async_callback(child.stop)
        children.append(child)
    ready = await asyncio.gather(*(c.read(ctx.args.connect_timeout + 120) for c in children))
    connect_s = time.monotonic() - t0
    live = sum(r["ready"] for r in ready)
    failed: dict[str, int] = {}
    for r in ready:
        for why, k in r["failed"].items():
            failed[why] = failed.get(why, 0) + k
    await asyncio.sleep(ctx.args.settle)
    per = (rss(server_pid) - before) / live if live else math.nan
    print(
        f"  {live:,} connected in {connect_s:.1f} s, {per / 1024:.1f} KiB RSS each"
        + (f"; failed: {failed}" if failed else ""),
        flush=True,
    )
    return Connected(children, live, failed, connect_s, per)


# -- one measured window -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """What the viewers received per second in one window, and what it cost."""

    seconds: float
    events_rx: float
    frames_rx: float
    published: float
    """Events per second the publisher sent in the window."""
    latency: Latency | None
    cpu: dict[str, float]
    """% of one core by role: server, publisher, redis, loadgen-I, softirq, others, machine."""
    closes: dict[str, int] = field(default_factory=dict)
    lost: int = 0


class Pub(Protocol):
    pid: int

    async def start(self) -> None: ...
    async def sent(self) -> int: ...
    async def stop(self) -> None: ...


class OursPub:
    """``loadtest.fanout.Publisher`` in this process: ``RoomBus.publish`` into the room."""

    def __init__(self, redis: Redis, settings: Settings, rate: float) -> None:
        self.publisher = Publisher(RoomBus(redis, settings), ROOM, rate)
        self.task: asyncio.Task[None] | None = None
        self.pid = os.getpid()

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.publisher.run())

    async def sent(self) -> int:
        return self.publisher.sent

    async def stop(self) -> None:
        self.publisher.stopping = True  # a flag, never a cancel (see Publisher)
        if self.task is not None:
            with suppress(Exception):  # Ctrl-C reaches redis-server too: it may be gone
                await asyncio.wait_for(self.task, 30)


class ChildPub:
    """A publisher process (``sio_publisher.py``, ``publisher.js``) driven by its commands."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.pid = child.pid

    async def start(self) -> None:
        await self.child.ask("start")

    async def sent(self) -> int:
        return int((await self.child.ask("snap"))["sent"])

    async def stop(self) -> None:
        await self.child.ask("stop")


class Clock(CpuClock):
    """``CpuClock`` with the machine's softirq time as a role of its own: mostly the kernel's
    work for loopback TCP. The kernel may also charge part of it to the process it interrupted,
    so the roles can add up to more than the machine's busy time."""

    def read(self) -> CpuSample:
        s = super().read()
        return replace(s, by_role={**s.by_role, "softirq": psutil.cpu_times().softirq})


def clock_for(ctx: Ctx, server: int, publisher: int, loadgen: list[Child]) -> CpuClock:
    roles = {"server": [server], "publisher": [publisher], "redis": [ctx.redis_pid]}
    roles |= {f"loadgen-{i}": [c.pid] for i, c in enumerate(loadgen)}
    return Clock(roles)


async def snap_all(children: list[Child]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(c.ask("snap") for c in children)))


def window(
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    ca: CpuSample,
    cb: CpuSample,
    published: int,
    timed: bool,
) -> Window:
    """The figures between two snapshots of every load generator and of the CPU clock."""
    codes: dict[str, int] = {}
    for x, y in zip(a, b, strict=True):
        for code, k in y["closes"].items():
            if k - x["closes"].get(code, 0):
                codes[code] = codes.get(code, 0) + k - x["closes"].get(code, 0)
    seconds = cb.t - ca.t
    return Window(
        seconds=seconds,
        events_rx=per_second(a, b, "events"),
        frames_rx=per_second(a, b, "frames"),
        published=published / seconds,
        latency=Latency.of(samples([v["lat_ms"] for v in b])) if timed else None,
        cpu=cpu_percent(ca, cb),
        closes=codes,
        lost=sum(y["lost"] - x["lost"] for x, y in zip(a, b, strict=True)),
    )


async def measure(ctx: Ctx, children: list[Child], clock: CpuClock, pub: Pub) -> Window:
    """Publish at the rate; after the warm-up, the window of ``--seconds``."""
    await pub.start()
    await asyncio.sleep(ctx.args.warmup)
    ca, sa, pa = clock.read(), await snap_all(children), await pub.sent()
    await asyncio.sleep(ctx.args.seconds)
    cb, sb, pb = clock.read(), await snap_all(children), await pub.sent()
    await pub.stop()
    return window(sa, sb, ca, cb, pb - pa, timed=True)


async def settle(children: list[Child], quiet_s: float = 0.5, limit_s: float = 30.0) -> None:
    """Wait until the viewers receive nothing more (every frame sent is read)."""
    last = sum(v["frames"] for v in await snap_all(children))
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = sum(v["frames"] for v in await snap_all(children))
        if now == last:
            return
        last = now


# -- the systems ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    system: str
    viewers: int
    connected: int
    connect_s: float
    rss_per_conn: float
    failed: dict[str, int]
    window: Window | None


@dataclass
class Ctx:
    """What every system's run shares."""

    args: argparse.Namespace
    server: RedisServer
    redis: Redis
    secret: str
    n: int = 0

    @property
    def redis_pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid


async def warm_ours(port: int, secret: str) -> None:
    """A few liveroom connections opened and closed (users of their own)."""
    totals = viewers.Totals()
    opened = []
    for i in range(WARM):
        token = issue(secret, f"warm-{i}", ttl_s=600)
        opened.append(
            await viewers.open_viewer("127.0.0.1", port, ROOM, token, totals, False, 10.0)
        )
    for v in opened:
        v.transport.abort()  # type: ignore[union-attr]


def ours_viewer_args(ctx: Ctx, port: int) -> Callable[[int, int], list[str]]:
    a = ctx.args
    return lambda first, count: [
        "--port", str(port), "--room", ROOM, f"--secret={ctx.secret}", "--first", str(first),
        "--count", str(count), "--sample-every", str(a.sample_every),
        "--concurrency", str(a.concurrency),
    ]  # fmt: skip


async def reset(ctx: Ctx) -> None:
    """An empty Redis with the live room (each system starts from the same state)."""
    await ctx.redis.flushall()
    store = RoomStore(ctx.redis)
    await store.create(NewRoom(ROOM, "peers benchmark"), owner="bench")
    await store.set_status(ROOM, RoomStatus.LIVE)


async def run_ours(ctx: Ctx) -> tuple[Result, Result]:
    """Ours, then the raw limit on the same connections (memory filled in by ``run_bare``)."""
    a = ctx.args
    await reset(ctx)
    port = free_port()
    async with AsyncExitStack() as stack:
        gw = await Child.start(
            "gateway",
            "loadtest.gateway_proc",
            ["--redis-url", ctx.server.url, "--port", str(port), f"--secret={ctx.secret}",
             "--tick-ms", str(a.tick_ms)],
        )  # fmt: skip
        stack.push_async_callback(gw.stop)
        await gw.read(60)
        conn = await connect_measured(
            ctx, stack, gw.pid, lambda: warm_ours(port, ctx.secret), "loadtest.viewers",
            ours_viewer_args(ctx, port),
        )  # fmt: skip
        settings = Settings(redis_url=ctx.server.url, tick_ms=a.tick_ms)
        pub = OursPub(ctx.redis, settings, a.rate)
        stack.push_async_callback(pub.stop)
        clock = clock_for(ctx, gw.pid, pub.pid, conn.viewers)
        fan = await measure(ctx, conn.viewers, clock, pub)
        events = max(1, round(fan.events_rx / fan.frames_rx)) if fan.frames_rx else 1
        await settle(conn.viewers)
        ca, sa = clock.read(), await snap_all(conn.viewers)
        await gw.ask(f"raw {a.seconds} {ROOM} {events} {a.raw_high_water}", timeout=a.seconds + 120)
        raw = window(sa, await snap_all(conn.viewers), ca, clock.read(), 0, timed=False)
    ours = Result("ours", ctx.n, conn.live, conn.connect_s, conn.rss_per_conn, conn.failed, fan)
    return ours, replace(ours, system="raw", rss_per_conn=math.nan, window=raw)


async def run_bare(ctx: Ctx) -> float:
    """RSS per idle connection of a bare websockets server (the raw limit for memory)."""
    port = free_port()
    async with AsyncExitStack() as stack:
        argv = [sys.executable, "-c", WATCHDOG + BARE_SERVER, str(port)]
        bare = await spawn("bare", argv, quiet=True)
        stack.push_async_callback(bare.stop, 5.0)
        assert bare.proc.stdout is not None
        await asyncio.wait_for(bare.proc.stdout.readline(), 60)  # "ready"
        conn = await connect_measured(
            ctx, stack, bare.pid, lambda: warm_ours(port, ctx.secret), "loadtest.viewers",
            ours_viewer_args(ctx, port),
        )  # fmt: skip
    return conn.rss_per_conn


async def warm_sio(port: int) -> None:
    """A few Socket.IO connections opened and closed."""
    totals = viewers.Totals()
    opened = [
        await sio_viewers.open_viewer("127.0.0.1", port, totals, False, 10.0) for _ in range(WARM)
    ]
    for v in opened:
        v.transport.abort()  # type: ignore[union-attr]


def peer_commands(system: str, port: int, redis_url: str, rate: int) -> tuple[list[str], ...]:
    """(server argv, publisher argv) of a peer."""
    if system == "node":
        js = SRC / "node"
        return (
            ["node", str(js / "server.js"), str(port), redis_url, ROOM],
            ["node", str(js / "publisher.js"), redis_url, ROOM, str(rate)],
        )
    py = [str(VENV_PY)]
    return (
        [*py, str(SRC / "sio_server.py"), "--port", str(port), "--redis-url", redis_url]
        + ["--room", ROOM],
        [*py, str(SRC / "sio_publisher.py"), "--redis-url", redis_url, "--room", ROOM]
        + ["--rate", str(rate)],
    )


async def run_peer(ctx: Ctx, system: str) -> Result:
    """A Socket.IO peer: its server, its publisher, ``loadtest.sio_viewers``, one window."""
    a = ctx.args
    await ctx.redis.flushall()
    port = free_port()
    server_argv, pub_argv = peer_commands(system, port, ctx.server.url, a.rate)
    env = node_env() if system == "node" else None
    async with AsyncExitStack() as stack:
        server = await spawn(system, server_argv, env)
        stack.push_async_callback(server.stop, 5.0)
        await server.read(60)
        publisher = await spawn(f"{system}-publisher", pub_argv, env)
        stack.push_async_callback(publisher.stop, 5.0)
        await publisher.read(60)
        conn = await connect_measured(
            ctx, stack, server.pid, lambda: warm_sio(port), "loadtest.sio_viewers",
            lambda first, count: [
                "--port", str(port), "--first", str(first), "--count", str(count),
                "--sample-every", str(a.sample_every), "--concurrency", str(a.concurrency),
                "--connect-timeout", str(a.connect_timeout),
            ],
        )  # fmt: skip
        win = None
        if conn.live:
            clock = clock_for(ctx, server.pid, publisher.pid, conn.viewers)
            win = await measure(ctx, conn.viewers, clock, ChildPub(publisher))
    return Result(system, ctx.n, conn.live, conn.connect_s, conn.rss_per_conn, conn.failed, win)


# -- figures -------------------------------------------------------------------------------


def figures(r: Result, rate: int) -> dict[str, float]:
    """One run's figures, by name (NaN where a figure does not apply)."""
    w, nan = r.window, math.nan
    out = {"connected": float(r.connected), "connect_s": r.connect_s, "rss": r.rss_per_conn}
    if w is None:
        return out
    loadgen = [v for k, v in w.cpu.items() if k.startswith("loadgen-")]
    lat = w.latency
    server = w.cpu.get("server", 0.0)
    out |= {
        "events": w.events_rx,
        "frames": w.frames_rx,
        "offered": w.events_rx / (rate * r.connected) if r.system != "raw" else nan,
        "per_core": w.events_rx / (server / 100) if server > 0 else nan,
        "p50": lat.p50_ms if lat else nan,
        "p99": lat.p99_ms if lat else nan,
        "p999": lat.p999_ms if lat else nan,
        "server": server,
        "loadgen": sum(loadgen),
        "loadgen_max": max(loadgen, default=0.0),
        "publisher": w.cpu.get("publisher", 0.0) if r.system != "raw" else nan,
        "redis": w.cpu.get("redis", 0.0),
        "softirq": w.cpu.get("softirq", 0.0),
        "machine": w.cpu.get("machine", 0.0),
        "closed": float(sum(w.closes.values())),
        "lost": float(w.lost),
    }
    return out


def medians(results: list[Result], rate: int) -> dict[tuple[int, str], dict[str, float]]:
    """Per (N, system): the median of each figure over the repeats."""
    groups: dict[tuple[int, str], list[dict[str, float]]] = {}
    for r in results:
        groups.setdefault((r.viewers, r.system), []).append(figures(r, rate))
    out: dict[tuple[int, str], dict[str, float]] = {}
    for key, runs in groups.items():
        names = {k for f in runs for k in f}
        out[key] = {}
        for k in names:
            vals = [f[k] for f in runs if k in f and not math.isnan(f[k])]
            out[key][k] = statistics.median(vals) if vals else math.nan
    return out


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None or math.isnan(x) else format(x, fmt)


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def row(n: int, system: str, f: dict[str, float]) -> str:
    """One line of the table: one system at N viewers (medians of the repeats)."""
    nan = math.nan
    connected = f"{_f(f['connected'])} ({_f(f['connect_s'], '.1f')} s)"
    if f["connected"] < n:
        connected = f"**{connected}** of {n:,}"
    rss = f"{f['rss'] / 1024:.1f} KiB" if not math.isnan(f["rss"]) else "-"
    if system == "raw":
        rss += " (bare websockets)"
    lat = " / ".join(_ms(f.get(k, nan)) for k in ("p50", "p99", "p999"))
    offered = f.get("offered", nan)
    cells = [
        f"{n:,}",
        NAMES[system],
        connected,
        rss,
        _f(f.get("events", nan)),
        "-" if math.isnan(offered) else f"{offered:.1%}" if offered < 0.1 else f"{offered:.0%}",
        _f(f.get("frames", nan)),
        _f(f.get("per_core", nan)),
        lat if lat != "- / - / -" else "-",
        _f(f.get("server", nan)),
        f"{_f(f.get('loadgen', nan))} ({_f(f.get('loadgen_max', nan))})",
        " / ".join(_f(f.get(k, nan)) for k in ("publisher", "redis", "softirq", "machine")),
        f"{_f(f.get('closed', nan))} / {_f(f.get('lost', nan))}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = [
    "| viewers | system | connected (connect s) | RSS per idle connection | events/s delivered "
    "| of offered | frames/s | events/s per server core | latency ms p50 / p99 / p999 "
    "| server CPU % | load generator CPU % (busiest process) "
    "| publisher / Redis / kernel softirq / whole machine CPU % "
    "| closed / dropped |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def table(args: argparse.Namespace, med: dict[tuple[int, str], dict[str, float]]) -> list[str]:
    out = list(HEADER)
    for n in args.viewers:
        out += [row(n, s, med[(n, s)]) for s in SYSTEMS if (n, s) in med]
    return out


def _ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or not b:
        return "-"
    return f"{a / b:.2f}x" if a / b < 10 else f"{a / b:,.0f}x"


def aims(args: argparse.Namespace, med: dict[tuple[int, str], dict[str, float]]) -> list[str]:
    """Ours against its aims, and against the others, at each N."""
    aim = args.tick_ms + 100.0
    cores = 100.0 * (psutil.cpu_count() or 1)
    out = []
    for n in args.viewers:
        ours = med.get((n, "ours"))
        if ours is None:
            continue
        per_core, p99 = ours.get("per_core", math.nan), ours.get("p99", math.nan)
        core_ok = per_core >= EVENTS_PER_CORE_AIM
        out.append(
            f"{n:,} viewers, ours: {_f(per_core)} delivered events/s per gateway core (aim >= "
            f"{EVENTS_PER_CORE_AIM:,}: {'met' if core_ok else 'NOT met'}); "
            f"p99 {_ms(p99)} ms (aim <= tick + 100 = {aim:.0f} ms: "
            f"{'met' if p99 <= aim else 'NOT met'})"
        )
        idle = ours.get("server", 100.0) < 50.0 and ours.get("machine", 0.0) < 0.9 * cores
        if ours.get("offered", 0.0) >= 0.95 and idle:
            out[-1] += (
                f"; it delivered all it was offered on {ours['server']:.0f}% of a core, so the "
                "offered load, not the gateway, set this per-core figure"
            )
        ratios = []
        for s in ("raw", "python-socketio", "node"):
            if (n, s) in med:
                o = med[(n, s)]
                ev = _ratio(ours.get("events", math.nan), o.get("events", math.nan))
                ratios.append(f"/ {NAMES[s]}: events/s {ev}, RSS per connection ")
                ratios[-1] += _ratio(ours["rss"], o["rss"])
        if ratios:
            out.append(f"{n:,} viewers, ours " + "; ours ".join(ratios))
    return out


def bounds(
    args: argparse.Namespace, med: dict[tuple[int, str], dict[str, float]], results: list[Result]
) -> list[str]:
    """What bounded what: behind the offered rate, the load generator, the machine, connects."""
    cores = 100.0 * (psutil.cpu_count() or 1)
    behind, loadgen, busy = [], [], []
    for (n, s), f in sorted(med.items()):
        if f.get("offered", 1.0) < 0.95:
            behind.append(f"{NAMES[s]} at {n:,} ({f['offered']:.1%})")
        if f.get("loadgen_max", 0.0) >= 90.0:
            loadgen.append(f"{NAMES[s]} at {n:,} ({f['loadgen_max']:.0f}%)")
        if f.get("machine", 0.0) >= 0.9 * cores:
            busy.append(f"{NAMES[s]} at {n:,} ({f['machine']:.0f}%)")
    out = []
    if behind:
        out.append(
            "delivered less than offered (of offered in brackets), so it fell further behind "
            "through the window and its latency grows with the window's length: "
            + "; ".join(behind)
        )
    if loadgen:
        out.append(
            "the busiest load-generator process was near a full core, so the load generator "
            "may have been the bound: " + "; ".join(loadgen)
        )
    if busy:
        out.append(f"the machine was CPU-bound (of {cores:.0f}%): " + "; ".join(busy))
    short: dict[tuple[int, str], list[Result]] = {}
    for r in results:
        if r.connected < r.viewers and r.system != "raw":
            short.setdefault((r.viewers, r.system), []).append(r)
    for (n, s), runs in sorted(short.items()):
        got = ", ".join(f"{r.connected:,}" for r in runs)
        why = "; ".join(f"{k}: {v}" for r in runs for k, v in r.failed.items())
        out.append(
            f"{NAMES[s]} at {n:,}: {len(runs)} run(s) connected fewer within the "
            f"{args.connect_timeout:.0f} s connect phase ({got}); failures: {why or 'none'}"
        )
    return out


def markdown(
    args: argparse.Namespace,
    command: str,
    results: list[Result],
    meta: dict[str, Any],
) -> str:
    """The generated block of docs/BENCHMARKS.md (between the ``peers`` markers)."""
    m, v = meta["machine"], meta["versions"]
    med = medians(results, args.rate)
    raw_events = {
        n: max(1, round(f["events"] / f["frames"]))
        for (n, s), f in med.items()
        if s == "ours" and f.get("frames", 0) > 0
    }
    lines = [
        f"<!-- {TAG}:begin (generated by loadtest.peers; edits inside are overwritten) -->",
        "```",
        command,
        "```",
        "",
        f"Run {meta['when']} at commit {meta['code']}; the run took {meta['took'] / 60:.1f} min "
        f"(installs excluded). Machine: {m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}; "
        f"load average before the run {m['load']}. Each server, its {args.clients} "
        "load-generator processes, the publisher, redis-server and this harness share these "
        "CPUs.",
        "",
        f"Versions. Ours: Python {m['python']}, uvloop {m['uvloop']}, websockets "
        f"{m['websockets']}. python-socketio {v['py:python-socketio']} (python-engineio "
        f"{v['py:python-engineio']}), `AsyncRedisManager` (pub/sub) on redis-py {v['py:redis']}, "
        f"ASGI under uvicorn {v['py:uvicorn']} (uvloop, httptools {v['py:httptools']}, "
        f"websockets-sansio on websockets {v['py:websockets']}). Node {v['node']}: socket.io "
        f"{v['node:socket.io']} (engine.io {v['node:engine.io']}, ws {v['node:ws']}), "
        f"@socket.io/redis-streams-adapter {v['node:@socket.io/redis-streams-adapter']} on "
        f"node-redis {v['node:redis']}.",
        "",
        f"N viewers in one room on ONE server process; {args.rate:,} events/s offered to each "
        f"system (published from outside the server through Redis) for {args.seconds:g} s after "
        f"a {args.warmup:g} s warm-up; {args.repeats} repeat(s), the systems alternated within "
        "each, every figure the median of its repeats. Ours batches a tick's events "
        f"({args.tick_ms} ms) into one msgpack frame per viewer; the Socket.IO servers send one "
        "text frame per event. Raw limit: on ours' connections right after its window, one "
        "frame encoded once (as many events as ours' mean frame at that N: "
        + ", ".join(f"{n:,}: {k}" for n, k in sorted(raw_events.items()))
        + ") written with `transport.write` as fast as the viewers take it; its RSS figure is "
        "a bare `websockets` server holding the same idle connections. Latency: publish (`ts`) "
        f"to receipt, sampled on 1 connection in {args.sample_every}. CPU: % of one core; the "
        "load generator's is all its processes, its busiest in brackets (near 100, the load "
        "generator, not the server, was the bound); kernel softirq is the machine's (mostly "
        "loopback TCP; part of it may also be charged to the processes it interrupted, so the "
        "columns can add up to more than the whole machine). RSS per idle connection: the "
        "server's RSS growth with N idle connections open, over N, before any publishing.",
        "",
        *table(args, med),
        "",
        *[f"- {line}" for line in aims(args, med) + bounds(args, med, results)],
        f"<!-- {TAG}:end -->",
    ]
    return "\n".join(lines) + "\n"


# -- the run -------------------------------------------------------------------------------


def summary(r: Result) -> str:
    w = r.window
    if w is None:
        return f"  {r.system}: no window ({r.connected:,} connected; {r.failed})"
    lat = f"p99 {w.latency.p99_ms:,.0f} ms" if w.latency else "no latency"
    return (
        f"  {r.system}: {w.events_rx:,.0f} events/s, {w.frames_rx:,.0f} frames/s, {lat}, "
        f"server {w.cpu.get('server', 0):.0f}% CPU, machine {w.cpu.get('machine', 0):.0f}%"
    )


async def run_systems(ctx: Ctx, repeat: int) -> list[Result]:
    """Every asked system once at ``ctx.n`` viewers; a system that fails is recorded as such."""
    out: list[Result] = []
    for system in ctx.args.systems:
        print(f"[{repeat + 1}/{ctx.args.repeats}] {ctx.n:,} viewers: {system}", flush=True)
        try:
            if system == "ours":
                ours, raw = await run_ours(ctx)
                print(summary(ours) + "\n" + summary(raw), flush=True)
                print("  bare websockets (memory raw limit)", flush=True)
                got = [ours, replace(raw, rss_per_conn=await run_bare(ctx))]
            else:
                got = [await run_peer(ctx, system)]
                print(summary(got[0]), flush=True)
        except Exception as exc:  # a peer that crashes is reported, not the end of the run
            print(f"  {system} failed: {exc!r}", flush=True)
            got = [Result(system, ctx.n, 0, math.nan, math.nan, {f"error {exc!r}"[:80]: 1}, None)]
        out += got
    return out


async def run(args: argparse.Namespace) -> tuple[list[Result], float]:
    """Every repeat of every N; (results, wall seconds). Every child is stopped on the way out,
    on Ctrl-C and SIGTERM too (both cancel this task)."""
    raise_nofile()
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    t0 = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="liveroom-peers-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        redis = connect(server.url)
        ctx = Ctx(args, server, redis, secrets.token_urlsafe(32))
        try:
            for repeat in range(args.repeats):
                for n in args.viewers:
                    ctx.n = n
                    results += await run_systems(ctx, repeat)
        finally:
            with suppress(Exception):
                await redis.aclose()
            server.stop()
    return results, time.monotonic() - t0


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def _systems(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in SYSTEMS or x == "raw"]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown systems {bad} (ours, python-socketio, node)")
    return names


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.peers", description=__doc__.splitlines()[0]
    )
    p.add_argument("--viewers", type=_ints, default=[1000, 5000, 10000], help="N list: 1000,5000")
    p.add_argument("--rate", type=int, default=500, help="events/s offered to every system")
    p.add_argument("--seconds", type=float, default=8.0, help="measured window of each run")
    p.add_argument("--warmup", type=float, default=2.0, help="publishing before the window")
    p.add_argument("--repeats", type=int, default=3, help="runs of each system at each N")
    p.add_argument(
        "--systems",
        type=_systems,
        default=["ours", "python-socketio", "node"],
        help="which to run (ours brings the raw limit)",
    )
    p.add_argument("--clients", type=int, default=2, help="load-generator processes")
    p.add_argument("--sample-every", type=int, default=50, help="1 connection in this many timed")
    p.add_argument("--concurrency", type=int, default=32, help="handshakes in flight per process")
    p.add_argument(
        "--connect-timeout", type=float, default=90.0, help="bound on a peer's connect phase (s)"
    )
    p.add_argument("--settle", type=float, default=1.0, help="idle seconds before the RSS read")
    p.add_argument("--tick-ms", type=int, default=50, help="ours: the gateway's tick")
    p.add_argument(
        "--raw-high-water", type=int, default=16 * 1024, help="raw: skip a connection this full"
    )
    p.add_argument("--write-md", type=Path, default=None, metavar="PATH", help="docs/BENCHMARKS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a stuck run is
    install()
    meta: dict[str, Any] = {
        "versions": versions(),
        "machine": machine_info(),
        "code": code_version(ROOT),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    import uvloop

    try:
        results, meta["took"] = uvloop.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; children stopped", file=sys.stderr)
        return 130
    command = "python -m loadtest.peers " + shlex.join(argv)
    block = markdown(args, command.strip(), results, meta)
    print("\n" + block)
    if args.write_md is not None:
        put_section(args.write_md, TAG, SECTION, block)
        print(f"written to {args.write_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
