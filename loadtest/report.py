"""Figures of one fan-out run, as a plain-text table and as a section of docs/BENCHMARKS.md.

Pure formatting: nothing here measures. The Markdown section's figures sit between two
markers, so a new run replaces them and leaves the hand-written reading around them alone.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

INTRO = """# Benchmarks

Every figure in this file is measured side by side in one run, on one machine, with the
command printed above it: the liveroom figure and the raw limit it is compared with (what the
same sockets, processes and machine do with the liveroom logic taken out) come from the same
connections in the same run, so the ratio between them means more than either number alone.
Re-run the command to reproduce a section; each section says what bounds its result.
"""

ROLES = ("gateway", "viewers", "redis", "harness", "others", "machine")
ROLE_NAMES = {
    "gateway": "gateway process CPU",
    "viewers": "viewer processes CPU",
    "redis": "redis-server CPU",
    "harness": "harness + publisher CPU",
    "others": "other work on the machine",
    "machine": "whole machine CPU",
}


FRAMES_AIM = 0.6
"""Issue #13: frames/s written by the gateway against the raw `transport.write` limit."""
EVENTS_PER_CORE_AIM = 2_000_000
"""Issue #13: delivered events/s per gateway core, at p99 within the tick + 100 ms."""


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int
    p999_ms: float = 0.0
    """The 99.9th percentile (last, with a default, so positional callers keep working)."""

    @classmethod
    def of(cls, samples_ms: list[float]) -> Latency | None:
        if not samples_ms:
            return None
        s = sorted(samples_ms)
        n = len(s)
        return cls(
            s[int(0.50 * (n - 1))], s[int(0.99 * (n - 1))], s[-1], n, s[int(0.999 * (n - 1))]
        )


@dataclass(frozen=True, slots=True)
class Phase:
    """What one phase delivered, per second, and what it cost."""

    seconds: float
    frames_rx: float
    """Frames per second received by the viewers."""
    events_rx: float
    bytes_rx: float
    frames_tx: float
    """Frames per second the gateway wrote (hub counter, or the raw writer's count)."""
    events_tx: float
    cpu: dict[str, float]
    """Percent of one core, by role."""
    closes: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    open_at_end: int = 0
    latency: Latency | None = None
    """Publish to receipt by a viewer (fan-out phase)."""
    gateway_latency: Latency | None = None
    """Publish to the flush that wrote it to the last connection (fan-out phase)."""
    published: float = 0.0
    """Danmaku per second published (fan-out phase)."""
    rounds: float = 0.0
    """Write rounds per second: tick flushes (fan-out), passes over every connection (raw)."""
    round_wall_ms: float = 0.0
    """Mean wall time of one round."""
    round_cpu_ms: float = 0.0
    """Mean CPU time of the gateway process during one round."""
    round_max_ms: float = 0.0
    empty_ticks: float = 0.0
    """Ticks per second that found nothing to send (fan-out phase)."""


@dataclass(frozen=True, slots=True)
class Run:
    command: str
    viewers: int
    rate: int
    tick_ms: int
    clients: int
    sample_every: int
    fanout: Phase
    raw: Phase
    raw_events_per_frame: int
    raw_frame_bytes: int
    raw_backlog_frames: int
    connect_s: float
    machine: dict[str, str]
    code: str = "unknown"
    when: str = ""

    @property
    def frames_ratio(self) -> float:
        return self.fanout.frames_rx / self.raw.frames_rx if self.raw.frames_rx else 0.0

    @property
    def events_ratio(self) -> float:
        return self.fanout.events_rx / self.raw.events_rx if self.raw.events_rx else 0.0

    @property
    def bytes_ratio(self) -> float:
        return self.fanout.bytes_rx / self.raw.bytes_rx if self.raw.bytes_rx else 0.0

    @property
    def p99_aim_ms(self) -> float:
        return self.tick_ms + 100.0


