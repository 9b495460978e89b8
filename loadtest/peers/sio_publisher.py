"""Events into a python-socketio room from outside its server, through Redis, at a steady rate.

    .peers/venv/bin/python loadtest/peers/sio_publisher.py --redis-url URL --room ROOM --rate R

Run by ``loadtest.peers`` with ``.peers/venv``'s interpreter. Each event is one
``socketio.AsyncRedisManager(url, write_only=True).emit("danmaku", data, room=ROOM)`` (one
PUBLISH), ``data`` shaped like the liveroom benchmark's danmaku and stamped ``ts`` (Unix time,
seconds) when emitted. The loop catches up when an emit was slow, so the offered rate is the
asked rate, like ``loadtest.fanout.Publisher``.

Line protocol (one JSON line answers each command): prints ``{"ready": true}``; ``start``
starts publishing; ``snap`` answers ``{"sent": N, "t": UNIX}``; ``stop`` stops and answers the
same; ``quit`` or the end of stdin exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import socketio
import uvloop


class Publisher:
    """Emits at ``rate`` per second until ``stopping``; ``sent`` counts the emits done."""

    def __init__(self, manager: socketio.AsyncRedisManager, room: str, rate: float) -> None:
        self.manager = manager
        self.room = room
        self.rate = rate
        self.sent = 0
        self.stopping = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not self.stopping:
            while self.sent <= (loop.time() - t0) * self.rate and not self.stopping:
                n = self.sent
                data = {
                    "type": "danmaku",
                    "user": {"id": f"user-{n % 100}", "name": f"viewer {n % 100}"},
                    "text": f"benchmark danmaku number {n}",
                    "ts": time.time(),
                }
                await self.manager.emit("danmaku", data, room=self.room, namespace="/")
                self.sent += 1
            await asyncio.sleep(max(0.001, t0 + self.sent / self.rate - loop.time()))


def say(value: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    manager = socketio.AsyncRedisManager(args.redis_url, write_only=True)
    publisher = Publisher(manager, args.room, args.rate)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    task: asyncio.Task[None] | None = None
    say({"ready": True})
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "start" and task is None:
            task = loop.create_task(publisher.run())
            say({"sent": publisher.sent, "t": time.time()})
        elif line == "snap":
            say({"sent": publisher.sent, "t": time.time()})
        elif line == "stop":
            publisher.stopping = True
            if task is not None:
                await task
            say({"sent": publisher.sent, "t": time.time()})
        elif line in ("quit", ""):
            publisher.stopping = True
            return


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--rate", type=float, required=True)
    return p.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
