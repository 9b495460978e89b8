"""Inbound ops benchmark: `buy` (or `danmaku`) ops per second through one gateway process.

    python -m loadtest.sales [--op buy|danmaku] [--buyers 2000] [--seconds 10] [--rate 30000]
                             [--rooms N] [--write-md [PATH]]

``--op danmaku`` measures danmaku the same way (the chatters spread over ``--rooms`` rooms, so
each room's fan-out stays what a busy room sees; the per-user danmaku rate is lifted for the
gateway under test, the connection's message budget is not) against ``publish.lua``'s ceiling;
the resend and sold-out phases are for buys only.

What it measures, in ONE run against ONE private redis-server (AOF on, no auto-rewrite):

1. The gateway, batching off then on (``LIVEROOM_WRITE_BATCHING=0`` / ``1``; the gateway process,
   ``python -m runtime.cli serve --role gateway``, is restarted between them, Redis is not).
   Buyers are real WebSocket connections (``liveroom.v1.msgpack``, ops encoded with
   ``engine.codec.encode_value``) from ``--clients`` processes of this module, one user each.
   Every attempt carries a fresh ``ref``, on a sale whose stock and per-user limit never run
   out, so each one takes the success path of ``buy.lua`` and writes an order. Phases:

   - idle: the connections open, nothing bought (what the room costs the gateway by itself);
   - saturation: every connection keeps ``--in-flight`` buys outstanding (closed loop); the
     most attempts/s the gateway acks. Its latency is queueing, not service time: by Little's
     law it is about (buyers x in-flight) / throughput whatever the server does.
   - paced: ``--rate`` attempts/s offered open loop, spread evenly over the connections (at most
     ``--cap`` outstanding per connection; attempts over it are counted as held back): the ack
     latency at that rate, which is what the aim is about; then paced again at ``--sustain``
     (70%) of the saturation rate just measured: the latency of a gateway that keeps up.
   - saturation again under ``appendfsync always`` (what ``liveroom up`` runs);
   - batching on only: resend (each attempt repeats a ref that already has an answer: the
     idempotent replay path) and sold out (a sale with no stock left: the refusal path).

2. Redis's own ceiling for the same script: ``buy.lua`` by EVALSHA, keys and args from
   ``SaleLedger.buy_call``, in pipelines of ``--depth`` (two in flight) over one raw socket from
   this process, RESP encoded here and replies parsed by hiredis, under both fsync policies;
   the same calls through redis-py's pipeline one at a time (the gateway before
   ``engine.pipeline`` packed its own EVALSHA); and
   ``redis-benchmark`` running the same EVALSHA (random refs by ``__rand_int__``).

Reported per phase: attempts answered per second, ack latency p50/p99/max (client send ->
client receipt of the ack), CPU of the gateway, of the load generator (client processes, this
process's loop, or redis-benchmark) and of redis-server, as % of one core. Nothing here
asserts: this is a benchmark, not a test. It never changes the gateway or the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from engine import keys, scripts
from engine.bus import RoomBus
from engine.codec import Subprotocol, decode_events, encode_value
from engine.ids import RoomId
from engine.rooms import NewRoom, RoomStore
from engine.sales import NewSale, SaleLedger
from engine.settings import Settings
from engine.store import connect
from engine.tokens import issue
from loadtest.children import ROOT, Child, CpuClock, CpuSample, cpu_percent, raise_nofile
from loadtest.report import Latency, code_version, machine_info, put_section
from loadtest.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameScanner,
    check_upgrade,
    close_code,
    masked_frame,
    upgrade_request,
)
from runtime.redis_server import RedisServer, free_port

SECRET = "sales-bench-secret-0123456789abcdef-0123456789"
ROOM = RoomId("sale-bench")
SP = Subprotocol.MSGPACK
HUGE = 10**9  # stock and per-user limit of the sale that never runs out
KEEP_REFS = 64  # answered refs each connection keeps for the resend phase
DRAIN_S = 15.0  # how long a phase waits for its last answers


# -- the buyers: a child process of many cheap WebSocket connections --------------------------


def op_frame(op: str, sale: str, ref: str) -> bytes:
    """One client frame carrying a `buy` (or `danmaku`) op.

    Clients must mask. A zero key is a legal masking key that leaves the payload as it is: the
    client skips the XOR, the server still does all of its unmasking work.
    """
    if op == "danmaku":
        value: dict[str, Any] = {"op": "danmaku", "text": f"666 {ref}", "ref": ref}
    else:
        value = {"op": "buy", "sale": sale, "qty": 1, "ref": ref}
    payload = encode_value(value, SP)
    n = len(payload)
    if n < 126:
        return bytes((0x80 | OP_BINARY, 0x80 | n)) + b"\0\0\0\0" + payload
    return bytes((0x80 | OP_BINARY, 0x80 | 126)) + n.to_bytes(2, "big") + b"\0\0\0\0" + payload


class Attempts:
    """Every attempt of this process: those in flight, and the answers of the current phase."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.pending: dict[str, float] = {}  # ref -> monotonic send time
        self.seq = 0
        self.phase = 0
        self.sale = ""
        self.op = "buy"
        self.closed_loop = False
        self.sending = False
        self.replay = False
        self.window = (0.0, 0.0)
        self.reset()

    def reset(self) -> None:
        self.answered = 0
        self.acked = 0  # answers received inside the window
        self.sent = 0
        self.held = 0
        self.outcomes: Counter[str] = Counter()
        self.lat_ms = array("f")

    def next_ref(self) -> str:
        self.seq += 1
        return f"{self.tag}{self.phase}-{self.seq:x}"

    def answer(self, now: float, sent_at: float, outcome: str) -> None:
        self.answered += 1
        lo, hi = self.window
        if lo <= now < hi:
            self.acked += 1
            self.outcomes[outcome] += 1
            self.lat_ms.append((now - sent_at) * 1000.0)