def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo (every benchmark names its machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def machine_info() -> dict[str, str]:
    model = cpu_model()
    import uvloop
    import websockets

    load = os.getloadavg()
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "uvloop": uvloop.__version__,
        "websockets": websockets.__version__,
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _mb(x: float) -> str:
    return f"{x / 1e6:,.1f}"


def _lat(lat: Latency | None) -> str:
    if lat is None:
        return "-"
    return f"{lat.p50_ms:.1f} / {lat.p99_ms:.1f} / {lat.max_ms:.1f}"


def _us_per_frame(p: Phase) -> float:
    """Gateway CPU per frame written: the cost of one write, whatever the machine lent it."""
    return 10_000.0 * p.cpu.get("gateway", 0.0) / p.frames_tx if p.frames_tx else 0.0


def _round(p: Phase) -> str:
    return f"{p.round_wall_ms:.1f} / {p.round_cpu_ms:.1f} / {p.round_max_ms:.1f}"


def _closes(p: Phase) -> str:
    parts = [f"{n}x{code}" for code, n in sorted(p.closes.items())]
    if p.lost:
        parts.append(f"{p.lost} dropped")
    return ", ".join(parts) or "none"


def rows(run: Run) -> list[tuple[str, str, str, str]]:
    """(figure, gateway fan-out, raw limit, gateway / raw)."""
    f, r = run.fanout, run.raw

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    out = [
        (
            "frames/s received by viewers",
            _n(f.frames_rx),
            _n(r.frames_rx),
            ratio(f.frames_rx, r.frames_rx),
        ),
        (
            "frames/s written by the gateway",
            _n(f.frames_tx),
            _n(r.frames_tx),
            ratio(f.frames_tx, r.frames_tx),
        ),
        (
            "events/s received by viewers",
            _n(f.events_rx),
            _n(r.events_rx),
            ratio(f.events_rx, r.events_rx),
        ),
        (
            "MB/s received by viewers",
            _mb(f.bytes_rx),
            _mb(r.bytes_rx),
            ratio(f.bytes_rx, r.bytes_rx),
        ),
        (
            "events per frame",
            f"{f.events_rx / f.frames_rx:.1f}" if f.frames_rx else "-",
            str(run.raw_events_per_frame),
            "",
        ),
        (
            "gateway CPU µs per frame written",
            f"{_us_per_frame(f):.1f}",
            f"{_us_per_frame(r):.1f}",
            ratio(_us_per_frame(f), _us_per_frame(r)),
        ),
        ("danmaku/s published", _n(f.published), "-", ""),
        ("write rounds/s (tick flushes; raw passes)", f"{f.rounds:.1f}", f"{r.rounds:.1f}", ""),
        ("ms per round: wall / gateway CPU / max wall", _round(f), _round(r), ""),
        ("ticks/s that found nothing to send", f"{f.empty_ticks:.1f}", "-", ""),
        ("publish-to-deliver ms p50 / p99 / max", _lat(f.latency), "-", ""),
        (
            "gateway side: publish to frame written to the last socket, ms",
            _lat(f.gateway_latency),
            "-",
            "",
        ),
    ]
    for role in ROLES:
        out.append(
            (ROLE_NAMES[role] + " %", f"{f.cpu.get(role, 0):.0f}", f"{r.cpu.get(role, 0):.0f}", "")
        )
    out.append(("connections closed / dropped", _closes(f), _closes(r), ""))
    out.append(("connections open at the end", str(f.open_at_end), str(r.open_at_end), ""))
    return out


def verdicts(run: Run) -> list[str]:
    lat = run.fanout.latency
    frames_ok = run.frames_ratio >= FRAMES_AIM
    lines = [
        f"gateway frames/s / raw frames/s = {run.frames_ratio:.2f} "
        f"(aim >= {FRAMES_AIM:.2f}: {'met' if frames_ok else 'NOT met'}); "
        f"events/s {run.events_ratio:.2f}, bytes/s {run.bytes_ratio:.2f}",
    ]
    gateway_cpu = run.fanout.cpu.get("gateway", 0.0)
    if gateway_cpu > 0:
        per_core = run.fanout.events_rx / (gateway_cpu / 100)
        ok = per_core >= EVENTS_PER_CORE_AIM and lat is not None and lat.p99_ms <= run.p99_aim_ms
        lines.append(
            f"delivered events/s per gateway core: {run.fanout.events_rx:,.0f} on "
            f"{gateway_cpu:.0f}% of a core = {per_core:,.0f} per core (aim >= "
            f"{EVENTS_PER_CORE_AIM:,} at p99 <= {run.p99_aim_ms:.0f} ms: "
            f"{'met' if ok else 'NOT met'}; per core is an extrapolation when under 100%)"
        )
    fan_us, raw_us = _us_per_frame(run.fanout), _us_per_frame(run.raw)
    if fan_us and raw_us:
        lines.append(
            f"gateway process CPU per frame written: {fan_us:.1f} µs for everything the gateway "
            f"does (reader, batching, encoding, flushes, keepalives) against {raw_us:.1f} µs for "
            f"a bare `transport.write` ({fan_us / raw_us:.2f}x)"
        )
    if lat is None:
        lines.append("p99 publish-to-deliver: no samples")
    else:
        ok = lat.p99_ms <= run.p99_aim_ms
        lines.append(
            f"p99 publish-to-deliver = {lat.p99_ms:.1f} ms "
            f"(aim <= tick + 100 = {run.p99_aim_ms:.0f} ms: {'met' if ok else 'NOT met'})"
        )
    cores = float(run.machine.get("cpus", "1")) * 100
    for name, p in (("fan-out", run.fanout), ("raw", run.raw)):
        busy = p.cpu.get("machine", 0)
        if busy >= 0.9 * cores:
            lines.append(f"{name} phase: the machine was CPU-bound ({busy:.0f}% of {cores:.0f}%)")
    return lines


def text_table(run: Run) -> str:
    header = ("", "gateway fan-out", "raw transport.write", "gateway / raw")
    table = [header, *rows(run)]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    ]
    return "\n".join(lines + ["", *verdicts(run)])


