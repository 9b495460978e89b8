"""A whole live show on one machine, with the production processes, and what every viewer saw.

    python -m loadtest.show [--viewers 10000] [--danmaku 500] [--likes 5000] [--gateways 1]
                            [--write-md docs/BENCHMARKS.md]

The processes: a private redis-server (AOF, ``appendfsync everysec``), ``python -m runtime.cli
serve --role api`` (the HTTP API) and ``--gateways`` ``python -m runtime.cli serve --role
gateway`` processes (each on its own port; viewers are spread over them), all with
``LIVEROOM_SECRET`` set and otherwise default settings, and ``--clients`` viewer processes
(``loadtest.show_viewers``: raw sockets, thousands of connections each). The harness (this
process) plays the host and the payment provider through the HTTP API with an admin token.

The show, in one PAID room (``{"mode":"paid","price_cents":990,"tiers":["vip"],
"preview_seconds":0}``):

1. every viewer gets a ticket (``EntitlementCheck.grant_ticket``, straight into Redis), then
   ``--viewers`` connect (``liveroom.v1.msgpack``);
2. chat: ``--danmaku`` danmaku/s as ``danmaku`` ops from ``--chatters`` viewers (each well inside
   the per-user rate of ``engine/settings.py``: 2/s, burst 10), each numbered in its text with
   its send time, and ``--likes`` ``like`` ops/s (count 1) from ``--likers`` viewers, for the
   whole show; after ``--warm`` s:
3. a flash sale of ``--stock`` items (``POST /api/rooms/{room}/sales``, per_user_limit 1): each
   viewer sends one ``buy`` when it sees ``sale.started``; then ``GET .../orders`` and the sale;
4. a refund wave: ``DELETE /api/rooms/{room}/tickets/{user}`` for ``--refunds`` viewers at once
   (written by hand on connections opened beforehand, so no HTTP client's CPU is timed); each
   of their connections must close with 4403 within 1 s of its own call;
5. a lottery (``POST .../lotteries``, ``--lottery-s`` long): each viewer sends ``enter`` when it
   sees ``lottery.started``; it draws itself at its end; every viewer must get ``lottery.drawn``;
6. the chat stops; every open viewer must then hold every acked danmaku once, in stream order
   (the history order of the contract: ids only rise; a viewer's count against the acks tells
   the numbers it missed).

An op answered ``unavailable`` is resent with the same ref (0.5 s, 1 s, ... up to 5 times), as
the protocol tells a client to, and is timed from its first send; the resends are counted.

Measured (all clocks are this machine's ``time.time()``): per event class the latency p50 / p99
/ max -- danmaku send -> receipt by the other viewers (every event of 1 viewer in
``--sample-every``; the max over every viewer), danmaku send -> ack, ``POST .../sales`` sent ->
``sale.started`` received, ``buy`` sent -> answer, ``enter`` sent -> answer, the draw (the
record's ``drawn_at``) -> ``lottery.drawn`` received, refund call sent -> close seen; counts
(orders, outcomes per code, refunds closed within 1 s, other closes, viewers with a gap,
duplicates, likes counted); the CPU of each process group per phase. Nothing asserts: the
checks are reported as held or not, and where the machine does not carry the load, the figures
say what was reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from engine.access import EntitlementCheck
from engine.ids import RoomId
from engine.store import connect
from engine.tokens import issue
from loadtest.children import (
    ROOT,
    Child,
    CpuClock,
    CpuSample,
    cpu_percent,
    raise_nofile,
    start_server,
    stop_server,
)
from loadtest.report import Latency, code_version, machine_info, put_section
from runtime.redis_server import RedisServer, free_port

SECRET = "show-bench-secret-0123456789abcdef-0123456789"
ROOM = RoomId("show-bench")
ACCESS = {"mode": "paid", "price_cents": 990, "tiers": ["vip"], "preview_seconds": 0}
REFUND_AIM_S = 1.0
INTERRUPTED: list[bool] = []
"""Set by the first Ctrl-C or SIGTERM."""
PHASES = (  # (name, label, from mark, to mark)
    ("join", "joining", "join0", "join"),
    ("chat", "chat + likes only", "show0", "chat"),
    ("sale", "flash sale", "chat", "sale"),
    ("refund", "refund wave", "refund0", "refund"),
    ("lottery", "lottery", "refund", "lottery"),
    ("show", "whole show", "show0", "show"),
)
ROLES = ("gateway", "api", "redis", "viewers", "harness", "others", "machine")


def shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def hist_latency(sparse: list[dict[str, int]], max_ms: float | None = None) -> Latency | None:
    """p50 / p99 (1 ms buckets, lower bound) of merged histograms; ``max_ms`` if known."""
    counts: Counter[int] = Counter()
    for s in sparse:
        for k, v in s.items():
            counts[int(k)] += v
    n = sum(counts.values())
    if not n:
        return None
    ordered = sorted(counts.items())

    def pct(q: float) -> float:
        rank, acc = int(q * (n - 1)), 0
        for ms, c in ordered:
            acc += c
            if acc > rank:
                return float(ms)
        return float(ordered[-1][0])

    return Latency(pct(0.5), pct(0.99), max_ms if max_ms is not None else ordered[-1][0], n)


async def raw_refunds(
    port: int, token: str, users: list[str]
) -> list[tuple[str, float, float, int]]:
    """``DELETE /api/rooms/{room}/tickets/{user}`` for every user at once, each on its own
    connection opened beforehand, written by hand (an HTTP client's own CPU would be timed
    too): (user, request written, answer read, status) per user."""
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in users))

    async def one(
        user: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, float, float, int]:
        request = (
            f"DELETE /api/rooms/{ROOM}/tickets/{user} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        t0 = time.time()
        writer.write(request.encode())
        answer = await reader.read()  # (until the server closes, after its answer)
        t1 = time.time()
        writer.close()
        status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b"0"
        return user, t0, t1, int(status)

    return list(
        await asyncio.gather(*(one(u, r, w) for u, (r, w) in zip(users, conns, strict=True)))
    )


class Show:
    """The processes of one show, what the harness did when, and what came back."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.redis_server = RedisServer(tmp / "redis", appendonly=True, fsync="everysec")
        self.api: asyncio.subprocess.Process | None = None
        self.gateways: list[asyncio.subprocess.Process] = []
        self.ports: list[int] = []
        self.children: list[Child] = []
        self.http: httpx.AsyncClient | None = None
        self.clock: CpuClock | None = None
        self.marks: dict[str, CpuSample] = {}
        self.refund_users: list[str] = []
        self.http_port = 0
        self.admin = ""
        self.out: dict[str, Any] = {"machine": machine_info(), "code": code_version(ROOT)}

    # -- processes --------------------------------------------------------------------------

    async def start_servers(self) -> None:
        self.redis_server.start()
        url = self.redis_server.url
        env = {**os.environ, "LIVEROOM_SECRET": SECRET, "LIVEROOM_LOG_LEVEL": "WARNING"}
        env["LIVEROOM_MAX_CONNECTIONS"] = str(max(15_000, self.args.viewers + 1_000))
        base = [sys.executable, "-m", "runtime.cli", "serve", "--redis-url", url]
        http_port = free_port()
        self.api = await start_server([*base, "--role", "api", "--http-port", str(http_port)], env)
        for _ in range(self.args.gateways):
            port = free_port()
            cmd = [*base, "--role", "gateway", "--ws-port", str(port)]
            self.gateways.append(await start_server(cmd, env))
            self.ports.append(port)
        self.http_port = http_port
        self.admin = issue(SECRET, "show-admin", "admin", ttl_s=3 * 3600)
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}",
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=60.0,
        )

    async def setup_room(self) -> None:
        """The paid room, live, and a ticket for every viewer (timed)."""
        assert self.http is not None
        body = {"id": ROOM, "title": "the live show", "access": ACCESS}
        (await self.http.post("/api/rooms", json=body)).raise_for_status()
        (await self.http.post(f"/api/rooms/{ROOM}/live")).raise_for_status()
        redis = connect(self.redis_server.url)
        access = EntitlementCheck(redis)
        gate = asyncio.Semaphore(64)

        async def grant(i: int) -> None:
            async with gate:
                await access.grant_ticket(ROOM, f"show-{i}", None)

        t0 = time.monotonic()
        await asyncio.gather(*(grant(i) for i in range(self.args.viewers)))
        self.out["grant_s"] = time.monotonic() - t0
        await redis.aclose()
        print(f"{self.args.viewers:,} tickets granted in {self.out['grant_s']:.1f} s", flush=True)

    async def connect(self) -> None:
        """Start the viewer processes; they join at once (timed to the last `welcome`)."""
        a = self.args
        counts = shares(a.viewers, a.clients)
        chat, like = shares(a.chatters, a.clients), shares(a.likers, a.clients)
        refunds = shares(a.refunds, a.clients)
        first = 0
        for i, count in enumerate(counts):
            argv = (
                f"--ports {','.join(map(str, self.ports))} --room {ROOM} --secret {SECRET} "
                f"--tag {i} --first {first} --count {count} --chatters {chat[i]} "
                f"--likers {like[i]} --sample-every {a.sample_every} "
                f"--concurrency {a.concurrency}"
            )
            self.children.append(
                await Child.start(f"viewers-{i}", "loadtest.show_viewers", argv.split())
            )
            self.refund_users += [f"show-{first + count - 1 - j}" for j in range(refunds[i])]
            first += count
        assert self.api is not None and self.redis_server.proc is not None
        self.clock = CpuClock(
            {
                "gateway": [g.pid for g in self.gateways],
                "api": [self.api.pid],
                "redis": [self.redis_server.proc.pid],
                "viewers": [c.pid for c in self.children],
                "harness": [os.getpid()],
            }
        )
        self.mark("join0")
        ready = await asyncio.gather(*(c.read(timeout=900) for c in self.children))
        self.mark("join")
        failed: Counter[str] = Counter()
        for r in ready:
            failed.update(r["failed"])
        self.out["connected"] = sum(r["ready"] for r in ready)
        self.out["connect_failed"] = dict(failed)
        self.out["connect_s"] = max(r["connect_s"] for r in ready)
        print(
            f"{self.out['connected']:,} of {a.viewers:,} viewers joined in "
            f"{self.out['connect_s']:.1f} s" + (f"; failed: {dict(failed)}" if failed else ""),
            flush=True,
        )

    async def stop(self) -> None:
        """Every child, whatever happened: viewers first (nothing left to drain), then the
        gateways, the API and Redis."""
        for c in self.children:
            with contextlib.suppress(Exception):
                await c.stop(timeout=5)
        for proc in [*self.gateways, *([self.api] if self.api else [])]:
            with contextlib.suppress(Exception):
                await stop_server(proc)
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.aclose()
        self.redis_server.stop()

    # -- helpers ----------------------------------------------------------------------------

    def mark(self, name: str) -> None:
        assert self.clock is not None
        self.marks[name] = self.clock.read()

    async def ask_all(self, command: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(c.ask(command, timeout) for c in self.children)))

    async def wait_for(self, have: str, want: str, timeout: float) -> tuple[float, int, int]:
        """Poll the viewers until the sum of ``have`` reaches the sum of ``want``:
        (seconds waited, have, want)."""
        t0 = time.monotonic()
        while True:
            snaps = await self.ask_all("snap")
            got, need = sum(s[have] for s in snaps), sum(s[want] for s in snaps)
            waited = time.monotonic() - t0
            if got >= need or waited > timeout:
                return waited, got, need
            await asyncio.sleep(0.2)

    # -- the show ---------------------------------------------------------------------------

    async def perform(self) -> None:
        a = self.args
        for c, (dm, lk) in zip(self.children, self.rates(), strict=True):
            await c.ask(f"load {dm} {lk}")
        self.out["show_started"] = time.time()
        self.mark("show0")
        print(f"chat: {a.danmaku:g} danmaku/s and {a.likes:g} likes/s ...", flush=True)
        await asyncio.sleep(a.warm)
        self.mark("chat")
        await self.flash_sale()
        self.mark("sale")
        await asyncio.sleep(1.0)
        self.mark("refund0")
        await self.refund_wave()
        self.mark("refund")
        await self.lottery()
        self.mark("lottery")
        stops = await self.ask_all("stop", timeout=60)
        self.mark("show")
        await self.check_chat(stops)

    def rates(self) -> list[tuple[float, float]]:
        a = self.args
        chat, like = shares(a.chatters, a.clients), shares(a.likers, a.clients)
        return [
            (a.danmaku * c / max(a.chatters, 1), a.likes * k / max(a.likers, 1))
            for c, k in zip(chat, like, strict=True)
        ]

    async def flash_sale(self) -> None:
        """The sale opens to everyone; wait for every open viewer's buy to be answered."""
        assert self.http is not None
        a = self.args
        body = {
            "item": "show-sku",
            "title": "flash sale",
            "price_cents": 990,
            "stock": a.stock,
            "per_user_limit": 1,
            "duration_s": 600,
        }
        print(f"flash sale: {a.stock:,} items ...", flush=True)
        self.out["sale_call_at"] = time.time()
        r = await self.http.post(f"/api/rooms/{ROOM}/sales", json=body)
        r.raise_for_status()
        sale = r.json()["id"]
        waited, got, need = await self.wait_for("buys_answered", "open", a.phase_timeout)
        self.out["buys_s"], self.out["buys_answered"], self.out["buyers"] = waited, got, need
        orders = await self.http.get(f"/api/rooms/{ROOM}/sales/{sale}/orders")
        record = await self.http.get(f"/api/rooms/{ROOM}/sales/{sale}")
        self.out["orders"] = len(orders.json())
        self.out["order_users"] = len({o["user"] for o in orders.json()})
        self.out["sale"] = record.json()
        print(
            f"  {got:,} of {need:,} buys answered in {waited:.1f} s; "
            f"{self.out['orders']:,} orders, sold {self.out['sale']['sold']:,}",
            flush=True,
        )

    async def refund_wave(self) -> None:
        """Refund ``--refunds`` viewers at once; wait (up to 5 s) for their closes."""
        print(f"refund wave: {len(self.refund_users)} viewers ...", flush=True)
        before = sum(s["closes"] for s in await self.ask_all("snap"))
        self.out["refunds"] = await raw_refunds(self.http_port, self.admin, self.refund_users)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            closes = sum(s["closes"] for s in await self.ask_all("snap"))
            if closes - before >= len(self.refund_users):
                break
            await asyncio.sleep(0.1)

    async def lottery(self) -> None:
        """A lottery opens; viewers enter; it draws itself; wait for every `lottery.drawn`."""
        assert self.http is not None
        a = self.args
        body = {"prize": "show prize", "winners": a.winners, "duration_s": a.lottery_s}
        print(f"lottery: {a.lottery_s} s ...", flush=True)
        r = await self.http.post(f"/api/rooms/{ROOM}/lotteries", json=body)
        r.raise_for_status()
        lottery = r.json()
        waited, got, need = await self.wait_for("entries_answered", "open", a.phase_timeout)
        self.out["entries_s"], self.out["entries_answered"], self.out["enterers"] = (
            waited,
            got,
            need,
        )
        left = lottery["ends_at"] - time.time()
        _, got, need = await self.wait_for("drawn_seen", "open", max(0, left) + a.phase_timeout)
        self.out["drawn_seen"], self.out["drawn_want"] = got, need
        record = (await self.http.get(f"/api/rooms/{ROOM}/lotteries/{lottery['id']}")).json()
        self.out["lottery"] = {k: v for k, v in record.items() if k != "entrants"}
        print(
            f"  {self.out['entries_answered']:,} entries answered; "
            f"{record.get('entrants_count', 0):,} entrants; drawn seen by {got:,} of {need:,}",
            flush=True,
        )

    async def check_chat(self, stops: list[dict[str, Any]]) -> None:
        """Every acked danmaku, counted once per open viewer; the room's counters."""
        assert self.http is not None
        acked = sorted(k for s in stops for k in s["dm_acked"])
        self.out["dm"] = {
            "sent": sum(s["dm_sent"] for s in stops),
            "acked": len(acked),
            "errors": dict(sum((Counter(s["dm_errors"]) for s in stops), Counter())),
            "unanswered": sum(s["dm_unanswered"] for s in stops),
            "likes_sent": sum(s["likes_sent"] for s in stops),
            "seconds": max(s["seconds"] for s in stops),
            "distinct_ids": len(set(acked)),
        }
        last = acked[-1] if acked else 0
        checks = await self.ask_all(f"check {len(acked)} {last}", timeout=90)
        self.out["gaps"] = {k: sum(c[k] for c in checks) for k in checks[0] if k != "timed_out"}
        self.out["gaps"]["most_missing"] = max(c["most_missing"] for c in checks)
        self.out["gaps"]["timed_out"] = any(c["timed_out"] for c in checks)
        await asyncio.sleep(1.5)  # the gateways' counter reports (every 250 ms)
        self.out["stats"] = (await self.http.get(f"/api/rooms/{ROOM}/stats")).json()
        self.out["reports"] = await self.ask_all("report", timeout=120)


