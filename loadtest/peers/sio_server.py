"""The python-socketio peer: ``socketio.AsyncServer`` with ``socketio.AsyncRedisManager``, an
ASGI app under uvicorn (uvloop, httptools, websockets-sansio), in one process.

    .peers/venv/bin/python loadtest/peers/sio_server.py --port P --redis-url URL --room ROOM

Run by ``loadtest.peers`` with the interpreter of its own venv (``.peers/venv``), never with
the project's. Every socket is put in ROOM by the connect handler, before the server answers
the namespace join, so a viewer that has its ``40`` is in the room. Events reach the room from
outside the process, through Redis pub/sub (``AsyncRedisManager(url, write_only=True).emit``
in ``sio_publisher.py``), and the manager fans each out to the room's sockets as it arrives.
Prints ``{"ready": PORT}`` once listening; ``quit`` or the end of stdin stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import socketio
import uvicorn
import uvloop


def build(redis_url: str, room: str) -> Any:
    """The ASGI app: one AsyncServer whose sockets all join ``room`` on connect."""
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(redis_url),
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, room)

    return socketio.ASGIApp(sio)


async def commands(server: uvicorn.Server) -> None:
    """Read stdin until ``quit`` or its end, then stop at once (the harness waits on us)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line in ("quit", ""):
            server.should_exit = True
            os._exit(0)  # a graceful close of thousands of sockets is not what is measured


async def main(args: argparse.Namespace) -> None:
    config = uvicorn.Config(
        build(args.redis_url, args.room),
        host="127.0.0.1",
        port=args.port,
        loop="none",  # already running under uvloop
        http="httptools",
        ws="websockets-sansio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    serving = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped it
            return
        await asyncio.sleep(0.05)
    sys.stdout.write(json.dumps({"ready": args.port}) + "\n")
    sys.stdout.flush()
    await asyncio.gather(serving, commands(server))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--room", required=True)
    return p.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