def markdown(run: Run) -> str:
    m = run.machine
    out = [
        "<!-- fanout:begin (generated by loadtest.fanout; edits inside are overwritten) -->",
        "```",
        run.command,
        "```",
        "",
        f"Run {run.when} at commit {run.code}. Machine: {m['cpus']} CPUs ({m['cpu']}), Linux "
        f"{m['kernel']}, Python {m['python']}, uvloop {m['uvloop']}, websockets "
        f"{m['websockets']}; load average before the run {m['load']}. The gateway, "
        f"{run.clients} viewer processes, redis-server and the harness (which also publishes) "
        'all share these CPUs, with whatever else the machine runs ("other work" below).',
        "",
        f"{run.viewers:,} viewers in one room on one gateway process (tick {run.tick_ms} ms), "
        f"{run.rate:,} danmaku/s published for {run.fanout.seconds:.1f} s with "
        "`engine.bus.RoomBus.publish` from the harness process (the call a gateway makes for "
        "a viewer's danmaku op); the viewers are raw-socket WebSocket clients "
        "(`loadtest/wire.py`, subprotocol `liveroom.v1.msgpack`) that count frames and events "
        "from headers and decode only the sampled connections' frames. Then, on the same "
        f"connections, the raw limit for {run.raw.seconds:.1f} s: one frame of "
        f"{run.raw_events_per_frame} events ({run.raw_frame_bytes:,} bytes, encoded once) "
        "written with `transport.write` to every connection as fast as the viewers take it. "
        f"Connecting took {run.connect_s:.1f} s. Latency is sampled on 1 connection in "
        f"{run.sample_every} ({run.fanout.latency.samples if run.fanout.latency else 0:,} "
        "events). CPU is % of one core.",
        "",
        "| | gateway fan-out | raw `transport.write` | gateway / raw |",
        "|---|---:|---:|---:|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(run)]
    out += ["", *[f"- {v}" for v in verdicts(run)]]
    if run.raw_backlog_frames:
        out.append(
            f"- the raw writer left {run.raw_backlog_frames:,} frames in socket buffers "
            "when it stopped (written but not yet read; not counted as received)"
        )
    out.append("<!-- fanout:end -->")
    return "\n".join(out) + "\n"


SECTION = "## Fan-out (gateway)"
BLOCK = re.compile(r"<!-- fanout:begin.*?<!-- fanout:end -->\n?", re.S)


def write_section(path: Path, generated: str) -> None:
    """Put ``generated`` into the Fan-out section of ``path``, creating what is missing.

    Only the marked block is replaced: other sections, and the hand-written reading that
    follows the block, stay as they are. A file without the intro gets it on top.
    """
    text = path.read_text() if path.exists() else ""  # re-read right before writing
    if not text.lstrip().startswith("# "):
        text = INTRO + (f"\n{text.lstrip()}" if text.strip() else "")
    if BLOCK.search(text):
        text = BLOCK.sub(lambda _: generated, text, count=1)
    elif SECTION in text:
        head, _, tail = text.partition(SECTION)
        text = f"{head}{SECTION}\n\n{generated}{tail}"
    else:
        # The first benchmark of the project goes first, right under the intro.
        first = re.search(r"^## ", text, re.M)
        at = first.start() if first else len(text)
        head, tail = text[:at].rstrip() + "\n\n", text[at:]
        text = f"{head}{SECTION}\n\n{generated}" + (f"\n{tail}" if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def put_section(path: Path, tag: str, section: str, generated: str) -> None:
    """Replace the block ``<!-- TAG:begin ... TAG:end -->`` of ``path`` with ``generated``
    (which carries both markers), or add it under ``section`` (appended when missing). The
    rest of the file, hand-written readings included, stays as it is."""
    text = path.read_text() if path.exists() else INTRO
    block = re.compile(rf"<!-- {re.escape(tag)}:begin.*?<!-- {re.escape(tag)}:end -->\n?", re.S)
    body = generated.rstrip("\n") + "\n"
    if block.search(text):
        text = block.sub(lambda _: body, text, count=1)
    elif section in text:
        head, _, tail = text.partition(section)
        text = f"{head}{section}\n\n{body}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}\n\n{body}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def code_version(root: Path) -> str:
    """The commit measured, and whether engine/ or gateway/ differed from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "engine", "gateway"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes in engine/ or gateway/" if dirty else "")
