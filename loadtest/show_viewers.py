"""The viewers of the live-show benchmark (``loadtest.show``): thousands of them in one process.

Run by ``loadtest.show``, never by hand. One process opens ``--count`` connections (one user
each, ``show-<i>``, subprotocol ``liveroom.v1.msgpack``, raw sockets through
``loadtest/wire.py``) spread over the gateways' ``--ports``, prints one JSON line once they are
in, and then takes one command per line on stdin, answering each with one JSON line:

- ``load DANMAKU_PER_S LIKES_PER_S``: its first ``--chatters`` connections send ``danmaku``
  ops at that rate in all (round robin), the next ``--likers`` ``like`` ops (count 1); each
  danmaku's text is ``n<P>.<K> <send time>`` (``P`` this process, ``K`` its sequence number);
- ``stop``: stops sending, waits for the answers still due, and tells what was sent, acked
  (with the acks' event ids) and refused;
- ``snap``: quick counters (open connections, answers to buys and entries, events seen);
- ``check COUNT LAST``: waits until every open connection has seen the danmaku ``LAST`` (a
  stream id as an integer, see ``id_key``), then counts per connection the numbered danmaku
  missing out of ``COUNT`` published and those seen twice or out of order;
- ``report``: everything measured, for the harness to merge.

What each connection measures, with the receive time taken once per read (``time.time()``: the
harness compares it with its own clock on the same machine):

- numbered danmaku: the events received, in stream-id order (an id not above the last one is
  counted as a duplicate); send -> receipt latency (from the time in the text) on every event of
  one connection in ``--sample-every``, into a 1 ms histogram, and on every connection the
  worst (the oldest event of each frame);
- its own ops: danmaku send -> `ack`, `buy` send -> answer (per outcome), `enter` send -> answer;
  an op answered `unavailable` is resent with the same ref (what the protocol tells a client),
  and timed from its first send to its final answer;
- `sale.started` (it answers with one `buy` at once), `lottery.started` (one `enter`) and
  `lottery.drawn`: the time of receipt;
- a close: the code and the time it came.

Every viewer of a gateway gets the same bytes for a tick's batch, so a room frame is decoded
once per process (keyed by its length and both ends; the first event of a frame carries its
unique stream id) and each connection only compares integers: a cheap client is what lets one
machine run thousands.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import random
import signal
import sys
import time
from array import array
from collections import Counter
from typing import Any

import msgpack

from engine.codec import Subprotocol, encode_value
from engine.tokens import issue
from loadtest.children import raise_nofile
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

SP = Subprotocol.MSGPACK
HIST_MS = 120_000
"""Latency histograms have 1 ms buckets up to this; slower samples land in the last one."""
CACHE_MAX = 4096
"""Decoded room frames kept per process (cleared when full)."""
EDGE = 160
"""Bytes of each end of a frame in its cache key (a danmaku event is about 110 bytes)."""
REF = b"\xa3ref"  # the msgpack string "ref": only replies carry it
SPECIAL = frozenset({"sale.started", "lottery.started", "lottery.drawn"})
LIKE = {"op": "like", "count": 1}
RESENDS = 5
"""An op answered `unavailable` is resent (same ref) up to this many times..."""
BACKOFF_S = 0.5
"""...after 0.5 s, 1 s, 2 s, 4 s, 8 s (each jittered by +-50%)."""


def id_key(event_id: str) -> int:
    """A stream id ``"<ms>-<seq>"`` as one integer in the same order."""
    ms, _, seq = event_id.partition("-")
    return int(ms) * 1_000_000 + int(seq or 0)


def client_frame(value: dict[str, Any]) -> bytes:
    """One masked client frame carrying ``value`` (a zero masking key: legal, and the server
    still does its unmasking work)."""
    payload = encode_value(value, SP)
    n = len(payload)
    if n < 126:
        return bytes((0x80 | OP_BINARY, 0x80 | n)) + b"\0\0\0\0" + payload
    return bytes((0x80 | OP_BINARY, 0x80 | 126)) + n.to_bytes(2, "big") + b"\0\0\0\0" + payload


LIKE_FRAME = client_frame(LIKE)


class Hist:
    """Latencies in 1 ms buckets: exact percentiles to the millisecond, at any sample count."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts = [0] * (HIST_MS + 1)
        self.n = 0

    def add(self, ms: float) -> None:
        i = int(ms)
        self.counts[0 if i < 0 else HIST_MS if i > HIST_MS else i] += 1
        self.n += 1

    def add_since(self, now: float, sends: list[float]) -> None:
        counts = self.counts
        for s in sends:
            i = int((now - s) * 1000.0)
            counts[0 if i < 0 else HIST_MS if i > HIST_MS else i] += 1
        self.n += len(sends)

    def sparse(self) -> dict[str, int]:
        return {str(i): c for i, c in enumerate(self.counts) if c}


