"""The harness side of the benchmark's child processes: start, talk to, time and stop them.

Each child speaks one JSON line per answer on stdout and takes commands on stdin; it exits
when its stdin closes, so a harness that dies takes its children with it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
LINE_LIMIT = 256 * 1024 * 1024  # latency samples travel as one (long) line


async def start_server(
    cmd: list[str], env: dict[str, str], *, quiet: bool = False
) -> asyncio.subprocess.Process:
    """A server in a child process (stdin and stdout piped), once its first line says ready;
    ``quiet``: its stderr is dropped (a bare server's tracebacks for aborted clients)."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL if quiet else None,
    )
    assert proc.stdout is not None
    if not await asyncio.wait_for(proc.stdout.readline(), 60):
        raise RuntimeError(f"{cmd[:5]} did not start")
    return proc


async def stop_server(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    """Signal it, wait up to 20 s, then kill it."""
    if proc.returncode is None:
        proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit (one fd per connection)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Child:
    """One ``python -m MODULE`` child with a JSON-lines conversation on its stdin/stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc

    @classmethod
    async def start(cls, name: str, module: str, args: list[str]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=LINE_LIMIT,
        )
        return cls(name, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, timeout: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.name} exited with {await self.proc.wait()}")
        return json.loads(line)

    async def ask(self, command: str, timeout: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def stop(self, timeout: float = 15.0) -> None:
        if self.proc.returncode is not None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            await asyncio.wait_for(self.proc.wait(), timeout)
        except (OSError, TimeoutError):
            self.kill()
            await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass


@dataclass(frozen=True, slots=True)
class CpuSample:
    t: float
    by_role: dict[str, float]
    """CPU seconds (user + system) used so far by each role's processes."""
    machine_busy: float
    """CPU seconds the whole machine spent busy (every process, ours or not)."""


class CpuClock:
    """CPU time of named groups of processes, and of the machine, for phase-by-phase use."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = {role: [psutil.Process(pid) for pid in pids] for role, pids in roles.items()}
        self.cores = psutil.cpu_count() or 1

    def read(self) -> CpuSample:
        by_role: dict[str, float] = {}
        for role, procs in self.roles.items():
            total = 0.0
            for p in procs:
                try:
                    c = p.cpu_times()
                    total += c.user + c.system
                except psutil.Error:
                    pass
            by_role[role] = total
        m = psutil.cpu_times()
        busy = m.user + m.nice + m.system + getattr(m, "irq", 0.0) + getattr(m, "softirq", 0.0)
        return CpuSample(time.monotonic(), by_role, busy)


def cpu_percent(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Percent of one core used by each role between two samples, plus ``machine``."""
    wall = max(b.t - a.t, 1e-9)
    out = {role: 100.0 * (b.by_role[role] - a.by_role[role]) / wall for role in a.by_role}
    out["machine"] = 100.0 * (b.machine_busy - a.machine_busy) / wall
    out["others"] = max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine"))
    return out