class Buyer(asyncio.Protocol):
    """One connection: upgrade, wait for `welcome`, then send buys and match answers by ref."""

    def __init__(self, att: Attempts, request: bytes, accept: bytes) -> None:
        self.att = att
        self.request = request
        self.accept = accept
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.scanner: FrameScanner | None = None
        self.live: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.close_code: int | None = None
        self.in_flight = 0
        self.kept: deque[str] = deque(maxlen=KEEP_REFS)
        self.replay_at = 0
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def queue(self, now: float) -> None:
        att = self.att
        ref = None
        if att.replay and self.kept:
            ref = self.kept[self.replay_at % len(self.kept)]
            self.replay_at += 1
            if ref in att.pending:
                ref = None
        if ref is None:
            ref = att.next_ref()
        att.pending[ref] = now
        att.sent += 1
        self.in_flight += 1
        self.out.append(op_frame(att.op, att.sale, ref))

    def flush(self) -> None:
        if self.out and not self.closed:
            self.transport.write(b"".join(self.out))  # type: ignore[union-attr]
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        if self.scanner is None:
            data = self._upgrade(data)
            if not data:
                return
        frames = self.scanner.feed(data)  # type: ignore[union-attr]
        if not frames:
            return
        now = time.monotonic()
        att = self.att
        answered = 0
        for opcode, payload in frames:
            if opcode == OP_BINARY:
                if not self.live.done():
                    self.live.set_result(None)  # the welcome
                    continue
                # Room frames (sale.stock, online: several a second to every buyer) carry no
                # `ref` key; skipping them undecoded keeps the client cheap. b"\xa3ref" is the
                # msgpack string "ref", so a frame without it holds no answer.
                if b"\xa3ref" not in payload:
                    continue
                for event in decode_events(payload):
                    ref = event.get("ref")
                    sent_at = att.pending.pop(ref, None) if ref is not None else None
                    if sent_at is None:
                        continue
                    answered += 1
                    if "order" in event:
                        outcome = "order"
                        if not att.replay:
                            self.kept.append(ref)
                    elif "id" in event and event.get("type") == "ack":
                        outcome = "ack"
                    else:
                        outcome = str(event.get("code", event.get("type")))
                    att.answer(now, sent_at, outcome)
            elif opcode == OP_PING:
                self.transport.write(masked_frame(OP_PONG, payload))  # type: ignore[union-attr]
            elif opcode == OP_CLOSE:
                self.close_code = close_code(payload)
                self.closed = True
                self.transport.close()  # type: ignore[union-attr]
                self._fail(f"closed {self.close_code}")
        if answered:
            self.in_flight -= answered
            if att.closed_loop and att.sending:
                for _ in range(answered):
                    self.queue(now)
                self.flush()

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

    def _fail(self, why: str) -> None:
        if not self.live.done():
            self.live.set_exception(ConnectionError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection lost: {exc}")


async def open_buyers(args: argparse.Namespace, att: Attempts) -> tuple[list[Buyer], Counter]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(32)
    buyers: list[Buyer] = []
    errors: Counter[str] = Counter()

    async def one(i: int) -> None:
        token = issue(args.secret, f"buyer-{i}", ttl_s=3 * 3600)
        path = f"/ws/rooms/{args.room}" + (f"-{i % args.rooms}" if args.rooms > 1 else "")
        why = "?"
        for attempt in range(3):
            request, accept = upgrade_request(args.host, args.port, path, token, SP.value)
            async with gate:
                try:
                    transport, buyer = await loop.create_connection(
                        lambda r=request, a=accept: Buyer(att, r, a), args.host, args.port
                    )
                    try:
                        await asyncio.wait_for(asyncio.shield(buyer.live), 30.0)
                    except BaseException:
                        transport.abort()
                        raise
                    buyers.append(buyer)
                    return
                except (OSError, ConnectionError, TimeoutError) as exc:
                    why = str(exc)[:80] or exc.__class__.__name__
            await asyncio.sleep(0.2 * (attempt + 1))
        errors[why] += 1

    await asyncio.gather(*(one(i) for i in range(args.first, args.first + args.count)))
    return buyers, errors


async def pace(
    buyers: list[Buyer], att: Attempts, rate: float, cap: int, start: float, end: float
) -> None:
    """Offer ``rate`` attempts/s, round robin over the connections, whatever the answers do."""
    n, i, issued = len(buyers), 0, 0
    while (now := time.monotonic()) < end:
        touched: list[Buyer] = []
        for _ in range(int((now - start) * rate) - issued):
            b = buyers[i]
            i = (i + 1) % n
            issued += 1
            if b.in_flight >= cap or b.closed:
                att.held += 1
                continue
            if not b.out:
                touched.append(b)
            b.queue(now)
        for b in touched:
            b.flush()
        await asyncio.sleep(0.001)


async def drive(buyers: list[Buyer], att: Attempts, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one phase as ``spec`` says; answer with what happened inside its window."""
    att.reset()
    att.phase += 1
    att.sale = spec["sale"]
    att.op = spec["op"]
    att.replay = spec["replay"]
    start, warm, seconds = spec["start"], spec["warm"], spec["seconds"]
    end = start + warm + seconds
    att.window = (start + warm, end)
    live = [b for b in buyers if not b.closed]
    if not live:
        raise RuntimeError("every connection of this process is closed")
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    att.sending = True
    if spec["mode"] == "idle":
        await asyncio.sleep(max(0.0, end - time.monotonic()))
    elif spec["mode"] == "closed":
        att.closed_loop = True
        now = time.monotonic()
        for b in live:
            for _ in range(spec["in_flight"]):
                b.queue(now)
            b.flush()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
    else:
        att.closed_loop = False
        await pace(live, att, spec["rate"], spec["cap"], start, end)
    att.sending = False
    deadline = time.monotonic() + DRAIN_S
    while att.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    unanswered = len(att.pending)
    att.pending.clear()  # late answers are ignored from here on
    for b in buyers:
        b.in_flight = 0
    closes = Counter(str(b.close_code) for b in buyers if b.closed)
    return {
        "acked": att.acked,
        "answered": att.answered,
        "sent": att.sent,
        "held": att.held,
        "unanswered": unanswered,
        "outcomes": dict(att.outcomes),
        "closed": dict(closes),
        "lat_ms": base64.b64encode(att.lat_ms.tobytes()).decode(),
    }


def say(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def buyers_main(args: argparse.Namespace) -> None:
    att = Attempts(args.tag)
    t0 = time.monotonic()
    buyers, errors = await open_buyers(args, att)
    say({"ready": len(buyers), "failed": dict(errors), "connect_s": time.monotonic() - t0})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = (await reader.readline()).decode().strip()
            if line.startswith("run "):
                try:
                    say(await drive(buyers, att, json.loads(line[4:])))
                except Exception as exc:  # the harness reports it, with how connections ended
                    closes = Counter(str(b.close_code) for b in buyers if b.closed)
                    say({"error": f"{type(exc).__name__}: {exc}", "closed": dict(closes)})
            elif line in ("quit", ""):
                return
    finally:
        for b in buyers:
            if b.transport is not None:
                b.transport.abort()


def buyers_cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="loadtest.sales buyers", description="one buyer process")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--first", type=int, default=0, help="index of this process's first buyer")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--tag", required=True, help="prefix of this process's refs")
    p.add_argument("--rooms", type=int, default=1, help="connection i joins room ROOM-(i %% N)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness stops us
    raise_nofile()
    import uvloop

    uvloop.run(buyers_main(args))
    return 0


# -- Redis's own ceiling: the same script, with no gateway in the way -----------------------


def resp(*parts: object) -> bytes:
    """One command in RESP (a multi-bulk of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def outcome_of(reply: object) -> str:
    if isinstance(reply, list):  # publish.lua: [id, fresh]
        return "ack"
    if isinstance(reply, bytes):
        if reply.startswith(b'{"order"'):
            return "order"
        return str(json.loads(reply).get("error", "?"))
    return "redis error" if isinstance(reply, Exception) else "?"


@dataclass(slots=True)
class Window:
    """Counts answers that arrive in [lo, hi) and takes CPU samples at its edges."""

    lo: float
    hi: float
    clock: CpuClock
    a: CpuSample | None = None
    b: CpuSample | None = None
    count: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def tick(self, now: float) -> None:
        if self.a is None and now >= self.lo:
            self.a = self.clock.read()
        if self.b is None and now >= self.hi:
            self.b = self.clock.read()

    def add(self, now: float, outcome: str) -> None:
        if self.lo <= now < self.hi:
            self.count += 1
            self.outcomes[outcome] += 1


def raw_pipelined(
    port: int, sha: str, call: Callable[[float], tuple[list, list]], depth: int, window: Window
) -> None:
    """EVALSHA in pipelines of ``depth`` over one socket, two pipelines in flight."""
    import hiredis

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()
    in_flight = 0
    try:
        while True:
            now = time.monotonic()
            window.tick(now)
            if now < window.hi and in_flight <= depth:
                wall = time.time()
                batch = []
                for _ in range(depth):
                    k, a = call(wall)
                    batch.append(resp("EVALSHA", sha, len(k), *k, *a))
                sock.sendall(b"".join(batch))
                in_flight += depth
                continue
            if in_flight == 0:
                return
            reader.feed(sock.recv(1 << 20))
            now = time.monotonic()
            while (reply := reader.gets()) is not False:
                in_flight -= 1
                window.add(now, outcome_of(reply))
    finally:
        sock.close()


async def redis_py_pipelined(
    ledger: SaleLedger,
    bus: RoomBus,
    name: str,
    call: Callable[[float], tuple[list, list]],
    depth: int,
    window: Window,
) -> None:
    """The same calls through redis-py's pipeline, one at a time (the old gateway batcher)."""
    script = ledger.buy_script if name == "buy" else bus.publish_script
    while True:
        now = time.monotonic()
        window.tick(now)
        if now >= window.hi:
            return
        wall = time.time()
        async with ledger.redis.pipeline(transaction=False) as p:
            for _ in range(depth):
                k, a = call(wall)
                script.queue(p, k, a)
            results = await p.execute(raise_on_error=False)
        now = time.monotonic()
        for r in results:
            window.add(now, outcome_of(r))


# -- the harness ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """One phase: what was answered per second inside its window, and what it cost."""

    name: str
    path: str  # success / resend / refusal
    batching: str  # on / off / - (no gateway)
    fsync: str
    load: str
    seconds: float
    rate: float
    latency: Latency | None
    cpu: dict[str, float]
    outcomes: dict[str, int]
    unanswered: int = 0
    held: int = 0
    closed: dict[str, int] = field(default_factory=dict)


class Gateway:
    """The gateway under test: ``python -m runtime.cli serve --role gateway`` in a child."""

    def __init__(
        self,
        redis_url: str,
        batching: bool,
        log_path: Path,
        tick_ms: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = env or {}
        self.redis_url = redis_url
        self.batching = batching
        self.log_path = log_path
        self.tick_ms = tick_ms
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {
            **os.environ,
            "LIVEROOM_SECRET": SECRET,
            "LIVEROOM_LOG_LEVEL": "WARNING",
            "LIVEROOM_WRITE_BATCHING": "1" if self.batching else "0",
            # a throughput benchmark, not a test of the per-process connection cap
            "LIVEROOM_MAX_CONNECTIONS": "100000",
            "LIVEROOM_TICK_MS": str(self.tick_ms),
            **self.env,
        }
        cmd = [
            "-m",
            "runtime.cli",
            "serve",
            "--role",
            "gateway",
            "--redis-url",
            self.redis_url,
            "--ws-port",
            str(self.port),
        ]
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *cmd,
                env=env,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"gateway did not start; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # drains: closes what is left with 1001
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.redis_server = RedisServer(tmp / "redis", appendonly=True, fsync="everysec")
        self.gateway: Gateway | None = None
        self.buyers: list[Child] = []
        self.results: list[Result] = []
        self.connect_s: list[float] = []
        self.fsync = "everysec"
        self.redis_version = "Redis ?"
        self.gateway_log: list[str] = []
        self.stock_check: tuple[int, int, int] | None = None
        """(stock, orders in Redis, stock left) of the limited-stock phase."""
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.machine = machine_info()  # before the run: its load average is the machine's own

    async def setup(self) -> None:
        self.redis_server.start()
        self.redis = connect(self.redis_server.url)
        self.redis_version = f"Redis {(await self.redis.info('server'))['redis_version']}"
        # An AOF rewrite is a fork that would take one of the machine's cores mid-phase.
        await self.redis.config_set("auto-aof-rewrite-percentage", 0)
        settings = Settings(redis_url=self.redis_server.url, secret=SECRET)
        self.ledger = SaleLedger(self.redis, settings)
        self.bus = RoomBus(self.redis, settings)
        await RoomStore(self.redis).create(NewRoom(ROOM, "flash sale benchmark"), "bench")
        if self.args.op == "danmaku":
            for i in range(self.args.rooms):
                await RoomStore(self.redis).create(NewRoom(f"{ROOM}-{i}", "chat bench"), "bench")
        # Stock and per-user limit that never run out: every attempt takes the success path.
        big = NewSale("sku-1", "benchmark", 100, stock=HUGE, per_user_limit=HUGE, duration_s=3600)
        self.sale = (await self.ledger.create(ROOM, big))["id"]
        gone = NewSale(
            "sku-2", "sold out", price_cents=100, stock=1, per_user_limit=1, duration_s=3600
        )
        self.sold_out = (await self.ledger.create(ROOM, gone))["id"]
        limited = NewSale(
            "sku-3", "limited", 100, stock=self.args.stock, per_user_limit=HUGE, duration_s=3600
        )
        self.limited = (await self.ledger.create(ROOM, limited))["id"]
        await self.ledger.buy(ROOM, self.sold_out, "first", "r1", 1, None, time.time())
        # The raw paths run buy.lua itself, without the deadline guard the product prepends
        # (engine/scripts.py): one TIME call, and their fixed args carry no deadline.
        self.sha = await self.redis.script_load(scripts.source(self.script))

    @property
    def script(self) -> str:
        return "publish" if self.args.op == "danmaku" else "buy"

    async def count_orders(self) -> None:
        """What a sale with limited stock ended with, read from Redis after its phase."""
        orders = await self.redis.xlen(keys.sale_orders(ROOM, self.limited))
        left = await self.redis.hget(keys.stock(ROOM), self.limited)
        self.stock_check = (self.args.stock, orders, int(left) if left is not None else 0)
        print(f"  limited sale: stock {self.args.stock:,}, orders in Redis {orders:,}", flush=True)

    async def set_fsync(self, policy: str) -> None:
        await self.redis.config_set("appendfsync", policy)
        self.fsync = policy

    async def start_gateway(self, batching: bool) -> None:
        env = {}
        if self.args.op == "danmaku":  # the per-user rate, not the connection's budget
            env = {"LIVEROOM_DANMAKU_RATE": "100000", "LIVEROOM_DANMAKU_BURST": "100000"}
        self.gateway = Gateway(
            self.redis_server.url, batching, self.tmp / "gateway.log", self.args.tick_ms, env
        )
        await self.gateway.start()
        per = -(-self.args.buyers // self.args.clients)
        t0 = time.monotonic()
        for i in range(self.args.clients):
            count = min(per, self.args.buyers - i * per)
            argv = (
                f"buyers --port {self.gateway.port} --room {ROOM} --secret {SECRET} "
                f"--first {i * per} --count {count} --tag {chr(ord('a') + i)} "
                f"--rooms {self.args.rooms if self.args.op == 'danmaku' else 1}"
            )
            child = await Child.start(f"buyers-{i}", "loadtest.sales", argv.split())
            self.buyers.append(child)
        ready = [await c.read(timeout=120) for c in self.buyers]
        self.connect_s.append(time.monotonic() - t0)
        failed = sum(sum(r["failed"].values()) for r in ready)
        print(
            f"gateway batching={'on' if batching else 'off'}: "
            f"{sum(r['ready'] for r in ready)} buyers connected in {self.connect_s[-1]:.1f} s"
            + (f", {failed} failed: {[r['failed'] for r in ready]}" if failed else ""),
            flush=True,
        )

    async def stop_gateway(self) -> None:
        for c in self.buyers:
            await c.stop()
        self.buyers = []
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None

    async def quiet(self) -> None:
        """Wait (up to ``--quiet-wait`` s) until other work leaves the machine nearly idle.

        Other jobs on a shared machine take cores from the phase; the table's "others" column
        says how much they took anyway.
        """
        deadline = time.monotonic() + self.args.quiet_wait
        said = False
        while True:
            a = psutil.cpu_times()
            await asyncio.sleep(0.5)
            b = psutil.cpu_times()
            busy = 200.0 * ((b.user + b.nice + b.system) - (a.user + a.nice + a.system))
            if busy < self.args.quiet_below or time.monotonic() > deadline:
                if said:
                    print(f"  ... machine at {busy:.0f}% of one core; going on", flush=True)
                return
            if not said:
                print(
                    f"  waiting for the machine to go quiet ({busy:.0f}% of one core busy)",
                    flush=True,
                )
                said = True

    def clock(self, load_pids: list[int]) -> CpuClock:
        roles = {"load": load_pids, "redis": [self.redis_server.proc.pid]}  # type: ignore[union-attr]
        if self.gateway is not None:
            roles["gateway"] = [self.gateway.pid]
        return CpuClock(roles)

    def record(self, result: Result) -> None:
        self.results.append(result)
        print(text_row(result), flush=True)

    async def buy_phase(
        self, name: str, *, mode: str, seconds: float, path: str = "success", rate: float = 0.0
    ) -> None:
        assert self.gateway is not None
        a = self.args
        await self.quiet()
        sale = {"refusal": self.sold_out, "limited": self.limited}.get(path, self.sale)
        start = time.monotonic() + 0.3
        spec = {
            "mode": mode,
            "sale": sale,
            "op": a.op,
            "replay": path == "resend",
            "start": start,
            "warm": a.warm,
            "seconds": seconds,
            "in_flight": a.in_flight,
            "cap": a.cap,
            "rate": rate / len(self.buyers),
        }
        clock = self.clock([c.pid for c in self.buyers])
        asks = [
            asyncio.create_task(c.ask("run " + json.dumps(spec), timeout=seconds + 60))
            for c in self.buyers
        ]
        await sleep_until(start + a.warm)
        s0 = clock.read()
        await sleep_until(start + a.warm + seconds)
        s1 = clock.read()
        replies = await asyncio.gather(*asks)
        for c, r in zip(self.buyers, replies, strict=True):
            if "error" in r:
                raise RuntimeError(f"{c.name}: {r['error']} (closed: {r['closed']})")
        lat: list[float] = []
        for r in replies:
            lat.extend(array("f", base64.b64decode(r["lat_ms"])))
        outcomes: Counter[str] = Counter()
        closed: Counter[str] = Counter()
        for r in replies:
            outcomes.update(r["outcomes"])
            closed.update(r["closed"])
        load = {
            "idle": f"{a.buyers:,} conns open, no buys",
            "closed": f"closed loop, {a.in_flight} in flight x {a.buyers:,} conns",
            "paced": f"paced {rate:,.0f}/s offered, cap {a.cap}/conn",
        }[mode]
        self.record(
            Result(
                name=name,
                path=path,
                batching="on" if self.gateway.batching else "off",
                fsync=self.fsync,
                load=load,
                seconds=seconds,
                rate=sum(r["acked"] for r in replies) / seconds,
                latency=Latency.of(lat),
                cpu=cpu_percent(s0, s1),
                outcomes=dict(outcomes),
                unanswered=sum(r["unanswered"] for r in replies),
                held=sum(r["held"] for r in replies),
                closed=dict(closed),
            )
        )

    def caller(self, user: str) -> Callable[[float], tuple[list, list]]:
        seq = iter(range(1, 1 << 62))
        tag = f"{user}-{len(self.results)}-"

        def call(now: float) -> tuple[list, list]:
            ref = f"{tag}{next(seq):x}"
            if self.args.op == "danmaku":
                event = {"type": "danmaku", "user": {"id": user, "name": user}, "text": ref}
                return self.bus.publish_call(RoomId(f"{ROOM}-0"), {**event, "ts": now}, user, ref)
            return self.ledger.buy_call(ROOM, self.sale, user, ref, 1, None, now)

        return call

    async def raw_phase(self, name: str, seconds: float) -> None:
        await self.quiet()
        start = time.monotonic()
        w = Window(
            start + self.args.warm, start + self.args.warm + seconds, self.clock([os.getpid()])
        )
        raw_pipelined(self.redis_server.port, self.sha, self.caller("raw-loop"), self.args.depth, w)
        self.record(
            self._window_result(name, w, seconds, f"raw RESP, pipelines of {self.args.depth} x 2")
        )

    async def redis_py_phase(self, name: str, seconds: float) -> None:
        await self.quiet()
        start = time.monotonic()
        w = Window(
            start + self.args.warm, start + self.args.warm + seconds, self.clock([os.getpid()])
        )
        await redis_py_pipelined(
            self.ledger, self.bus, self.script, self.caller("redis-py"), self.args.depth, w
        )
        self.record(
            self._window_result(name, w, seconds, f"redis-py pipelines of {self.args.depth} x 1")
        )

    def _window_result(self, name: str, w: Window, seconds: float, load: str) -> Result:
        assert w.a is not None and w.b is not None
        return Result(
            name=name,
            path="success",
            batching="-",
            fsync=self.fsync,
            load=load,
            seconds=seconds,
            rate=w.count / seconds,
            latency=None,
            cpu=cpu_percent(w.a, w.b),
            outcomes=dict(w.outcomes),
        )

    async def redis_benchmark_phase(self, name: str, seconds: float, guess_rate: float) -> None:
        exe = shutil.which("redis-benchmark")
        if exe is None or self.args.op != "buy":  # (a stored event is binary: no argv for it)
            print("redis-benchmark skipped", flush=True)
            return
        keys_, args_ = self.ledger.buy_call(
            ROOM, self.sale, "redis-benchmark", "rb-__rand_int__", 1, None, time.time()
        )
        n = max(10_000, int(guess_rate * seconds))
        await self.quiet()
        cmd = [
            exe,
            "-p",
            str(self.redis_server.port),
            "-c",
            "50",
            "-P",
            "16",
            "-n",
            str(n),
            "-r",
            "1000000000",
            "--csv",
            "EVALSHA",
            self.sha,
            str(len(keys_)),
            *map(str, keys_),
            *map(str, args_),
        ]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            clock = self.clock([proc.pid])
            s0 = clock.read()
            out, _ = await asyncio.wait_for(proc.communicate(), seconds * 10 + 30)
            s1 = clock.read()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        rows = [line.split('","') for line in out.decode().splitlines() if line.startswith('"')]
        rps = float(rows[-1][1]) if len(rows) >= 2 else 0.0
        self.record(
            Result(
                name=name,
                path="success",
                batching="-",
                fsync=self.fsync,
                load="redis-benchmark -c 50 -P 16 (random refs)",
                seconds=s1.t - s0.t,
                rate=rps,
                latency=None,
                cpu=cpu_percent(s0, s1),
                outcomes={"requests": n},
            )
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_gateway()
        for c in self.buyers:
            c.kill()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        self.redis_server.stop()


async def run(args: argparse.Namespace) -> Bench:
    tmp = Path(tempfile.mkdtemp(prefix="lr-sales-"))
    bench = Bench(args, tmp)
    short = args.short_seconds
    # SIGTERM (`timeout`, a CI runner) cancels the run, so the cleanup below still stops every
    # child: the gateway and redis-server do not watch their parent.
    me = asyncio.current_task()
    assert me is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, me.cancel)
    try:
        await bench.setup()
        for batching in (False, True):
            label = "batching on" if batching else "batching off"
            await bench.set_fsync("everysec")
            await bench.start_gateway(batching)
            await bench.buy_phase(f"{label}, idle (no ops)", mode="idle", seconds=short)
            await bench.buy_phase(f"{label}, saturation", mode="closed", seconds=args.seconds)
            await bench.buy_phase(
                f"{label}, paced at the aim", mode="paced", seconds=args.seconds, rate=args.rate
            )
            sustain = args.sustain * bench.results[-2].rate
            await bench.buy_phase(
                f"{label}, paced at {args.sustain:.0%} of saturation",
                mode="paced",
                seconds=short,
                rate=sustain,
            )
            if args.always:
                await bench.set_fsync("always")
                await bench.buy_phase(
                    f"{label}, saturation, fsync always", mode="closed", seconds=short
                )
                await bench.set_fsync("everysec")
            if batching and args.op == "buy":
                await bench.buy_phase(
                    f"{label}, {args.stock:,} in stock",
                    mode="closed",
                    seconds=short,
                    path="limited",
                )
                await bench.count_orders()
                await bench.buy_phase(
                    f"{label}, resend", mode="closed", seconds=short, path="resend"
                )
                await bench.buy_phase(
                    f"{label}, sold out", mode="closed", seconds=short, path="refusal"
                )
            await bench.stop_gateway()
        await bench.raw_phase("Redis ceiling, raw pipeline", short)
        raw = bench.results[-1].rate
        if args.always:
            await bench.set_fsync("always")
            await bench.raw_phase("Redis ceiling, raw pipeline, fsync always", short)
            await bench.set_fsync("everysec")
        await bench.redis_py_phase("redis-py pipeline (the old batcher)", short)
        await bench.redis_benchmark_phase("redis-benchmark", short, raw)
        bench.gateway_log = (tmp / "gateway.log").read_text(errors="replace").splitlines()
    finally:
        await bench.close()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return bench


# -- the report -------------------------------------------------------------------------------


def _lat(lat: Latency | None) -> str:
    return "-" if lat is None else f"{lat.p50_ms:.1f} / {lat.p99_ms:.1f} / {lat.max_ms:.0f}"


def _outcomes(r: Result) -> str:
    parts = [f"{k} {v:,}" for k, v in sorted(r.outcomes.items(), key=lambda kv: -kv[1])]
    if r.held:
        parts.append(f"held back {r.held:,}")
    if r.unanswered:
        parts.append(f"UNANSWERED {r.unanswered:,}")
    parts += [f"closed {code} x{n}" for code, n in r.closed.items()]
    return ", ".join(parts)


COLUMNS = (
    "phase",
    "fsync",
    "load",
    "attempts/s",
    "ack ms p50 / p99 / max",
    "gateway CPU",
    "load gen CPU",
    "redis CPU",
    "others CPU",
    "machine CPU",
    "answers in window",
)


def cells(r: Result) -> tuple[str, ...]:
    def pct(role: str) -> str:
        return f"{r.cpu[role]:.0f}%" if role in r.cpu else "-"

    return (
        r.name,
        r.fsync,
        r.load,
        f"{r.rate:,.0f}",
        _lat(r.latency),
        pct("gateway"),
        pct("load"),
        pct("redis"),
        pct("others"),
        pct("machine"),
        _outcomes(r),
    )


def text_row(r: Result) -> str:
    c = cells(r)
    return (
        f"{c[0]:<42} {c[1]:<8} {c[3]:>9}/s  ack ms {c[4]:<20} gw {c[5]:>4}  "
        f"load {c[6]:>4}  redis {c[7]:>4}  others {c[8]:>4}  machine {c[9]:>4}  {c[10]}"
    )


def find(results: list[Result], name: str) -> Result | None:
    return next((r for r in results if r.name == name), None)


def cpu_us(r: Result, role: str) -> float:
    """CPU time ``role`` spent per answered attempt, in µs."""
    return r.cpu.get(role, 0.0) * 1e4 / r.rate if r.rate else 0.0


def verdicts(results: list[Result], args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    on, off = find(results, "batching on, saturation"), find(results, "batching off, saturation")
    raw = find(results, "Redis ceiling, raw pipeline")
    if on and off and off.rate:
        out.append(
            f"batching on / off at saturation (fsync everysec): "
            f"{on.rate:,.0f} / {off.rate:,.0f} = {on.rate / off.rate:.2f}x"
        )
    on_a = find(results, "batching on, saturation, fsync always")
    off_a = find(results, "batching off, saturation, fsync always")
    if on_a and off_a and off_a.rate:
        out.append(
            f"batching on / off at saturation (fsync always): "
            f"{on_a.rate:,.0f} / {off_a.rate:,.0f} = {on_a.rate / off_a.rate:.2f}x"
        )
    if on and raw and raw.rate:
        out.append(
            f"gateway (batching on) / Redis ceiling for the same script: "
            f"{on.rate:,.0f} / {raw.rate:,.0f} = {on.rate / raw.rate:.2f}"
        )
    paced = find(results, "batching on, paced at the aim")
    aim, aim_p99 = AIMS[args.op]
    if paced and paced.latency:
        ok = (
            args.rate >= aim
            and paced.rate >= 0.98 * args.rate
            and paced.latency.p99_ms <= aim_p99
            and not paced.held
            and not paced.outcomes.get("unavailable")
        )
        out.append(
            f"aim (>= {aim:,} {args.op} ops/s through one gateway, p99 <= {aim_p99} ms, no "
            f"`unavailable`): at {args.rate:,.0f}/s offered, batching on acked "
            f"{paced.rate:,.0f}/s with p99 {paced.latency.p99_ms:,.0f} ms: "
            f"{'met' if ok else 'NOT met'}"
            + ("" if args.rate >= aim else f" (offered below {aim:,}/s: not a test of the aim)")
        )
    for r in results:
        if r.name.endswith("of saturation") and r.latency:
            out.append(
                f"{r.name}: {r.rate:,.0f}/s acked, p50 {r.latency.p50_ms:.1f} ms, "
                f"p99 {r.latency.p99_ms:.1f} ms" + (f", {r.held:,} held back" if r.held else "")
            )
    costs = []
    for r in (
        off,
        on,
        find(results, "batching on, resend"),
        find(results, "batching on, sold out"),
    ):
        if r is not None and r.rate:
            costs.append(
                f"{r.name}: gateway {cpu_us(r, 'gateway'):.0f}, clients "
                f"{cpu_us(r, 'load'):.0f}, redis {cpu_us(r, 'redis'):.0f}"
            )
    if raw is not None and raw.rate:
        costs.append(f"Redis ceiling: redis {cpu_us(raw, 'redis'):.0f}")
    if costs:
        out.append("CPU µs per attempt (saturation): " + "; ".join(costs))
    for r in results:
        if r.name.endswith("idle (no ops)"):
            out.append(
                f"{r.name}: gateway {r.cpu.get('gateway', 0):.0f}%, clients "
                f"{r.cpu.get('load', 0):.0f}% of a core with nothing bought (ticks and "
                "counter syncs; stock does not change, so no sale.stock frames)"
            )
    for r in results:
        busiest = max((k for k in ("gateway", "load", "redis") if k in r.cpu), key=r.cpu.get)
        if r.cpu.get(busiest, 0) >= 90:
            out.append(f"{r.name}: bound by {busiest} ({r.cpu[busiest]:.0f}% of one core)")
        if r.cpu.get("others", 0) >= 25:
            out.append(
                f"{r.name}: CONTENDED, other work on the machine took "
                f"{r.cpu['others']:.0f}% of a core during the window"
            )
    return out


def text_report(results: list[Result], args: argparse.Namespace) -> str:
    return "\n".join(["", *[text_row(r) for r in results], "", *verdicts(results, args)])


AIMS = {"buy": (30_000, 20), "danmaku": (20_000, 50)}
"""Issue #13's aims per op: ops/s through one gateway process, and p99 op -> ack in ms."""

SECTIONS = {
    "buy": ("sales", "## Flash sales (buy)"),
    "danmaku": ("ops", "## Danmaku ops (inbound)"),
}


def markers(op: str) -> tuple[str, str]:
    tag, _ = SECTIONS[op]
    begin = f"<!-- {tag}:begin (generated by loadtest.sales; edits inside are overwritten) -->"
    return begin, f"<!-- {tag}:end -->"


def markdown(bench: Bench, command: str) -> str:
    a, m = bench.args, bench.machine
    begin, end = markers(a.op)
    who = "chatters" if a.op == "danmaku" else "buyers"
    out = [
        begin,
        "```",
        command,
        "```",
        "",
        f"Run {bench.started} at commit {code_version(ROOT)}. "
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, "
        f"uvloop {m['uvloop']}, websockets {m['websockets']}, "
        f"{bench.redis_version}; load average before the run {m['load']}. "
        f"The gateway process, {a.clients} client processes and redis-server share these CPUs.",
        "",
        f"{a.buyers:,} {who} (one WebSocket connection and one user each, "
        f"`liveroom.v1.msgpack`"
        + (f"; {a.rooms} rooms of {a.buyers // a.rooms} each" if a.op == "danmaku" else "")
        + f") on one gateway process; one private redis-server with AOF on "
        f"(`appendfsync` as the fsync column says; auto-rewrite off). Each phase is measured "
        f"for its window after {a.warm:g} s of warm-up; latency is client send -> ack receipt "
        f"of every attempt answered in the window. Connecting took "
        f"{' and '.join(f'{s:.1f} s' for s in bench.connect_s)}. CPU is % of one core: "
        f'"load gen" is the {a.clients} client processes, or for the Redis-ceiling rows this '
        'harness\'s own loop or redis-benchmark; "others" is everything else the machine ran '
        "during the window (other jobs on a shared machine included).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    out += ["| " + " | ".join(cells(r)) + " |" for r in bench.results]
    checks = []
    if bench.stock_check is not None:
        stock, orders, _ = bench.stock_check
        checks.append(
            f"limited stock: {stock:,} in stock, {orders:,} orders in Redis after the phase: "
            + ("orders exactly equal stock" if orders == stock else "ORDERS DIFFER FROM STOCK")
        )
    out += ["", *[f"- {v}" for v in [*checks, *verdicts(bench.results, a)]], end]
    return "\n".join(out) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--op", choices=sorted(AIMS), default="buy", help="the op measured")
    p.add_argument("--buyers", type=int, default=2000, help="WebSocket connections (one user each)")
    p.add_argument("--rooms", type=int, default=100, help="rooms the chatters spread over")
    p.add_argument(
        "--stock", type=int, default=20_000, help="stock of the limited sale (buys, saturated)"
    )
    p.add_argument("--clients", type=int, default=2, help="buyer processes")
    p.add_argument("--seconds", type=float, default=10.0, help="window of the main phases")
    p.add_argument(
        "--short-seconds",
        type=float,
        default=3.0,
        help="window of the fsync-always, resend, sold-out and Redis-ceiling phases",
    )
    p.add_argument("--warm", type=float, default=1.0, help="warm-up before each window")
    p.add_argument(
        "--rate", type=float, default=None, help="offered ops/s when paced (default: the aim)"
    )
    p.add_argument(
        "--in-flight", type=int, default=1, help="buys outstanding per connection at saturation"
    )
    p.add_argument("--cap", type=int, default=4, help="most buys outstanding per conn when paced")
    p.add_argument(
        "--sustain",
        type=float,
        default=0.7,
        help="a second paced phase offers this fraction of the saturation rate",
    )
    p.add_argument("--depth", type=int, default=256, help="pipeline depth of the Redis ceiling")
    p.add_argument("--tick-ms", type=int, default=50, help="the gateway's tick")
    p.add_argument(
        "--always",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure under appendfsync always",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each phase, wait up to this long for other work to stop",
    )
    p.add_argument(
        "--quiet-below",
        type=float,
        default=30.0,
        help="machine CPU (%% of one core) under which it counts as quiet",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary Redis directory")
    p.add_argument(
        "--write-md",
        nargs="?",
        const="docs/BENCHMARKS.md",
        default=None,
        metavar="PATH",
        help="write the figures to PATH (docs/BENCHMARKS.md)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["buyers"]:
        return buyers_cli(argv[1:])
    args = parse(argv)
    if args.rate is None:
        args.rate = float(AIMS[args.op][0])
    raise_nofile()
    import uvloop

    command = "python -m loadtest.sales " + shlex.join(argv)
    bench = uvloop.run(run(args))
    print(text_report(bench.results, args))
    if bench.gateway_log:
        print(f"\ngateway log: {len(bench.gateway_log)} lines; the last ones:")
        print("\n".join(bench.gateway_log[-20:]))
    if args.write_md:
        path = Path(args.write_md)
        if not path.is_absolute():
            path = ROOT / path
        put_section(path, *SECTIONS[args.op], markdown(bench, command.strip()))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
