"""The gateway under test, in a process of its own, driven by a line protocol on stdin.

It runs the production ``gateway.wsserver.Gateway`` under uvloop, as ``liveroom serve`` does,
and prints ``{"ready": port}``. Commands (one per line, one JSON line answers each):

- ``stats``: the hub's counters (frames written, events delivered), the connection count,
  and what ``FlushProbe`` saw of the tick flushes since the last ``stats``.
- ``raw SECONDS ROOM EVENTS HIGH_WATER``: the raw limit. One frame carrying EVENTS danmaku
  events is encoded ONCE with ``gateway.hub.frame`` and written with ``transport.write`` to
  every connection of ROOM, round after round, for SECONDS. A connection whose transport holds
  more than HIGH_WATER unsent bytes is skipped for that round, so the raw writer, like the hub,
  never queues without bound; when a round writes nothing it sleeps 1 ms rather than spin on a
  core the viewers need.
- ``mem-mark`` / ``mem-diff TOP``: with ``PYTHONTRACEMALLOC`` set, take a tracemalloc
  snapshot, then answer what is allocated since it (total bytes, and the TOP source lines by
  size: ``loadtest.memory``'s breakdown).
- ``quit`` (or end of input): stop.

It never changes what the gateway does: ``FlushProbe`` wraps ``hub.flush`` on the instance
only to time it, and the raw writer only reads ``hub.rooms`` and the connections' transports,
the same sockets the hub writes to.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import faulthandler
import gc
import json
import logging
import signal
import sys
import time
import tracemalloc
from array import array

from engine.codec import Subprotocol
from engine.ids import RoomId
from engine.services import Services
from engine.settings import Settings
from gateway.hub import frame
from gateway.wsserver import Gateway


def sample_batch(n: int, now: float) -> list[dict[str, object]]:
    """``n`` danmaku events shaped like the ones the hub sends (with stream ids)."""
    ms = int(now * 1000)
    return [
        {
            "type": "danmaku",
            "user": {"id": f"user-{i % 100}", "name": f"viewer {i % 100}"},
            "text": f"benchmark danmaku number {i}",
            "ts": now,
            "id": f"{ms}-{i}",
        }
        for i in range(n)
    ]


async def raw_fanout(
    gateway: Gateway, room: RoomId, events: int, seconds: float, high_water: int
) -> dict[str, object]:
    data = frame(sample_batch(events, time.time()), Subprotocol.MSGPACK)
    local = gateway.hub.rooms.get(room)
    transports = [c.transport for c in (local.conns if local else ()) if not c.session.closing]
    loop = asyncio.get_running_loop()
    written = skipped = rounds = 0
    wall = cpu = max_wall = 0.0
    t0 = loop.time()
    end = t0 + seconds
    while loop.time() < end:
        w, c = time.perf_counter(), time.process_time()
        wrote = 0
        for t in transports:
            if t.get_write_buffer_size() > high_water or t.is_closing():
                skipped += 1
                continue
            t.write(data)
            wrote += 1
        written += wrote
        rounds += 1
        took = time.perf_counter() - w
        wall += took
        cpu += time.process_time() - c
        max_wall = max(max_wall, took)
        await asyncio.sleep(0 if wrote else 0.001)
    return {
        "seconds": loop.time() - t0,
        "frames": written,
        "skipped": skipped,
        "rounds": rounds,
        "round_wall_s": wall,
        "round_cpu_s": cpu,
        "round_max_wall_s": max_wall,
        "frame_bytes": len(data),
        "conns": len(transports),
    }


class FlushProbe:
    """Times the hub's tick flushes that write, wrapping ``hub.flush_async`` on the instance
    (what each tick runs; a big room's flush yields to the loop between chunks, so its wall and
    CPU time can include a little other work).

    Besides wall and CPU time per flush, it records for every event of a flushed batch how
    long after its publish (``ts``) the flush handed the frame to the LAST connection's
    socket: the gateway's share of the publish-to-deliver latency, with the viewers' share
    (their own scheduling, the kernel) left out.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.flushes = 0
        self.empty = 0
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.max_wall_s = 0.0
        self.out_ms = array("f")
        self._hub = gateway.hub
        self._flush = gateway.hub.flush_async
        gateway.hub.flush_async = self.flush  # type: ignore[method-assign]

    async def flush(self) -> None:
        before = self._hub.frames_written
        stamps = [e["ts"] for r in self._hub.rooms.values() for e in r.batch.history if "ts" in e]
        w, c = time.perf_counter(), time.process_time()
        await self._flush()
        wall = time.perf_counter() - w
        if self._hub.frames_written == before:
            self.empty += 1  # a tick with nothing to send
            return
        self.flushes += 1
        self.wall_s += wall
        self.cpu_s += time.process_time() - c
        self.max_wall_s = max(self.max_wall_s, wall)
        done = time.time()
        self.out_ms.extend((done - ts) * 1000.0 for ts in stamps)

    def take(self) -> dict[str, object]:
        out = {
            "flushes": self.flushes,
            "empty_ticks": self.empty,
            "flush_wall_s": self.wall_s,
            "flush_cpu_s": self.cpu_s,
            "flush_max_wall_s": self.max_wall_s,
            "out_ms": base64.b64encode(self.out_ms.tobytes()).decode(),
        }
        self.max_wall_s = 0.0
        self.out_ms = array("f")
        return out


