"""Test support: real redis-server and real liveroom processes on free ports.

Nothing here fakes the system under test: gateways and the API run as `liveroom serve`
subprocesses, exactly as in production, and are killed or signalled like real ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from engine.tokens import issue
from runtime.redis_server import free_port

SECRET = "test-secret-0123456789abcdef0123456789"

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
"""Debian's Chromium, which every browser test drives (never one Playwright downloads)."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


def token(
    user: str,
    role: str = "viewer",
    *,
    ttl: int = 3600,
    rooms: list[str] | None = None,
    name: str | None = None,
) -> str:
    return issue(SECRET, user, role, ttl_s=ttl, rooms=rooms, name=name)


ADMIN = token("admin", "admin", ttl=86400)


class Proc:
    """One `liveroom serve` process."""

    def __init__(
        self,
        redis_url: str,
        role: str,
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.role = role
        self.ws_port = free_port()
        self.http_port = free_port()
        self.log_path = log_dir / f"{role}-{self.ws_port}.log"
        cmd = [
            sys.executable,
            "-m",
            "runtime.cli",
            "serve",
            "--role",
            role,
            "--redis-url",
            redis_url,
            "--ws-port",
            str(self.ws_port),
            "--http-port",
            str(self.http_port),
            *(args or []),
        ]
        full_env = {
            **os.environ,
            "LIVEROOM_SECRET": SECRET,
            "LIVEROOM_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=self.log)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.strip() == b"ready":
                    ready.set()
            # keep draining until EOF so the child never blocks on a full pipe

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"{self.role} did not start: {self.log_path.read_text()[-2000:]}")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> float:
        """SIGTERM; return how long the process took to exit."""
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Api:
    """HTTP helper against the API process."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def client(self, tok: str | None = ADMIN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10)

    async def create_room(
        self, room: str, *, title: str = "test room", access: dict | None = None, tok: str = ADMIN
    ) -> dict:
        body: dict = {"id": room, "title": title}
        if access is not None:
            body["access"] = access
        async with self.client(tok) as c:
            r = await c.post("/api/rooms", json=body)
        assert r.status_code == 201, r.text
        return r.json()


_counter = [0]


def unique(prefix: str = "room") -> str:
    _counter[0] += 1
    return f"{prefix}-{os.getpid()}-{_counter[0]}-{int(time.time() * 1000) % 100000}"
