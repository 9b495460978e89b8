"""Media benchmark: CPU per WHEP viewer with shared packets vs per-viewer encoding, and how many
720p30 + Opus viewers one media process sustains with no frame or audio loss.

    python -m loadtest.media [--steps 1,50,100,...] [--per-viewer-steps 1,2,4,8,12,16] [--nice -19]
                             [--window 8] [--clients 1] [--write-md docs/BENCHMARKS.md]

One run, one machine. The media process (`liveroom serve --role media`, test pattern 1280x720
at 30 fps, H.264 constrained baseline) is pinned to CPU 0; viewer processes run on the other
CPUs. Viewers are real aiortc peers (ICE, DTLS, SRTP, RTCP) whose receivers count RTP packets,
sequence gaps and frames (marker bits) instead of decoding, so that the clients cost as little
as possible. Each viewer takes the room's sound too (Opus, 50 packets/s; ``--no-audio`` for
video only), counted the same way. Two media processes are measured one after the other in the
same run:

- shared: the product (one encoder per room, the same packets to every viewer's sender);
- per-viewer encode: the same code with ``LIVEROOM_MEDIA_SHARED_ENCODER=0``, i.e. what a
  relay of raw frames costs (aiortc's ``MediaRelay`` default): an encoder per viewer.

At each step the harness adds viewers, lets them settle, then measures a window: the media
process's CPU (user+system, all threads, percent of one core), every viewer's frames, audio
packets and lost packets, and the keyframe skips the server made for lagging viewers. A step
holds when every viewer got >= 29 fps and >= 49 audio packets/s, no packet (video or audio)
was lost and no viewer skipped. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.report import cpu_model

ROOT = Path(__file__).resolve().parent.parent
SECRET = "media-bench-secret-0123456789abcdef0123"
SECTION = "## Media (WHEP)"

# -- the viewer side (child processes) -----------------------------------------------------


@dataclass(slots=True)
class _Count:
    packets: int = 0
    frames: int = 0
    lost: int = 0
    bytes: int = 0
    last_seq: int | None = None


def _patch_receiver() -> None:
    """Count RTP instead of jitter-buffering and decoding it: the client must stay cheap."""
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    async def handle(self: Any, packet: Any, arrival_time_ms: int) -> None:
        c: _Count | None = getattr(self, "_bench", None)
        if c is None:
            c = self._bench = _Count()
        if packet.payload_type not in self._bench_pts:
            return  # RTX or anything else
        c.packets += 1
        c.bytes += len(packet.payload)
        c.frames += packet.marker
        if c.last_seq is not None:
            gap = (packet.sequence_number - c.last_seq - 1) & 0xFFFF
            if gap < 0x8000:
                c.lost += gap
            else:
                return  # late or duplicate: not newer than what we had
        c.last_seq = packet.sequence_number

    RTCRtpReceiver._handle_rtp_packet = handle  # type: ignore[method-assign]


async def _worker(url: str, room: str, audio: bool = True) -> None:
    import httpx
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.codecs import CODECS

    from engine.tokens import issue

    _patch_receiver()
    import gc

    pauses = [0.0, 0.0]  # start of the running collection, longest pause since the last sample

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            pauses[0] = time.perf_counter()
        else:
            pauses[1] = max(pauses[1], time.perf_counter() - pauses[0])

    gc.callbacks.append(on_gc)
    stall = [0.0]  # the viewer process's longest event-loop stall since the last sample

    async def watch_loop() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.02)
            stall[0] = max(stall[0], time.perf_counter() - t - 0.02)

    watcher = asyncio.get_running_loop().create_task(watch_loop())
    viewers: list[tuple[Any, Any, str]] = []
    marks: list[tuple[int, int, int, int]] = []
    video_pts = {c.payloadType for c in CODECS["video"] if c.name != "rtx"}
    audio_pts = {c.payloadType for c in CODECS["audio"]}
    http = httpx.AsyncClient(base_url=url, timeout=60)
    serial = [0]

    async def add_one() -> str | None:
        serial[0] += 1
        tok = issue(SECRET, f"bench{os.getpid()}x{serial[0]}", "viewer", ttl_s=7200)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        t = pc.addTransceiver("video", direction="recvonly")
        t.receiver._bench = _Count()
        t.receiver._bench_pts = video_pts
        sound = None
        if audio:
            sound = pc.addTransceiver("audio", direction="recvonly").receiver
            sound._bench = _Count()
            sound._bench_pts = audio_pts
        await pc.setLocalDescription(await pc.createOffer())
        r = await http.post(
            f"/whep/rooms/{room}",
            content=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {tok}"},
        )
        if r.status_code != 201:
            await pc.close()
            return f"{r.status_code} {r.text[:120]}"
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        viewers.append((pc, t.receiver, sound, r.headers["location"]))
        marks.append((0, 0, 0, 0, 0, 0))
        return None

    async def add(n: int, concurrency: int = 8) -> dict:
        sem = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one() -> None:
            async with sem:
                try:
                    err = await add_one()
                except Exception as exc:  # count it; the step will show it
                    err = f"{exc.__class__.__name__}: {exc}"
                if err:
                    errors.append(err)

        await asyncio.gather(*(one() for _ in range(n)))
        return {"viewers": len(viewers), "errors": errors[:5], "failed": len(errors)}

    def sample() -> dict:
        """Per viewer since the last sample: frames, lost packets, packets, bytes, audio
        packets, lost audio packets."""
        out = []
        for i, (_, receiver, sound, _) in enumerate(viewers):
            c = receiver._bench
            a = sound._bench if sound is not None else _Count()
            now = (c.frames, c.lost, c.packets, c.bytes, a.packets, a.lost)
            out.append([a - b for a, b in zip(now, marks[i], strict=True)])
            marks[i] = now
        t = os.times()
        gc_ms, pauses[1] = pauses[1] * 1000, 0.0
        stall_ms, stall[0] = stall[0] * 1000, 0.0
        return {"per_viewer": out, "cpu": t.user + t.system, "gc_ms": gc_ms, "stall_ms": stall_ms}

    async def close() -> dict:
        async def one(pc: Any, location: str) -> None:
            try:
                await http.delete(location)
            except Exception:
                pass
            await pc.close()

        await asyncio.gather(*(one(pc, loc) for pc, _, _, loc in viewers))
        viewers.clear()
        return {"closed": True}

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if "add" in cmd:
            reply = await add(int(cmd["add"]))
        elif "sample" in cmd:
            reply = sample()
        else:
            reply = await close()
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if "close" in cmd:
            break
    watcher.cancel()
    await http.aclose()


def _place(cpus: set[int], nice: int) -> None:
    """In a child before exec: pin it to ``cpus``; a negative ``nice`` (root only) shields
    the measurement from other work on the machine."""
    os.sched_setaffinity(0, cpus)
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


class Worker:
    """One viewer process, spoken to with JSON lines."""

    def __init__(
        self, url: str, room: str, cpus: set[int], nice: int = 0, audio: bool = True
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.media", "--worker", url, room]
            + ([] if audio else ["--no-audio"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            preexec_fn=lambda: _place(cpus, nice),
            text=True,
        )

    async def ask(self, cmd: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        if not line:
            raise RuntimeError("a viewer process died")
        return json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- the harness ---------------------------------------------------------------------------


class MediaProc:
    """`liveroom serve --role media`, pinned to one CPU."""

    def __init__(
        self, redis_url: str, cpu: int, env: dict[str, str], log: Path, nice: int = 0
    ) -> None:
        from runtime.redis_server import free_port

        self.port = free_port()
        self.log = open(log, "wb")
        full_env = {
            **os.environ,
            "LIVEROOM_SECRET": SECRET,
            "LIVEROOM_LOG_LEVEL": "WARNING",
            "LIVEROOM_MEDIA_MAX_SESSIONS": "5000",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "serve", "--role", "media",
             "--redis-url", redis_url, "--http-port", str(self.port),
             "--ws-port", str(free_port())],
            env=full_env, stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT,
            preexec_fn=lambda: _place({cpu}, nice),
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == b"ready":
                break
        else:
            raise RuntimeError(f"media process did not start; see {log}")
        import psutil

        self.ps = psutil.Process(self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@dataclass
class Step:
    viewers: int
    server_cpu: float
    """Percent of one core used by the media process during the window."""
    client_cpu: float
    """Percent of one core used by all viewer processes together."""
    fps_min: float
    fps_avg: float
    lost: int
    skips: int
    mbps_per_viewer: float
    audio_pps_min: float = 0.0
    """Fewest audio packets per second any viewer received (50 is all of them)."""
    audio_lost: int = 0
    audio: bool = True
    late_ticks: int = 0
    failed_joins: int = 0
    others_cpu0: float = 0.0
    """Percent of CPU 0 used by anything but the media process (other load on the machine)."""
    softirq_cpu0: float = 0.0
    """Part of ``others_cpu0`` spent in softirqs (the kernel's network stack, ours included)."""
    steal_cpu0: float = 0.0
    """Percent of CPU 0 the hypervisor gave to someone else."""
    client_stall_ms: float = 0.0
    """Longest event-loop stall of a viewer process (GC pause or not) during the window."""
    client_gc_ms: float = 0.0

    @property
    def holds(self) -> bool:
        sound = not self.audio or (self.audio_pps_min >= 49.0 and self.audio_lost == 0)
        return (
            self.fps_min >= 29.0
            and self.lost == 0
            and self.skips == 0
            and sound
            and self.viewers > 0
        )


@dataclass
class Series:
    name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def last_held(self) -> Step | None:
        last = None
        for s in self.steps:
            if not s.holds:
                break
            last = s
        return last

    def per_added_viewer(self) -> float:
        """CPU (percent of a core) per viewer added between the first step and the largest
        step that held with the media core below 90% busy: what one more viewer costs, the
        room's encoder left out (a full core's CPU says nothing of what a viewer costs)."""
        first = self.steps[0] if self.steps else None
        last = None
        for s in self.steps:
            if not s.holds:
                break
            if s.server_cpu < 90:
                last = s
        if first is None or last is None or last.viewers == first.viewers:
            return float("nan")
        return (last.server_cpu - first.server_cpu) / (last.viewers - first.viewers)

    def per_viewer_at_max(self) -> float:
        """CPU per viewer at the largest step that held, the encoder(s) included."""
        last = self.last_held
        return last.server_cpu / last.viewers if last else float("nan")

    @property
    def sustained(self) -> int:
        best = 0
        for s in self.steps:
            if not s.holds:
                break
            best = s.viewers
        return best


async def _stats(url: str, room: str) -> dict:
    import httpx

    from engine.tokens import issue

    admin = issue(SECRET, "bench-admin", "admin", ttl_s=7200)
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        r = await c.get("/media/stats", headers={"Authorization": f"Bearer {admin}"})
    return r.json()


async def _measure(
    media: MediaProc,
    workers: list[Worker],
    room: str,
    window: float,
    settle: float,
    audio: bool = True,
) -> Step:
    import psutil

    await asyncio.sleep(settle)
    before = await _stats(media.url, room)
    c0 = media.cpu()
    m0 = psutil.cpu_times(percpu=True)[0]
    s0 = await asyncio.gather(*(w.ask({"sample": True}) for w in workers))
    t0 = time.monotonic()
    await asyncio.sleep(window)
    c1 = media.cpu()
    m1 = psutil.cpu_times(percpu=True)[0]
    s1 = await asyncio.gather(*(w.ask({"sample": True}) for w in workers))
    dt = time.monotonic() - t0
    after = await _stats(media.url, room)
    per = [v for s in s1 for v in s["per_viewer"]]
    frames = [v[0] / dt for v in per]
    n = len(per)
    late = after["rooms"].get(room, {}).get("late_ticks", 0) - before["rooms"].get(room, {}).get(
        "late_ticks", 0
    )
    return Step(
        viewers=n,
        server_cpu=100 * (c1 - c0) / dt,
        client_cpu=100 * sum(b["cpu"] - a["cpu"] for a, b in zip(s0, s1, strict=True)) / dt,
        fps_min=min(frames) if frames else 0.0,
        fps_avg=sum(frames) / n if n else 0.0,
        lost=sum(v[1] for v in per),
        skips=after["viewer_skips"] - before["viewer_skips"],
        mbps_per_viewer=(sum(v[3] for v in per) * 8 / dt / 1e6 / n) if n else 0.0,
        audio_pps_min=min(v[4] / dt for v in per) if per else 0.0,
        audio_lost=sum(v[5] for v in per),
        audio=audio,
        late_ticks=late,
        others_cpu0=max(0.0, 100 * (_busy(m1) - _busy(m0) - (c1 - c0)) / dt),
        softirq_cpu0=100 * (m1.softirq - m0.softirq) / dt,
        client_stall_ms=max(x["stall_ms"] for x in s1) if s1 else 0.0,
        client_gc_ms=max(x["gc_ms"] for x in s1) if s1 else 0.0,
        steal_cpu0=100 * (getattr(m1, "steal", 0.0) - getattr(m0, "steal", 0.0)) / dt,
    )


def _busy(t: Any) -> float:
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


async def _wait_quiet(limit_s: float) -> float:
    """Wait (up to ``limit_s``) until the machine is idle: this benchmark measures CPU, and other
    work on the same cores would be charged to it. Returns the busy percent when it started."""
    import psutil

    deadline = time.monotonic() + limit_s
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < 15 or time.monotonic() > deadline:
            return busy
        print(f"  waiting for a quiet machine ({busy:.0f}% busy)", flush=True)
        await asyncio.sleep(4)


async def _series(
    name: str,
    redis_url: str,
    env: dict[str, str],
    steps: list[int],
    args: argparse.Namespace,
    log_dir: Path,
) -> Series:
    import httpx

    from engine.tokens import issue

    busy = await _wait_quiet(args.wait_quiet)
    if busy >= 15:
        print(f"  the machine is {busy:.0f}% busy: figures will be pessimistic", flush=True)
    media = MediaProc(redis_url, 0, env, log_dir / f"media-{name}.log", args.nice)
    ncpu = os.cpu_count() or 2
    client_cpus = set(range(1, ncpu)) or {0}
    room = f"bench-{name}-{int(time.time())}"
    admin = issue(SECRET, "bench-admin", "admin", ttl_s=7200)
    async with httpx.AsyncClient(base_url=media.url, timeout=30) as c:
        r = await c.post(
            "/api/rooms",
            json={"id": room, "title": "media bench", "media": {"source": "pattern"}},
            headers={"Authorization": f"Bearer {admin}"},
        )
        r.raise_for_status()
    workers = [
        Worker(media.url, room, client_cpus, args.nice, args.audio) for _ in range(args.clients)
    ]
    series = Series(name)
    try:
        have = 0
        for target in steps:
            need = target - have
            failed = 0
            for i, w in enumerate(workers):
                share = need // len(workers) + (1 if i < need % len(workers) else 0)
                if share:
                    reply = await w.ask({"add": share})
                    failed += reply["failed"]
                    if reply["errors"]:
                        print(f"  join errors: {reply['errors']}", file=sys.stderr)
            have = target - failed
            step = await _measure(media, workers, room, args.window, args.settle, args.audio)
            step.failed_joins = failed
            series.steps.append(step)
            print(f"  {name:>18} {_row(step)}", flush=True)
            if not step.holds and step.viewers >= 1:
                break
    finally:
        for w in workers:
            try:
                await asyncio.wait_for(w.ask({"close": True}), 60)
            except Exception:
                pass
            w.stop()
        media.stop()
    return series


def _row(s: Step) -> str:
    return (
        f"viewers {s.viewers:>4}  media CPU {s.server_cpu:6.1f}%  clients CPU {s.client_cpu:6.1f}%"
        f"  fps min/avg {s.fps_min:5.1f}/{s.fps_avg:5.1f}  lost {s.lost:>5}  skips {s.skips:>4}"
        f"  audio pkt/s min {s.audio_pps_min:4.1f} lost {s.audio_lost}"
        f"  {s.mbps_per_viewer:.2f} Mbit/s/viewer  late ticks {s.late_ticks}"
        f"  viewer stall {s.client_stall_ms:.0f} ms (gc {s.client_gc_ms:.0f})"
        f"  others on CPU 0 {s.others_cpu0:4.1f}% (softirq {s.softirq_cpu0:.1f}%,"
        f" steal {s.steal_cpu0:.1f}%)"
        f"  {'holds' if s.holds else 'FAILS'}"
    )


def _machine() -> str:
    model = cpu_model("unknown CPU")
    import aiortc
    import av

    return (
        f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}, "
        f"aiortc {aiortc.__version__}, PyAV {av.__version__}"
    )


