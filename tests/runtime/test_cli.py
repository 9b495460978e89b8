"""The `liveroom` command as a user runs it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from websockets.asyncio.client import connect

from engine.codec import decode_events
from engine.tokens import verify
from runtime.redis_server import free_port
from tests.support import SECRET

LIVEROOM = [sys.executable, "-m", "runtime.cli"]
ROOT = Path(__file__).resolve().parents[2]


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


def start_up(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Run an `up` command; return the process and what it printed up to "Ctrl-C"."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
    deadline = time.monotonic() + 90
    while not up.wait(0.2) and proc.poll() is None and time.monotonic() < deadline:
        pass
    if not up.is_set():
        proc.kill()
        raise AssertionError("`up` did not come up:\n" + "".join(lines))
    return proc, "".join(lines)


async def assert_demo_welcomes_a_plain_client(text: str, env: dict[str, str]) -> None:
    ws_url = re.search(r"websocket\s+(ws://\S+)", text).group(1)  # type: ignore[union-attr]
    assert "/rooms/demo?token=" in text and "/host/demo?token=" in text
    assert "as a VIP" in text  # a member's link: tier prices show in the demo's sales
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


def stop_up(proc: subprocess.Popen) -> None:
    proc.send_signal(2)
    proc.wait(30)
    assert proc.returncode == 0


def dev_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LIVEROOM_SECRET", "REDIS_URL")}


async def test_up_brings_a_demo_room_a_plain_client_gets_welcome(tmp_path: Path) -> None:
    cmd = [
        *LIVEROOM,
        "up",
        "--http-port",
        str(free_port()),
        "--ws-port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    env = dev_env()
    proc, text = start_up(cmd, tmp_path, env)
    try:
        await assert_demo_welcomes_a_plain_client(text, env)
        assert (tmp_path / "data" / "redis").is_dir()  # its private redis-server
    finally:
        stop_up(proc)


async def test_readme_first_command_as_written_in_a_fresh_checkout(tmp_path: Path) -> None:
    """`scripts/up`, no flags, in a checkout that has never run: the default data dir is
    relative (`.liveroom`), which is what a newcomer gets. The checkout's `.venv` is this
    one (so setup finds its packages installed); the ports come from the environment only
    because 8080/8081 may be taken on a test machine."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("scripts", "pyproject.toml", "README.md"):
        src = ROOT / name
        dst = checkout / name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
    # The same .venv: `scripts/setup` must find it up to date (the README's test command just
    # ran it), or it would reinstall this project from the bare checkout into it.
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = (ROOT / ".venv" / ".liveroom-installed").read_text().split()
    assert stamp and stamp[0] == digest, "the .venv is older than pyproject.toml: run scripts/setup"
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    first = re.search(r"Run it: `([^`]+)`", (ROOT / "README.md").read_text()).group(1)  # type: ignore[union-attr]
    assert first == "scripts/up"
    env = {
        **dev_env(),
        "LIVEROOM_HTTP_PORT": str(free_port()),
        "LIVEROOM_WS_PORT": str(free_port()),
    }
    proc, text = start_up(["bash", "-c", first], checkout, env)
    try:
        await assert_demo_welcomes_a_plain_client(text, env)
        assert (checkout / ".liveroom" / "redis" / "redis.log").is_file()
    finally:
        stop_up(proc)
