"""``liveroom serve --workers N``: N gateway processes on one port (PROTOCOL.md §0).

The supervisor (this module, in the process the operator started) runs no role itself: it
starts N ``liveroom serve`` children that bind the WebSocket port with ``SO_REUSEPORT``, so the
kernel spreads new connections over them, and each is a whole gateway (its own reader, hub,
slots and counters; they share nothing but Redis, exactly like gateways on different hosts).
With ``--role all`` the first child also runs the HTTP API and media (one HTTP port), the
others the gateway only.

It prints ``ready`` once every child has; SIGTERM or SIGINT is passed to every child, each
drains its connections (close 1001) and the supervisor exits when all have. A child that dies
on its own is started again (at most once a second), so one crash costs only its connections.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("liveroom.workers")

RESTART_PAUSE_S = 1.0
"""Least time between a child's crash and its restart."""

STOP_TIMEOUT_S = 60.0
"""Longest wait for the children to drain after SIGTERM before they are killed."""


class Worker:
    """One child ``liveroom serve`` and the thread that forwards its output."""

    def __init__(self, index: int, argv: Sequence[str], env: dict[str, str]) -> None:
        self.index = index
        self.argv = list(argv)
        self.env = env
        self.ready = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.ready.clear()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        threading.Thread(target=self._forward, args=(self.proc,), daemon=True).start()

    def _forward(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                self.ready.set()
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)


def child_argv(argv: Sequence[str], index: int, role: str) -> list[str]:
    """The command of child ``index``: ``serve`` with the operator's arguments, one worker,
    and the gateway role alone for every child but the first when the role is ``all``."""
    out = [sys.executable, "-m", "runtime.cli", "serve", *_without_workers(argv)]
    out += ["--workers", "1"]
    if index > 0 and role == "all":
        out += ["--role", "gateway"]
    return out


def _without_workers(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def supervise(argv: Sequence[str], workers: int, role: str) -> int:
    """Run ``workers`` children of ``serve`` (``argv``: its arguments) until a signal."""
    if role not in ("all", "gateway"):
        raise SystemExit("liveroom: --workers runs gateway processes: use --role gateway or all")
    env = {**os.environ, "LIVEROOM_WS_REUSE_PORT": "1", "LIVEROOM_WORKERS": "1"}
    children = [Worker(i, child_argv(argv, i, role), env) for i in range(workers)]
    stopping = threading.Event()

    def on_signal(sig: int, _frame: object) -> None:
        stopping.set()
        for child in children:
            child.signal(sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children[0].start()
    children[0].ready.wait()  # the first binds the port (and the HTTP port) before the rest
    for child in children[1:]:
        child.start()
    announced = False
    while not stopping.is_set():
        if not announced and all(c.ready.is_set() for c in children):
            print("ready", flush=True)
            announced = True
        for child in children:
            _restart_if_dead(child, stopping)
        stopping.wait(0.1)
    return _wait_all(children)


def _restart_if_dead(child: Worker, stopping: threading.Event) -> None:
    proc = child.proc
    if proc is None or proc.poll() is None or stopping.is_set():
        return
    log.warning(
        "worker %d (pid %d) exited with %s; restarting", child.index, proc.pid, proc.returncode
    )
    pause = RESTART_PAUSE_S - (time.monotonic() - child.started_at)
    if pause > 0:
        stopping.wait(pause)
    if not stopping.is_set():
        child.start()


def _wait_all(children: list[Worker]) -> int:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    code = 0
    for child in children:
        proc = child.proc
        if proc is None:
            continue
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not drain in time; killing it", child.index)
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
            code = 1
    return code