class Frame:
    """What a room frame holds, decoded once for every connection that receives it."""

    __slots__ = ("n", "keys", "first", "last", "ordered", "sends", "oldest", "special")

    def __init__(self, events: list[dict[str, Any]]) -> None:
        keys: list[int] = []
        sends: list[float] = []
        special: list[dict[str, Any]] = []
        for ev in events:
            kind = ev.get("type")
            if kind == "danmaku":
                text = ev.get("text", "")
                if text.startswith("n") and "id" in ev:
                    keys.append(id_key(ev["id"]))
                    sends.append(float(text.rpartition(" ")[2]))
            elif kind in SPECIAL:
                special.append(ev)
        self.n = len(keys)
        self.keys = keys
        self.first = keys[0] if keys else 0
        self.last = keys[-1] if keys else 0
        self.ordered = all(a < b for a, b in zip(keys, keys[1:], strict=False))
        self.sends = sends
        self.oldest = min(sends) if sends else 0.0
        self.special = special


class Proc:
    """This process's viewers' shared state: the frame cache and everything measured."""

    def __init__(self, tag: int) -> None:
        self.tag = tag
        self.cache: dict[Any, Frame] = {}
        self.decoded = 0
        self.frames = 0
        self.bytes = 0
        self.dm_lat = Hist()
        self.dm_ack = Hist()
        self.dm_sent = 0
        self.dm_acked = array("q")
        self.dm_errors: Counter[str] = Counter()
        self.likes_sent = 0
        self.buy_lat = array("f")
        self.buy_outcomes: Counter[str] = Counter()
        self.enter_lat = array("f")
        self.enter_outcomes: Counter[str] = Counter()
        self.resends: Counter[str] = Counter()
        """Ops resent after `unavailable`, by the first letter of their ref (d, b, e)."""
        self.sale_seen = array("d")
        self.lottery_seen = array("d")
        self.drawn_seen = array("d")
        self.access: Counter[str] = Counter()
        self.closes: list[tuple[str, int, float]] = []

    def frame(self, payload: bytes) -> Frame:
        n = len(payload)
        key: Any = payload if n <= 2 * EDGE else (n, payload[:EDGE], payload[-EDGE:])
        f = self.cache.get(key)
        if f is None:
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            f = self.cache[key] = Frame(msgpack.unpackb(payload, raw=False))
            self.decoded += 1
        return f


