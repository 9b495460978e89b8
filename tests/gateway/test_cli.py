"""The `liveroom` command as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from websockets.asyncio.client import connect

from engine.codec import decode_events
from engine.tokens import verify
from gateway.redis_server import free_port
from tests.support import SECRET

LIVEROOM = [sys.executable, "-m", "gateway.cli"]


def test_token_prints_a_verifiable_token() -> None:
    out = subprocess.run(
        [*LIVEROOM, "token", "--user", "hosty", "--role", "host", "--ttl", "60", "--rooms", "a,b"],
        env={**os.environ, "LIVEROOM_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ident = verify(SECRET, out)
    assert ident.user == "hosty" and ident.role.value == "host"
    assert ident.rooms == {"a", "b"}
    assert 50 < ident.exp - time.time() <= 60


def test_serve_refuses_the_default_secret_outside_dev_mode() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LIVEROOM_SECRET"}
    r = subprocess.run(
        [*LIVEROOM, "serve", "--role", "gateway", "--ws-port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "default token secret" in r.stderr


async def test_up_brings_a_demo_room_a_plain_client_gets_welcome(tmp_path: Path) -> None:
    http_port, ws_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEROOM_SECRET", "REDIS_URL")}
    proc = subprocess.Popen(
        [
            *LIVEROOM,
            "up",
            "--http-port",
            str(http_port),
            "--ws-port",
            str(ws_port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                up.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert up.wait(60), "".join(lines)
        text = "".join(lines)
        ws_url = re.search(r"websocket\s+(ws://\S+)", text).group(1)  # type: ignore[union-attr]
        assert "/rooms/demo?token=" in text and "/host/demo?token=" in text
        # a token from `liveroom token`, in dev mode (same default secret as `up`)
        tok = subprocess.run(
            [*LIVEROOM, "token", "--user", "someone"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        base = ws_url.split("?")[0]
        async with connect(f"{base}?token={tok}") as ws:
            welcome = decode_events(await ws.recv())[0]
        assert welcome["type"] == "welcome"
        assert welcome["room"]["id"] == "demo" and welcome["room"]["status"] == "live"
        assert welcome["user"]["id"] == "someone"
        assert (tmp_path / "data" / "redis").is_dir()  # its private redis-server
    finally:
        proc.send_signal(2)
        proc.wait(20)
    assert proc.returncode == 0