def _markdown(
    shared: Series,
    per_viewer: Series,
    args: argparse.Namespace,
    cmd: str,
    aiortc_loop: Series | None = None,
) -> str:
    ss, ps = shared.per_added_viewer(), per_viewer.per_added_viewer()
    sa, pa = shared.per_viewer_at_max(), per_viewer.per_viewer_at_max()
    last_ok = shared.last_held
    first_bad = next((s for s in shared.steps if not s.holds), None)
    lines = [
        SECTION,
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {_machine()}. The media process is pinned to CPU 0, the viewer processes to",
        "the other CPUs. Source: the built-in test pattern, 1280x720 at 30 fps, H.264",
        f"constrained baseline at {int(args.bitrate) // 1000} kbit/s, keyframe every second"
        + (", and its Opus tone (64 kbit/s, 20 ms packets)." if args.audio else "."),
        "Viewers are aiortc peers (ICE, DTLS, SRTP, RTCP) that count RTP packets, sequence gaps",
        "and frames instead of decoding"
        + (", video and audio" if args.audio else " (video only)")
        + ". A step holds when every viewer received >= 29 fps"
        + (" and >= 49 audio packets/s" if args.audio else "")
        + " with no lost packet and no keyframe skip. Audio is one shared Opus feed per room in"
        " both columns: only video differs between them."
        + (
            f" Media and viewer processes ran at nice {args.nice}, to shield the measurement"
            " from other work on the machine."
            if args.nice
            else ""
        ),
        "",
        "| | shared packets (liveroom) | per-viewer encode (peer) |",
        "|---|---|---|",
        f"| media CPU per added viewer (steps below 90% of the core) | {ss:.2f}% of a core"
        f" | {ps:.2f}% of a core "
        f"({ps / ss if ss > 0 else float('nan'):.0f}x) |",
        f"| media CPU per viewer at the largest step that held, encoding included "
        f"| {sa:.2f}% | {pa:.2f}% ({pa / sa if sa > 0 else float('nan'):.0f}x) |",
        f"| 720p30{' + Opus' if args.audio else ''} viewers one media process (one core)"
        " sustains with no frame or audio loss "
        f"| **{shared.sustained}** | {per_viewer.sustained} |",
        "",
    ]
    if aiortc_loop is not None:
        al = aiortc_loop.per_added_viewer()
        lines += [
            "The shared column runs the lean RTP loop (`media/rtc.py` `shared_sender`: header,",
            "SRTP, send). The same shared packets through aiortc's own RTP loop"
            " (`LIVEROOM_MEDIA_LEAN_SENDER=0`), in the same run:"
            f" {al:.2f}% of a core per added viewer ({al / ss if ss > 0 else float('nan'):.2f}x"
            f" the lean loop), {aiortc_loop.sustained} viewers sustained.",
            "",
            "| viewers | media CPU, lean loop | media CPU, aiortc's loop"
            " | fps min, lean / aiortc |",
            "|---:|---:|---:|---:|",
        ]
        for a, b in zip(shared.steps, aiortc_loop.steps, strict=False):
            lines.append(
                f"| {a.viewers} | {a.server_cpu:.1f} | {b.server_cpu:.1f} |"
                f" {a.fps_min:.1f} / {b.fps_min:.1f} |"
            )
        lines.append("")
    lines += [
        "Shared packets, step by step:",
        "",
        "| viewers | media CPU (% core) | viewer processes CPU | fps min / avg | lost | skips |"
        " audio packets/s min | audio lost | Mbit/s per viewer | other load on CPU 0 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in shared.steps:
        lines.append(
            f"| {s.viewers} | {s.server_cpu:.1f} | {s.client_cpu:.1f} | "
            f"{s.fps_min:.1f} / {s.fps_avg:.1f} | {s.lost} | {s.skips} | {s.audio_pps_min:.1f} |"
            f" {s.audio_lost} | {s.mbps_per_viewer:.2f} | {s.others_cpu0:.0f}% |"
        )
    lines += ["", "Per-viewer encode (same code, `LIVEROOM_MEDIA_SHARED_ENCODER=0`):", ""]
    lines += [
        "| viewers | media CPU (% core) | fps min / avg | lost | skips |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in per_viewer.steps:
        lines.append(
            f"| {s.viewers} | {s.server_cpu:.1f} | {s.fps_min:.1f} / {s.fps_avg:.1f} | "
            f"{s.lost} | {s.skips} |"
        )
    lines.append("")
    if last_ok is not None:
        lines.append(
            f"At {last_ok.viewers} viewers the media process used {last_ok.server_cpu:.0f}% of "
            "its core."
        )
    if first_bad is not None:
        client_cores = max(1, (os.cpu_count() or 2) - 1)
        if first_bad.server_cpu >= 90 and first_bad.client_cpu >= 90 * client_cores:
            bound = (
                "both the media process and the viewer processes (all cores were full): on"
                " this machine the viewers' side runs out as soon as the media process does"
            )
        elif first_bad.server_cpu >= 90:
            bound = "the media process (its core was full)"
        elif first_bad.client_cpu >= 90 * client_cores:
            bound = "the viewer processes (their cores were full), not the media process"
        else:
            bound = (
                "neither process's core being full: other load on the machine "
                f"({first_bad.others_cpu0:.0f}% of CPU 0 went to other processes)"
            )
        lines.append(
            f"The first step that did not hold ({first_bad.viewers} viewers) was bounded by "
            f"{bound}."
        )
    for series in (shared, per_viewer):
        noisy = [s for s in series.steps if s.others_cpu0 > 5]
        if noisy:
            lines.append(
                f"Other processes used up to {max(s.others_cpu0 for s in noisy):.0f}% of CPU 0 "
                f"during {len(noisy)} {series.name} step(s): those figures are pessimistic."
            )
    lines.append(
        "Near the limit, figures move from run to run on a shared machine: the step table "
        "shows where this run's limit fell."
    )
    lines.append("")
    return "\n".join(lines)


def _write_section(path: Path, section: str) -> None:
    """Replace our section (up to the next `## ` heading) or append it; re-read just before."""
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(r"^## Media \(WHEP\)\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section
    path.write_text(text)


async def _main(args: argparse.Namespace) -> None:
    from runtime.redis_server import RedisServer

    steps = [int(x) for x in args.steps.split(",")]
    pv_steps = [int(x) for x in args.per_viewer_steps.split(",")]
    env = {
        "LIVEROOM_MEDIA_WIDTH": "1280",
        "LIVEROOM_MEDIA_HEIGHT": "720",
        "LIVEROOM_MEDIA_FPS": "30",
        "LIVEROOM_MEDIA_BITRATE": str(args.bitrate),
        "LIVEROOM_MEDIA_CODECS": "H264",
        "LIVEROOM_MEDIA_MAX_SESSIONS_PER_USER": "5000",
    }
    with tempfile.TemporaryDirectory(prefix="liveroom-media-bench-") as tmp:
        redis = RedisServer(Path(tmp) / "redis", appendonly=False).start()
        try:
            print("per-viewer encode (peer):", flush=True)
            per_viewer = await _series(
                "per-viewer-encode",
                redis.url,
                {**env, "LIVEROOM_MEDIA_SHARED_ENCODER": "0"},
                pv_steps,
                args,
                Path(tmp),
            )
            print("shared packets (liveroom):", flush=True)
            shared = await _series("shared", redis.url, env, steps, args, Path(tmp))
            aiortc_loop = None
            if args.compare_loop:
                print("shared packets, aiortc's own RTP loop:", flush=True)
                aiortc_loop = await _series(
                    "shared-aiortc-loop",
                    redis.url,
                    {**env, "LIVEROOM_MEDIA_LEAN_SENDER": "0"},
                    steps,
                    args,
                    Path(tmp),
                )
        finally:
            redis.stop()
    cmd = "python -m loadtest.media " + " ".join(sys.argv[1:])
    md = _markdown(shared, per_viewer, args, cmd, aiortc_loop)
    print()
    print(md)
    if args.write_md:
        _write_section(Path(args.write_md), md)
        print(f"wrote {args.write_md}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        import uvloop

        uvloop.run(_worker(sys.argv[2], sys.argv[3], "--no-audio" not in sys.argv))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="1,50,100,150,200,250,300,350,400")
    p.add_argument("--per-viewer-steps", default="1,2,4,8,12,16")
    p.add_argument("--window", type=float, default=8.0, help="seconds measured per step")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after joins before a step")
    p.add_argument("--clients", type=int, default=1, help="viewer processes")
    p.add_argument("--bitrate", type=int, default=1_500_000)
    p.add_argument(
        "--nice", type=int, default=0, help="priority of media and viewer processes (root: <0)"
    )
    p.add_argument(
        "--wait-quiet", type=float, default=300, help="seconds to wait for an idle machine"
    )
    p.add_argument("--no-audio", dest="audio", action="store_false", help="viewers take video only")
    p.add_argument(
        "--no-compare-loop",
        dest="compare_loop",
        action="store_false",
        help="skip the series with aiortc's own RTP loop",
    )
    p.add_argument("--write-md", help="write the section into this file (docs/BENCHMARKS.md)")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