# -- the figures ------------------------------------------------------------------------------


def figures(show: Show) -> dict[str, Any]:
    """Latencies, closes and CPU from what the show collected (``show.out``, updated)."""
    out = show.out
    reps = out["reports"]
    lat: dict[str, Latency | None] = {}
    lat["danmaku"] = hist_latency([r["dm_lat"] for r in reps], max(r["dm_max_ms"] for r in reps))
    lat["danmaku_ack"] = hist_latency([r["dm_ack"] for r in reps])
    lat["sale"] = Latency.of(
        [1000 * (t - out["sale_call_at"]) for r in reps for t in r["sale_seen_at"]]
    )
    lat["buy"] = Latency.of([x for r in reps for x in r["buy_lat"]])
    lat["enter"] = Latency.of([x for r in reps for x in r["enter_lat"]])
    drawn_at = out["lottery"].get("drawn_at")
    lat["drawn"] = (
        Latency.of([1000 * (t - drawn_at) for r in reps for t in r["drawn_seen_at"]])
        if drawn_at
        else None
    )
    closes = {u: (code, t) for r in reps for u, code, t in r["close_list"]}
    refund_ms, within, refund_codes, api_ms = [], 0, Counter(), []
    for user, sent, answered, _status in out["refunds"]:
        api_ms.append(1000 * (answered - sent))
        if user in closes:
            code, t = closes[user]
            refund_codes[str(code)] += 1
            refund_ms.append(1000 * (t - sent))
            within += code == 4403 and t - sent <= REFUND_AIM_S
        else:
            refund_codes["none"] += 1
    lat["refund"] = Latency.of(refund_ms)
    lat["refund_api"] = Latency.of(api_ms)
    refunded = {u for u, *_ in out["refunds"]}
    others = Counter(str(c) for u, (c, _) in closes.items() if u not in refunded)
    outcomes: Counter[str] = sum((Counter(r["buy_outcomes"]) for r in reps), Counter())
    entries: Counter[str] = sum((Counter(r["enter_outcomes"]) for r in reps), Counter())
    access: Counter[str] = sum((Counter(r["access"]) for r in reps), Counter())
    resends: Counter[str] = sum((Counter(r["resends"]) for r in reps), Counter())
    cpu = {}
    for key, _, a, b in PHASES:
        ma, mb = show.marks[a], show.marks[b]
        cpu[key] = (cpu_percent(ma, mb), mb.t - ma.t)
    out.update(
        lat=lat,
        refunds_within=within,
        refund_codes=dict(refund_codes),
        other_closes=dict(others),
        buy_outcomes=dict(outcomes),
        enter_outcomes=dict(entries),
        access=dict(access),
        resends={"danmaku": resends["d"], "buy": resends["b"], "enter": resends["e"]},
        refund_status=dict(Counter(str(st) for *_, st in out["refunds"])),
        cpu=cpu,
    )
    return out


