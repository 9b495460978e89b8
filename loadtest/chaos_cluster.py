"""The parts of a chaos run (``loadtest.chaos``): its private processes and its clients.

``Cluster`` starts redis-server (AOF, ``appendfsync always``), the gateways and the API as real
``liveroom serve`` children on fixed ports, so that a SIGKILLed one comes back where clients
expect it; every child is killed on exit. ``ChaosClient`` is the shipped ``LiveroomClient``
plus a record, in its reader's order, of the history ids it took and the replies by ``ref``.
Nothing here decides whether a run passed: that is ``loadtest.chaos_audit``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from engine.codec import Event
from runtime.redis_server import RedisServer, free_port
from sdk.client import ClientError, ConnectionClosedByServer, LiveroomClient

ROOT = Path(__file__).resolve().parent.parent
REPLY_TYPES = ("ack", "error", "welcome")
SEND_ERRORS = (
    TimeoutError,
    ConnectionClosed,
    InvalidHandshake,
    OSError,
    AssertionError,  # LiveroomClient.send before the first connection
    ConnectionClosedByServer,  # LiveroomClient.send when the client stopped resuming
)
"""What sending an op, or opening a connection, raises while a gateway or Redis is away."""


# -- processes -------------------------------------------------------------------------------

_children: list[asyncio.subprocess.Process] = []


@atexit.register
def _kill_leftovers() -> None:
    # Last resort when the event loop died before `Cluster.close`: our own children only.
    for proc in _children:
        if proc.returncode is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class ServeProcess:
    """One ``liveroom serve --role ROLE`` child on fixed ports (a restart reuses them)."""

    def __init__(self, role: str, redis_url: str, secret: str, log_dir: Path, name: str) -> None:
        self.role = role
        self.name = name
        self.redis_url = redis_url
        self.secret = secret
        self.ws_port = free_port()
        self.http_port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.starts = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self, timeout: float = 60.0) -> None:
        env = {
            **os.environ,
            "LIVEROOM_SECRET": self.secret,
            "LIVEROOM_LOG_LEVEL": "WARNING",
            # The audit compares with the FULL stream: keep it all for the run.
            "LIVEROOM_HISTORY_KEEP_EVENTS": "1000000",
        }
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "runtime.cli",
                "serve",
                "--role",
                self.role,
                "--redis-url",
                self.redis_url,
                "--ws-port",
                str(self.ws_port),
                "--http-port",
                str(self.http_port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                env=env,
            )
        _children.append(self.proc)
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while (line := await self.proc.stdout.readline()) and line.strip() != b"ready":
                    pass
                if not line:
                    raise RuntimeError(f"{self.name} exited while starting")
        except BaseException:
            await self.kill()
            raise RuntimeError(
                f"{self.name} did not start; its log: {self.log_path}\n"
                + self.log_path.read_text(errors="replace")[-2000:]
            ) from None
        self._drain = asyncio.get_running_loop().create_task(self._drain_stdout(self.proc))

    @staticmethod
    async def _drain_stdout(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while await proc.stdout.read(65536):
            pass

    async def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None


class Cluster:
    """redis-server, three gateways and one API process, all private to this run."""

    def __init__(self, workdir: Path, secret: str, gateways: int = 3) -> None:
        self.workdir = workdir
        self.secret = secret
        self.redis = RedisServer(workdir / "redis", appendonly=True, fsync="always")
        url = self.redis.url
        self.gateways = [
            ServeProcess("gateway", url, secret, workdir, f"gateway{i}") for i in range(gateways)
        ]
        self.api = ServeProcess("api", url, secret, workdir, "api")

    @property
    def ws_urls(self) -> list[str]:
        return [g.ws_url for g in self.gateways]

    async def start(self) -> None:
        await asyncio.to_thread(self.redis.start)
        await asyncio.gather(self.api.start(), *(g.start() for g in self.gateways))

    async def kill_gateway(self, index: int) -> dict[str, Any]:
        g = self.gateways[index]
        t0 = time.monotonic()
        await g.kill()
        await g.start()
        return {"gateway": g.name, "down_s": round(time.monotonic() - t0, 3)}

    async def restart_redis(self, down_s: float) -> dict[str, Any]:
        t0 = time.monotonic()
        await asyncio.to_thread(self.redis.stop, True)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.redis.start)
        return {"down_s": round(time.monotonic() - t0, 3)}

    async def close(self) -> None:
        await asyncio.gather(
            *(p.kill() for p in [*self.gateways, self.api]), return_exceptions=True
        )
        await asyncio.to_thread(self.redis.stop, True)


# -- clients ---------------------------------------------------------------------------------


class ChaosClient(LiveroomClient):
    """The shipped client, plus a record of what its reader took, in the reader's order."""

    def __init__(self, *args: Any, record: bool = False, user: str = "", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.user = user
        self.record = record
        self.seen: list[tuple[int, str]] = []
        self.replies: dict[str, Event] = {}
        self._reply_events: dict[str, asyncio.Event] = {}
        self.ended: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        self._drainer: asyncio.Task[None] | None = None

    def _take(self, ev: Event) -> None:
        kind = ev.get("type")
        if self.record and "id" in ev and kind not in REPLY_TYPES:
            self.seen.append((len(self.welcomes), ev["id"]))
        ref = ev.get("ref")
        if kind in ("ack", "error") and isinstance(ref, str):
            self.replies[ref] = ev
            waiter = self._reply_events.get(ref)
            if waiter is not None:
                waiter.set()
        super()._take(ev)

    async def ask(self, op: dict[str, Any], timeout: float) -> Event:
        """Send ``op`` (with its ``ref``) and return the next reply that carries that ref."""
        ref = op["ref"]
        self.replies.pop(ref, None)
        waiter = self._reply_events[ref] = asyncio.Event()
        try:
            await self.send(op)
            await asyncio.wait_for(waiter.wait(), timeout)
            return self.replies[ref]
        finally:
            if self._reply_events.get(ref) is waiter:
                del self._reply_events[ref]

    def start_draining(self) -> None:
        """Consume the event queue (memory stays flat) and note how the client ended."""

        async def drain() -> None:
            try:
                while True:
                    await self.next_event()
            except ConnectionClosedByServer as exc:
                outcome = f"closed_{exc.code}"
            except ClientError as exc:
                outcome = f"refused_{exc.status}" if exc.status else f"error_{exc.code}"
            if not self.ended.done():
                self.ended.set_result((outcome, time.monotonic()))

        self._drainer = asyncio.get_running_loop().create_task(drain())

    def died(self) -> str | None:
        """Why the client stopped on its own, if it did."""
        if self.ended.done():
            return self.ended.result()[0]
        reader = self._reader
        if reader is not None and reader.done() and not reader.cancelled():
            exc = reader.exception()
            if exc is not None:
                return f"reader crashed: {type(exc).__name__}: {exc}"
        return None

    async def shut(self) -> None:
        await self.close()
        if self._drainer is not None:
            self._drainer.cancel()