class Conn(asyncio.Protocol):
    """One viewer: upgrade, `welcome`, then room frames, its replies, pings and a close."""

    def __init__(self, proc: Proc, user: str, sampled: bool, request: bytes, accept: bytes) -> None:
        self.proc = proc
        self.user = user
        self.sampled = sampled
        self.request, self.accept = request, accept
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.scanner: FrameScanner | None = None
        self.live: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.last_key = 0
        self.count = 0
        self.dupes = 0
        self.max_lat = 0.0
        self.pending: dict[str, tuple[float, bytes, int]] = {}
        """ref -> (first send time, the op's frame, resends so far)"""
        self.sale_at = 0.0
        self.drawn_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def op(self, ref: str, value: dict[str, Any], now: float) -> None:
        data = client_frame(value)
        self.pending[ref] = (now, data, 0)
        self.write(data)

    def _resend(self, ref: str) -> None:
        entry = self.pending.get(ref)
        if entry is not None and not self.closed:
            self.write(entry[1])

    def data_received(self, data: bytes) -> None:
        if self.scanner is None:
            data = self._upgrade(data)
            if not data:
                return
        frames = self.scanner.feed(data)  # type: ignore[union-attr]
        if not frames:
            return
        now = time.time()
        proc = self.proc
        for opcode, payload in frames:
            if opcode == OP_BINARY:
                proc.frames += 1
                proc.bytes += len(payload)
                if not self.live.done():
                    self._welcome(payload, now)
                elif REF in payload:
                    self._replies(payload, now)
                else:
                    self._apply(proc.frame(payload), now)
            elif opcode == OP_PING:
                self.write(masked_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._closed(close_code(payload), now)
                self.write(masked_frame(OP_CLOSE, payload[:2]))
                self.closed = True
                self.transport.close()  # type: ignore[union-attr]

    def _apply(self, f: Frame, now: float) -> None:
        if f.n:
            if f.ordered and f.first > self.last_key:
                self.count += f.n
                self.last_key = f.last
            else:
                for k in f.keys:
                    if k > self.last_key:
                        self.count += 1
                        self.last_key = k
                    else:
                        self.dupes += 1
            lat = now - f.oldest
            if lat > self.max_lat:
                self.max_lat = lat
            if self.sampled:
                self.proc.dm_lat.add_since(now, f.sends)
        for ev in f.special:
            self._special(ev, now)

    def _special(self, ev: dict[str, Any], now: float) -> None:
        kind = ev["type"]
        proc = self.proc
        if kind == "sale.started" and not self.sale_at:
            self.sale_at = now
            proc.sale_seen.append(now)
            self.op("b1", {"op": "buy", "sale": ev["sale"], "qty": 1, "ref": "b1"}, now)
        elif kind == "lottery.started":
            proc.lottery_seen.append(now)
            self.op("e1", {"op": "enter", "lottery": ev["lottery"], "ref": "e1"}, now)
        elif kind == "lottery.drawn" and not self.drawn_at:
            self.drawn_at = now
            proc.drawn_seen.append(now)

    def _replies(self, payload: bytes, now: float) -> None:
        rest = []
        for ev in msgpack.unpackb(payload, raw=False):
            if ev.get("type") in ("ack", "error") and "ref" in ev:
                self._reply(ev, now)
            else:
                rest.append(ev)
        if rest:
            self._apply(Frame(rest), now)

    def _reply(self, ev: dict[str, Any], now: float) -> None:
        ref = str(ev["ref"])
        entry = self.pending.get(ref)
        if entry is None:
            return
        proc = self.proc
        ok = ev["type"] == "ack"
        if not ok and ev.get("code") == "unavailable" and entry[2] < RESENDS:
            # What a client is told to do: resend the same ref (it is done at most once).
            self.pending[ref] = (entry[0], entry[1], entry[2] + 1)
            proc.resends[ref[0]] += 1
            delay = BACKOFF_S * 2 ** entry[2] * random.uniform(0.5, 1.5)  # (jittered)
            asyncio.get_running_loop().call_later(delay, self._resend, ref)
            return
        del self.pending[ref]
        ms = (now - entry[0]) * 1000.0
        if ref[0] == "d":
            if ok:
                proc.dm_ack.add(ms)
                proc.dm_acked.append(id_key(ev["id"]))
            else:
                proc.dm_errors[str(ev.get("code"))] += 1
        elif ref[0] == "b":
            proc.buy_lat.append(ms)
            proc.buy_outcomes["order" if ok and "order" in ev else str(ev.get("code", "ack"))] += 1
        elif ref[0] == "e":
            proc.enter_lat.append(ms)
            proc.enter_outcomes["entered" if ok else str(ev.get("code"))] += 1

    def _welcome(self, payload: bytes, now: float) -> None:
        events = msgpack.unpackb(payload, raw=False)
        self.proc.access[str(events[0].get("access"))] += 1
        self.live.set_result(None)
        if len(events) > 1:
            self._apply(Frame(events[1:]), now)

    def _closed(self, code: int, now: float) -> None:
        if not self.closed:
            self.proc.closes.append((self.user, code, now))

    def _upgrade(self, data: bytes) -> bytes:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self.head[:end], self.head[end + 4 :]
        self.head = b""
        why = check_upgrade(head, self.accept)
        if why is not None:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
            self._fail(why)
            return b""
        self.scanner = FrameScanner()
        return rest

    def _fail(self, why: str) -> None:
        if not self.live.done():
            self.live.set_exception(ConnectionError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and self.live.done():
            self.proc.closes.append((self.user, 1006, time.time()))  # dropped, no close frame
        self.closed = True
        self._fail(f"connection lost: {exc}")


async def open_all(args: argparse.Namespace, proc: Proc) -> tuple[list[Conn], Counter[str]]:
    """Open every connection, ``--concurrency`` handshakes at a time, 3 tries each."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.concurrency)
    ports = [int(p) for p in args.ports.split(",")]
    conns: list[Conn | None] = [None] * args.count
    errors: Counter[str] = Counter()

    async def one(j: int) -> None:
        i = args.first + j
        user, port = f"show-{i}", ports[i % len(ports)]
        token = issue(args.secret, user, ttl_s=3 * 3600)
        why = "?"
        for attempt in range(3):
            request, accept = upgrade_request(args.host, port, f"/ws/rooms/{args.room}", token, SP)
            async with gate:
                try:
                    transport, conn = await loop.create_connection(
                        lambda r=request, a=accept: Conn(
                            proc, user, j % args.sample_every == 0, r, a
                        ),
                        args.host,
                        port,
                    )
                    try:
                        await asyncio.wait_for(asyncio.shield(conn.live), 30.0)
                    except BaseException:
                        transport.abort()
                        raise
                    conns[j] = conn
                    return
                except (OSError, ConnectionError, TimeoutError) as exc:
                    why = str(exc)[:80] or exc.__class__.__name__
            await asyncio.sleep(0.2 * (attempt + 1))
        errors[why] += 1

    await asyncio.gather(*(one(j) for j in range(args.count)))
    return [c for c in conns if c is not None], errors


class Load:
    """Danmaku and likes, paced open loop at the asked rates, round robin over the senders."""

    def __init__(self, proc: Proc, chatters: list[Conn], likers: list[Conn]) -> None:
        self.proc = proc
        self.chatters = chatters
        self.likers = likers
        self.task: asyncio.Task[None] | None = None
        self.running = False
        self.started = 0.0
        self.stopped = 0.0

    def start(self, dm_rate: float, like_rate: float) -> None:
        self.running = True
        self.started = time.time()
        self.task = asyncio.get_running_loop().create_task(self._run(dm_rate, like_rate))

    async def _run(self, dm_rate: float, like_rate: float) -> None:
        loop = asyncio.get_running_loop()
        proc, t0 = self.proc, loop.time()
        dm = likes = 0
        while self.running:
            elapsed = loop.time() - t0
            now = time.time()
            while self.chatters and dm < elapsed * dm_rate:
                conn = self.chatters[dm % len(self.chatters)]
                ref = f"d{dm}"
                text = f"n{proc.tag}.{dm} {now:.4f}"
                conn.op(ref, {"op": "danmaku", "text": text, "ref": ref}, now)
                dm += 1
            while self.likers and likes < elapsed * like_rate:
                self.likers[likes % len(self.likers)].write(LIKE_FRAME)
                likes += 1
            proc.dm_sent, proc.likes_sent = dm, likes
            await asyncio.sleep(0.005)

    async def stop(self) -> dict[str, Any]:
        """Stop, then wait (up to 15 s) for the danmaku answers still due."""
        self.running = False
        if self.task is not None:
            await self.task
        self.stopped = time.time()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
            any(r[0] == "d" for r in c.pending) for c in self.chatters if not c.closed
        ):
            await asyncio.sleep(0.05)
        p = self.proc
        return {
            "seconds": self.stopped - self.started,
            "dm_sent": p.dm_sent,
            "dm_acked": list(p.dm_acked),
            "dm_errors": dict(p.dm_errors),
            "dm_unanswered": sum(
                1 for c in self.chatters for r in c.pending if r[0] == "d" and not c.closed
            ),
            "likes_sent": p.likes_sent,
        }


async def check(conns: list[Conn], count: int, last: int) -> dict[str, Any]:
    """Wait (up to 30 s) for ``last`` on every open connection, then count gaps and duplicates
    of the numbered danmaku (``count`` were published)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(c.last_key < last for c in conns if not c.closed):
        await asyncio.sleep(0.05)
    open_ = [c for c in conns if not c.closed]
    missing = [max(0, count - c.count) for c in open_]
    return {
        "checked": len(open_),
        "with_gap": sum(1 for m in missing if m),
        "missing": sum(missing),
        "most_missing": max(missing, default=0),
        "extra": sum(max(0, c.count - count) for c in open_),
        "with_dupes": sum(1 for c in open_ if c.dupes),
        "dupes": sum(c.dupes for c in open_),
        "received": sum(c.count for c in open_),
        "timed_out": any(c.last_key < last for c in open_),
    }


def snap(proc: Proc, conns: list[Conn]) -> dict[str, Any]:
    return {
        "open": sum(1 for c in conns if not c.closed),
        "sale_seen": len(proc.sale_seen),
        "buys_answered": len(proc.buy_lat),
        "lottery_seen": len(proc.lottery_seen),
        "entries_answered": len(proc.enter_lat),
        "drawn_seen": len(proc.drawn_seen),
        "closes": len(proc.closes),
        "frames": proc.frames,
        "bytes": proc.bytes,
    }


def report(proc: Proc, conns: list[Conn]) -> dict[str, Any]:
    return {
        **snap(proc, conns),
        "decoded": proc.decoded,
        "dm_lat": proc.dm_lat.sparse(),
        "dm_ack": proc.dm_ack.sparse(),
        "dm_max_ms": max((c.max_lat for c in conns), default=0.0) * 1000.0,
        "buy_lat": list(proc.buy_lat),
        "buy_outcomes": dict(proc.buy_outcomes),
        "enter_lat": list(proc.enter_lat),
        "enter_outcomes": dict(proc.enter_outcomes),
        "resends": dict(proc.resends),
        "sale_seen_at": list(proc.sale_seen),
        "drawn_seen_at": list(proc.drawn_seen),
        "access": dict(proc.access),
        "close_list": proc.closes,
        "open_users": [c.user for c in conns if not c.closed],
    }


def say(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def serve_commands(proc: Proc, conns: list[Conn], args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    senders = conns[: args.chatters + args.likers]
    load = Load(proc, senders[: args.chatters], senders[args.chatters :])
    while True:
        words = (await reader.readline()).decode().split()
        if not words or words[0] == "quit":
            return
        if words[0] == "load":
            load.start(float(words[1]), float(words[2]))
            say({"started": load.started})
        elif words[0] == "stop":
            say(await load.stop())
        elif words[0] == "snap":
            say(snap(proc, conns))
        elif words[0] == "check":
            say(await check(conns, int(words[1]), int(words[2])))
        elif words[0] == "report":
            say(report(proc, conns))


async def main(args: argparse.Namespace) -> None:
    proc = Proc(args.tag)
    t0 = time.monotonic()
    conns, errors = await open_all(args, proc)
    say({"ready": len(conns), "failed": dict(errors), "connect_s": time.monotonic() - t0})
    try:
        await serve_commands(proc, conns, args)
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.abort()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ports", required=True, help="the gateways' ports, comma-separated")
    p.add_argument("--room", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--tag", type=int, default=0, help="this process's number (in the texts)")
    p.add_argument("--first", type=int, default=0, help="index of this process's first viewer")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--chatters", type=int, default=0, help="first N connections send danmaku")
    p.add_argument("--likers", type=int, default=0, help="the next N send likes")
    p.add_argument("--sample-every", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight")
    return p.parse_args(argv)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; Ctrl-C is its to handle
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a stuck run is
    raise_nofile()
    import uvloop

    uvloop.run(main(parse()))