def _ms(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def latency_rows(out: dict[str, Any]) -> list[str]:
    lat = out["lat"]
    rows = [
        ("danmaku", "op sent -> received by the other viewers (max: every viewer)", "danmaku"),
        ("danmaku ack", "op sent -> `ack` to its sender", "danmaku_ack"),
        ("sale.started", "`POST .../sales` sent -> received", "sale"),
        ("buy", "op sent -> `ack` with the order or `error`", "buy"),
        ("enter", "op sent -> answer", "enter"),
        ("lottery.drawn", "the draw (record's `drawn_at`) -> received", "drawn"),
        ("refund close", "`DELETE .../tickets/{user}` sent -> close 4403 seen", "refund"),
        ("refund call", "`DELETE .../tickets/{user}` sent -> its HTTP answer", "refund_api"),
    ]
    lines = [
        "| event | what is timed | samples | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, what, key in rows:
        x = lat.get(key)
        if x is None:
            lines.append(f"| {name} | {what} | 0 | - | - | - |")
        else:
            lines.append(
                f"| {name} | {what} | {x.samples:,} | {_ms(x.p50_ms)} | {_ms(x.p99_ms)} "
                f"| {_ms(x.max_ms)} |"
            )
    return lines


def _codes(c: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "none"


def count_rows(out: dict[str, Any], args: argparse.Namespace) -> list[str]:
    dm, gaps, sale = out["dm"], out["gaps"], out["sale"]
    secs = max(dm["seconds"], 1e-9)
    lot = out["lottery"]
    rows = [
        ("viewers connected (of asked)", f"{out['connected']:,} of {args.viewers:,}"),
        ("all joined in", f"{out['connect_s']:.1f} s (tickets granted in {out['grant_s']:.1f} s)"),
        ("`welcome.access`", _codes(out["access"])),
        ("chat ran", f"{dm['seconds']:.1f} s"),
        ("danmaku sent / acked", f"{dm['sent']:,} / {dm['acked']:,} ({dm['acked'] / secs:,.0f}/s)"),
        ("danmaku refused, by code", _codes(dm["errors"])),
        ("danmaku unanswered at the end", f"{dm['unanswered']:,}"),
        ("danmaku deliveries counted (viewer x event)", f"{gaps['received']:,}"),
        ("viewers checked for gaps (open at the end)", f"{gaps['checked']:,}"),
        ("viewers with a gap / danmaku missing", f"{gaps['with_gap']:,} / {gaps['missing']:,}"),
        (
            "duplicates or out of order (viewers / events)",
            f"{gaps['with_dupes']:,} / {gaps['dupes']:,}",
        ),
        ("likes sent / counted by the room", f"{dm['likes_sent']:,} / {out['stats']['likes']:,}"),
        (
            "buys answered (of viewers open)",
            f"{out['buys_answered']:,} of {out['buyers']:,} in {out['buys_s']:.1f} s",
        ),
        ("buy outcomes", _codes(out["buy_outcomes"])),
        (
            "orders (`GET .../orders`) / buyers in them",
            f"{out['orders']:,} / {out['order_users']:,}",
        ),
        (
            "sale: stock / sold / left / status",
            f"{sale['stock']:,} / {sale['sold']:,} / {sale['left']:,} / {sale['status']}",
        ),
        (
            "refunds: closed 4403 within 1 s (of called)",
            f"{out['refunds_within']} of {len(out['refunds'])}",
        ),
        ("refund calls, by HTTP status", _codes(out["refund_status"])),
        ("refunded viewers' closes, by code", _codes(out["refund_codes"])),
        ("other viewers closed, by code", _codes(out["other_closes"])),
        ("enter outcomes", _codes(out["enter_outcomes"])),
        ("ops resent after `unavailable` (same ref)", _codes(out["resends"])),
        (
            "lottery entrants / winners",
            f"{lot.get('entrants_count', 0):,} / {len(lot.get('winners') or [])}",
        ),
        (
            "`lottery.drawn` received (of viewers open)",
            f"{out['drawn_seen']:,} of {out['drawn_want']:,}",
        ),
    ]
    return ["| count | value |", "|---|---:|", *(f"| {a} | {b} |" for a, b in rows)]


def cpu_rows(out: dict[str, Any], args: argparse.Namespace) -> list[str]:
    names = {
        "gateway": f"gateway process{'es' if args.gateways > 1 else ''} ({args.gateways})",
        "api": "API process",
        "redis": "redis-server",
        "viewers": f"viewer processes ({args.clients})",
        "harness": "harness (host, payments)",
        "others": "other work on the machine",
        "machine": "whole machine",
    }
    cpu = out["cpu"]
    head = "| % of one core | " + " | ".join(
        f"{label} ({cpu[k][1]:.1f} s)" for k, label, *_ in PHASES
    )
    lines = [head + " |", "|---|" + "---:|" * len(PHASES)]
    for role in ROLES:
        cells = " | ".join(f"{cpu[k][0].get(role, 0):.0f}" for k, *_ in PHASES)
        lines.append(f"| {names[role]} | {cells} |")
    return lines


def checks(out: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, bool]]:
    gaps, sale, dm = out["gaps"], out["sale"], out["dm"]
    n_ref = len(out["refunds"])
    return [
        (
            f"every viewer joined ({out['connected']:,} of {args.viewers:,})",
            out["connected"] == args.viewers,
        ),
        (
            f"orders == stock ({out['orders']:,} orders, sold {sale['sold']:,}, stock "
            f"{args.stock:,}; one per buyer)",
            out["orders"] == sale["sold"] == args.stock == out["order_users"],
        ),
        (
            f"every refund closed with 4403 within 1 s ({out['refunds_within']} of {n_ref})",
            out["refunds_within"] == n_ref,
        ),
        (
            f"nobody else was closed ({sum(out['other_closes'].values()):,})",
            not out["other_closes"],
        ),
        (
            f"no viewer saw a gap ({gaps['with_gap']:,} did)",
            gaps["with_gap"] == 0 and not gaps["timed_out"],
        ),
        (f"no danmaku twice or out of order ({gaps['dupes']:,})", gaps["dupes"] == 0),
        (
            f"every danmaku sent was acked ({dm['acked']:,} of {dm['sent']:,})",
            dm["acked"] == dm["sent"],
        ),
        (
            f"every open viewer got `lottery.drawn` "
            f"({out['drawn_seen']:,} of {out['drawn_want']:,})",
            out["drawn_seen"] >= out["drawn_want"] > 0,
        ),
        (
            f"likes counted == likes sent ({out['stats']['likes']:,} of {dm['likes_sent']:,})",
            out["stats"]["likes"] == dm["likes_sent"],
        ),
    ]


def reached(out: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """What the machine carried, against what was asked."""
    dm = out["dm"]
    secs = max(dm["seconds"], 1e-9)
    cores = float(out["machine"]["cpus"]) * 100
    chat_cpu = out["cpu"]["chat"][0]["machine"]
    lines = [
        f"asked: {args.viewers:,} viewers, {args.danmaku:g} danmaku/s "
        f"({args.viewers * args.danmaku:,.0f} deliveries/s), {args.likes:g} likes/s; reached: "
        f"{out['connected']:,} viewers, {dm['acked'] / secs:,.0f} danmaku/s acked, "
        f"{dm['likes_sent'] / secs:,.0f} likes/s sent, "
        f"{out['gaps']['received'] / secs:,.0f} danmaku deliveries/s counted by the viewers",
        f"machine CPU with chat and likes alone: {chat_cpu:.0f}% of {cores:.0f}%"
        + (
            " (CPU-bound: the figures are this machine's ceiling)"
            if chat_cpu >= 0.9 * cores
            else ""
        ),
    ]
    others = {label: out["cpu"][k][0]["others"] for k, label, *_ in PHASES}
    busiest = max(others, key=lambda k: others[k])
    if others[busiest] > 20:
        lines.append(
            f"other work on the machine took up to {others[busiest]:.0f}% of a core "
            f"({busiest}): processes outside this run (and the kernel's loopback softirqs, "
            "which no process is charged for) competed for the CPUs"
        )
    lat = out["lat"]["danmaku"]
    if lat is not None and lat.p99_ms > 1000:
        lines.append(
            f"danmaku p99 {lat.p99_ms / 1000:.1f} s: the gateway falls behind the room's "
            "fan-out (ticks stretch), it does not drop events"
        )
    return lines


def block(out: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    m = out["machine"]
    done = checks(out, args)
    held = sum(ok for _, ok in done)
    return "\n".join(
        [
            "<!-- show:begin (generated by loadtest.show; edits inside are overwritten) -->",
            "```",
            command,
            "```",
            "",
            f"Run {out['when']} at commit {out['code']}, {out['run_s']:.0f} s in all. Machine: "
            f"{m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, uvloop "
            f"{m['uvloop']}; load average before the run {m['load']}. One private redis-server "
            f"(AOF everysec), `serve --role api`, {args.gateways} `serve --role gateway` "
            f"process(es), {args.clients} viewer processes (`loadtest/show_viewers.py`, raw "
            "sockets, `liveroom.v1.msgpack`) and the harness share these CPUs. Paid room "
            f"`{json.dumps(ACCESS)}`; {args.chatters:,} chatters, {args.likers:,} likers; "
            f"flash sale after {args.warm:g} s of chat; {len(out['refunds'])} refunds at once; a "
            f"{args.lottery_s} s lottery. Danmaku latency: every event of 1 viewer in "
            f"{args.sample_every} (1 ms buckets), its max over every viewer.",
            "",
            f"**Checks: {held} of {len(done)} held.**",
            "",
            *(f"- {'held' if ok else '**NOT held**'}: {what}" for what, ok in done),
            "",
            *latency_rows(out),
            "",
            *count_rows(out, args),
            "",
            *cpu_rows(out, args),
            "",
            *(f"- {line}" for line in reached(out, args)),
            "<!-- show:end -->",
        ]
    )


# -- running it -------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None

    def on_signal() -> None:  # Ctrl-C or SIGTERM: stop every child (once), then exit
        if not INTERRUPTED:
            INTERRUPTED.append(True)
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal)
    raise_nofile()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lr-show-") as tmp:
        show = Show(args, Path(tmp))
        show.out["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        try:
            await show.start_servers()
            await show.setup_room()
            await show.connect()
            await show.perform()
        finally:
            await show.stop()
    out = figures(show)
    out["run_s"] = time.monotonic() - t0
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.show", description=__doc__.splitlines()[0])
    p.add_argument("--viewers", type=int, default=10_000)
    p.add_argument("--danmaku", type=float, default=500.0, help="danmaku ops per second")
    p.add_argument("--chatters", type=int, default=None, help="viewers sending danmaku (rate/1)")
    p.add_argument("--likes", type=float, default=5000.0, help="like ops (count 1) per second")
    p.add_argument("--likers", type=int, default=None, help="viewers sending likes (rate/5)")
    p.add_argument("--stock", type=int, default=1000, help="items in the flash sale")
    p.add_argument("--refunds", type=int, default=100, help="viewers refunded at once")
    p.add_argument("--winners", type=int, default=10)
    p.add_argument("--lottery-s", type=int, default=10, help="the lottery's duration_s")
    p.add_argument("--warm", type=float, default=10.0, help="seconds of chat before the sale")
    p.add_argument("--gateways", type=int, default=1, help="gateway processes")
    p.add_argument("--clients", type=int, default=2, help="viewer processes")
    p.add_argument("--sample-every", type=int, default=50, help="1 viewer in N times every event")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per client")
    p.add_argument("--phase-timeout", type=float, default=30.0, help="longest wait for a phase")
    p.add_argument("--write-md", type=Path, default=None, metavar="PATH")
    args = p.parse_args(argv)
    args.chatters = args.chatters or max(1, round(args.danmaku))
    args.likers = args.likers or max(1, round(args.likes / 5))
    if args.danmaku / args.chatters > 1.5:
        p.error("more than 1.5 danmaku/s per chatter: the per-user rate (2/s) would refuse some")
    if args.chatters + args.likers + args.refunds > args.viewers:
        p.error("--chatters + --likers + --refunds must not exceed --viewers")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    command = ("python -m loadtest.show " + shlex.join(argv)).strip()
    import uvloop

    try:
        out = uvloop.run(run(args))
    except BaseException as exc:
        # Ctrl-C reaches the servers too, so what fails first may be a request to one of them.
        if INTERRUPTED or isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
            print("interrupted; every child process was stopped", file=sys.stderr)
            return 130
        raise
    text = block(out, args, command)
    print("\n" + text)
    if args.write_md is not None:
        path = args.write_md if args.write_md.is_absolute() else ROOT / args.write_md
        put_section(path, "show", "## A whole live show", text)
        print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