def stats(gateway: Gateway, probe: FlushProbe) -> dict[str, object]:
    hub = gateway.hub
    return {
        "t": time.time(),
        "frames_written": hub.frames_written,
        "events_delivered": hub.events_delivered,
        "conns": hub.connection_count,
        "reads": gateway.reader.reads,
        **probe.take(),
    }


def say(value: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def mem_diff(mark: tracemalloc.Snapshot, top: int) -> dict[str, object]:
    gc.collect()
    stats = tracemalloc.take_snapshot().compare_to(mark, "lineno")
    rows = []
    for st in stats[:top]:
        frame = st.traceback[0]
        where = f"{_short(frame.filename)}:{frame.lineno}"
        rows.append((where, st.size_diff, st.count_diff))
    return {"total": sum(st.size_diff for st in stats), "top": rows}


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/"):
        if marker in path:
            return (
                path.split(marker, 1)[1].split("/", 1)[-1]
                if marker != "site-packages/"
                else path.split(marker, 1)[1]
            )
    return path


async def serve_commands(gateway: Gateway, probe: FlushProbe) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    marks: list[tracemalloc.Snapshot] = []
    while True:
        words = (await reader.readline()).decode().split()
        if not words or words[0] == "quit":
            return
        if words[0] == "stats":
            say(stats(gateway, probe))
        elif words[0] == "raw":
            seconds, room, events, high_water = words[1:5]
            say(
                await raw_fanout(
                    gateway, RoomId(room), int(events), float(seconds), int(high_water)
                )
            )
        elif words[0] == "mem-mark":
            gc.collect()
            marks[:] = [tracemalloc.take_snapshot()]
            say({"marked": True})
        elif words[0] == "mem-diff":
            say(mem_diff(marks[0], int(words[1])))
        else:
            say({"error": f"unknown command {words[0]!r}"})


async def main(args: argparse.Namespace) -> None:
    settings = Settings(
        redis_url=args.redis_url,
        host="127.0.0.1",
        ws_port=args.port,
        secret=args.secret,
        tick_ms=args.tick_ms,
    ).check()
    services = Services.build(settings)
    gateway = Gateway(services, gateway_id="bench")
    probe = FlushProbe(gateway)
    await gateway.start()
    say({"ready": gateway.port})
    try:
        await serve_commands(gateway, probe)
    finally:
        if gateway.server is not None:
            gateway.server.close(close_connections=False)
        await gateway.stop()
        await services.aclose()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--tick-ms", type=int, default=50)
    return p.parse_args(argv)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; Ctrl-C is its to handle
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a stuck run is
    logging.basicConfig(level=logging.WARNING, format="gateway: %(levelname)s %(name)s %(message)s")
    from loadtest.children import raise_nofile

    raise_nofile()
    import uvloop

    uvloop.run(main(parse()))
