"""Chaos run: a live show under gateway SIGKILLs and Redis crashes, then an audit.

    python -m loadtest.chaos --seconds 600 [--viewers 150] [--kill-every 60]
        [--redis-restarts 2] [--json PATH]

It starts its own private ``redis-server`` (AOF, ``appendfsync always``), three
``liveroom serve --role gateway`` processes and one ``--role api`` process on free ports, with
a random ``LIVEROOM_SECRET``, and plays a show in a free room and a paid room:

- viewers (``LiveroomClient`` with every gateway URL, resume on) receive the room's events,
  buy in each flash sale (``buy`` with a ref, the same ref resent after ``unavailable``,
  ``internal``, a timeout or a lost connection), send likes, and half of them enter each
  lottery;
- chatters send danmaku with refs, about one a second each, resending the same ref the same way;
- flash sales (stock two thirds of the viewers unless ``--stock``, ``per_user_limit`` 1) open
  a second before each fault, so that its buy rush meets the fault, and every
  ``--sale-every`` seconds in between; lotteries every ``--lottery-every``;
- ticket holders watch the paid room; every ``--refund-every`` seconds one is refunded
  (``DELETE /api/rooms/{room}/tickets/{user}``) and the time until its connection is closed
  with 4403 is measured, then a new holder takes its place.

Faults: every ``--kill-every`` seconds one gateway (in turn) is SIGKILLed and started again on
the same ports; ``--redis-restarts`` times, spread over the run, redis-server is SIGKILLed and
started again on the same port and data directory (it replays its AOF). Faults and refunds
take turns, so that a refund's latency is the system's and not a fault's.

After ``--seconds`` the load stops, the viewers catch up to the stream's head, and the audit
(``loadtest.chaos_audit``) compares what every client saw with what Redis and the API hold:
gaps and duplicates per viewer (against the room's full stream, from its first welcome's
``last_id``; ``recovered: false`` resumes are counted apart), acknowledged danmaku and orders
lost, orders against stock, lottery entries and proofs, refund-to-close latency. It prints a
table and the JSON (also written to ``--json PATH``) and exits 1 if any contract check failed.

It is bounded: every loop stops at the deadline, the settling waits are capped, and every
child process is killed on exit, also on Ctrl-C, SIGTERM or an exception. It never talks to a
Redis or a port it did not start.

The chatters and buyers wait for their reply by ``ref`` on what the client's reader took
(``ChaosClient.ask``) instead of ``LiveroomClient.request``: a ``request`` that timed out
leaves its waiter behind, and the reply to the next resend of that ref then goes to the stale
waiter (fixed; tests/gateway/test_gateway_kill.py covers it). Needs the dev extras (httpx).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from engine import keys
from engine.bus import RoomBus, last_id
from engine.codec import Event, Subprotocol
from engine.ids import ZERO_ID, RoomId, stream_id_key
from engine.lottery import verify
from engine.settings import Settings
from engine.tokens import issue
from loadtest.chaos_audit import (
    LotteryAudit,
    RefundOutcome,
    StreamIndex,
    ViewerLog,
    Welcome,
    audit_danmaku,
    audit_sale,
    audit_viewer,
    latency_summary_ms,
    table,
    verdict,
)
from loadtest.chaos_cluster import SEND_ERRORS, ChaosClient, Cluster
from sdk.client import ClientError

RETRY_CODES = frozenset({"unavailable", "internal", "rate_limited"})
"""Error codes after which a client resends the same ref."""


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    seconds: float = 600.0
    """How long the show runs (faults included)."""
    viewers: int = 150
    """Viewers in the free room; every one buys in each sale."""
    chatters: int = 6
    """Clients sending danmaku, about one a second each."""
    ticket_holders: int = 6
    """Ticket holders watching the paid room at any time."""
    kill_every: float = 60.0
    """Seconds between gateway SIGKILLs (0: none)."""
    redis_restarts: int = 2
    """redis-server SIGKILLs (and restarts) spread over the run."""
    redis_down_s: float = 1.5
    """How long redis-server stays down before it is started again (a supervisor's delay)."""
    stock: int | None = None
    """Stock of each sale (default: two thirds of the viewers, so that every sale sells out)."""
    sale_every: float = 25.0
    """Seconds between the flash sales not tied to a fault (the first opens at 5 s)."""
    lottery_every: float = 30.0
    """Seconds between lotteries (the first at 12 s)."""
    refund_every: float = 4.0
    """Seconds between refunds in the paid room."""
    settle_s: float = 30.0
    """Longest wait after the show for viewers to reach the stream's head."""
    json_path: str | None = None
    """Where to write the JSON report."""
    seed: int | None = None
    """Random seed (jitter, who enters which lottery)."""

    @property
    def sale_stock(self) -> int:
        return self.stock if self.stock is not None else max(1, self.viewers * 2 // 3)


# -- the show --------------------------------------------------------------------------------


@dataclass(slots=True)
class SaleBook:
    id: str
    attempts: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)
    answer_changed: int = 0


class Show:
    def __init__(self, cfg: ChaosConfig, cluster: Cluster) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.rng = random.Random(cfg.seed)
        run = f"{os.getpid()}-{int(time.time()) % 1_000_000}"
        self.live = f"chaos-live-{run}"
        self.paid = f"chaos-paid-{run}"
        self.ttl = int(cfg.seconds) + 3600
        self.admin = issue(cluster.secret, "chaos-admin", "admin", ttl_s=self.ttl)
        self.http = httpx.AsyncClient(
            base_url=cluster.api.http_url,
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=10,
        )
        self.viewers: list[ChaosClient] = []
        self.chatters: list[ChaosClient] = []
        self.holders: list[ChaosClient] = []
        self.retired: list[ChaosClient] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.deadline = 0.0
        self.t0 = 0.0
        self.turns = asyncio.Lock()  # faults and refunds take turns
        self.faults: list[dict[str, Any]] = []
        self.fault_count: Counter[str] = Counter()
        self.danmaku_acked: dict[str, str] = {}
        self.danmaku_text: dict[str, str] = {}
        self.danmaku_refused: Counter[str] = Counter()
        self.resends: Counter[str] = Counter()
        self.sales: list[SaleBook] = []
        self.lotteries: dict[str, set[str]] = {}
        self.refunds: list[RefundOutcome] = []
        self.likes_sent = 0
        self.holder_seq = 0
        self.errors: list[str] = []
        """Exceptions of the harness's own tasks: reported, and they fail the run."""

    # -- helpers

    def now(self) -> float:
        return time.monotonic()

    def running(self) -> bool:
        return self.now() < self.deadline

    async def pause(self, seconds: float) -> None:
        """Sleep, but never past the deadline."""
        await asyncio.sleep(max(0.0, min(seconds, self.deadline - self.now())))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.errors.append(f"{task.get_coro().__qualname__}: {type(exc).__name__}: {exc}")

    def token(self, user: str) -> str:
        return issue(self.cluster.secret, user, "viewer", ttl_s=self.ttl)

    async def api(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, patience: float = 30
    ) -> Any:
        """One API call, retried while the API answers 503 or cannot be reached."""
        end = self.now() + patience
        while True:
            try:
                r = await self.http.request(method, path, json=body)
                if r.status_code != 503:
                    if r.status_code >= 400:
                        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
                    return r.json()
            except httpx.TransportError:
                pass
            if self.now() > end:
                raise RuntimeError(f"{method} {path}: the API did not answer in {patience} s")
            await asyncio.sleep(0.25)

    async def connect(
        self, room: str, user: str, index: int, *, record: bool = False, binary: bool = False
    ) -> ChaosClient:
        urls = self.cluster.ws_urls
        urls = urls[index % len(urls) :] + urls[: index % len(urls)]
        for attempt in range(60):
            c = ChaosClient(
                urls[attempt % len(urls) :] + urls[: attempt % len(urls)],
                room,
                self.token(user),
                subprotocol=Subprotocol.MSGPACK if binary else Subprotocol.JSON,
                max_retries=1_000_000,  # bounded by the run: it is closed at the end
                record=record,
                user=user,
            )
            try:
                await c.connect()
            except (ClientError, *SEND_ERRORS) as exc:
                if isinstance(exc, ClientError) and exc.status in (401, 403, 404):
                    raise
                await asyncio.sleep(0.5)
                continue
            c.start_draining()
            return c
        raise RuntimeError(f"{user} could not connect to {room}")

    async def until_answered(
        self, c: ChaosClient, op: dict[str, Any], until: float, kind: str
    ) -> Event | None:
        """Send ``op`` and resend the SAME ref after retryable errors, timeouts and lost
        connections, as a careful client does; None if ``until`` came first."""
        first = True
        while self.now() < until and c.died() is None:
            if not first:
                self.resends[kind] += 1
            first = False
            try:
                reply = await c.ask(dict(op), timeout=min(5.0, max(0.1, until - self.now())))
            except SEND_ERRORS:
                await asyncio.sleep(0.3)
                continue
            if reply["type"] == "ack" or reply.get("code") not in RETRY_CODES:
                return reply
            await asyncio.sleep(0.3 if reply.get("code") != "rate_limited" else 0.6)
        return None

    # -- setup

    async def setup(self) -> None:
        await self.api("POST", "/api/rooms", {"id": self.live, "title": "chaos show"})
        await self.api(
            "POST",
            "/api/rooms",
            {
                "id": self.paid,
                "title": "chaos paid show",
                "access": {"mode": "paid", "price_cents": 500, "preview_seconds": 0},
            },
        )
        n = self.cfg.viewers
        for lo in range(0, n, 25):  # in groups: a thundering herd would be its own test
            self.viewers += await asyncio.gather(
                *(
                    self.connect(self.live, f"viewer{i}", i, record=True, binary=i % 2 == 1)
                    for i in range(lo, min(n, lo + 25))
                )
            )
        self.chatters = list(
            await asyncio.gather(
                *(self.connect(self.live, f"chatter{i}", i) for i in range(self.cfg.chatters))
            )
        )
        for _ in range(self.cfg.ticket_holders):
            self.holders.append(await self.new_holder())
        for room in (self.live, self.paid):
            await self.api("POST", f"/api/rooms/{room}/live")

    async def new_holder(self) -> ChaosClient:
        self.holder_seq += 1
        user = f"holder{self.holder_seq}"
        await self.api("PUT", f"/api/rooms/{self.paid}/tickets/{user}", {})
        return await self.connect(self.paid, user, self.holder_seq)

    # -- the show

    async def play(self) -> None:
        self.t0 = self.now()
        self.deadline = self.t0 + self.cfg.seconds
        loops: list[Coroutine[Any, Any, None]] = [
            *(self.chat(c) for c in self.chatters),
            self.likes(),
            self.sale_loop(),
            self.lottery_loop(),
            self.refund_loop(),
            self.fault_loop(),
        ]
        for loop in loops:
            self.spawn(loop)
        await asyncio.sleep(self.cfg.seconds)
        # Everything checks the deadline; what still waits on a reply gets a bounded grace.
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=20)
            for t in late:
                t.cancel()
            if late:
                self.errors.append(f"{len(late)} tasks still busy 20 s after the deadline")

    async def chat(self, c: ChaosClient) -> None:
        n = 0
        await self.pause(self.rng.uniform(0, 1))
        while self.running():
            n += 1
            ref = f"{c.user}-{n}"
            text = f"chaos {ref}"
            self.danmaku_text[ref] = text
            op = {"op": "danmaku", "text": text, "ref": ref}
            reply = await self.until_answered(c, op, self.deadline, "danmaku")
            if reply is not None and reply["type"] == "ack":
                self.danmaku_acked[ref] = reply["id"]
            elif reply is not None:
                self.danmaku_refused[reply.get("code", "?")] += 1
            await self.pause(self.rng.uniform(0.7, 1.3))

    async def likes(self) -> None:
        while self.running():
            await self.pause(1.0)
            for v in self.rng.sample(self.viewers, max(1, len(self.viewers) // 10)):
                try:
                    await v.like(1)
                    self.likes_sent += 1
                except SEND_ERRORS:
                    pass

    def sale_schedule(self) -> list[float]:
        """A sale opens a second before each fault (its buy rush meets the fault) and every
        ``sale_every`` seconds from 5 s where no such sale is near."""
        s = self.cfg.seconds
        aligned = [at - 1.0 for at, _ in self.fault_schedule() if at - 1.0 + 10 < s]
        regular = []
        t = 5.0
        while t + 10 < s:
            if all(abs(t - a) >= 12 for a in aligned):
                regular.append(t)
            t += self.cfg.sale_every
        return sorted(aligned + regular)

    async def sale_loop(self) -> None:
        for at in self.sale_schedule():
            await self.pause(self.t0 + at - self.now())
            if not self.running():
                break
            sale = await self.api(
                "POST",
                f"/api/rooms/{self.live}/sales",
                {
                    "item": f"sku-{len(self.sales)}",
                    "title": "chaos flash sale",
                    "price_cents": 990,
                    "stock": self.cfg.sale_stock,
                    "per_user_limit": 1,
                    "duration_s": 15,
                },
            )
            book = SaleBook(sale["id"])
            self.sales.append(book)
            until = min(self.deadline, self.now() + 15)
            for v in self.viewers:
                self.spawn(self.buy(v, book, until))

    async def buy(self, v: ChaosClient, book: SaleBook, until: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, 2))
        ref = f"{v.user}-{book.id}"
        op = {"op": "buy", "sale": book.id, "qty": 1, "ref": ref}
        book.attempts += 1
        reply = await self.until_answered(v, op, until, "buy")
        if reply is None:
            book.answers["no_answer"] += 1
            return
        if reply["type"] != "ack":
            book.answers[reply.get("code", "?")] += 1
            return
        book.answers["ordered"] += 1
        order = reply["order"]["id"]
        book.acked[order] = (v.user, ref)
        if self.rng.random() < 0.2:  # a player resending after a hiccup: same answer
            await asyncio.sleep(self.rng.uniform(0.5, 2))
            again = await self.until_answered(v, op, until, "buy")
            if again is not None and (again["type"] != "ack" or again["order"]["id"] != order):
                book.answer_changed += 1

    async def lottery_loop(self) -> None:
        at = 12.0
        while self.t0 + at + 10 < self.deadline:
            await self.pause(self.t0 + at - self.now())
            rec = await self.api(
                "POST",
                f"/api/rooms/{self.live}/lotteries",
                {"prize": "chaos prize", "winners": 3, "rule": {}, "duration_s": 10},
            )
            acked = self.lotteries[rec["id"]] = set()
            until = min(self.deadline, self.now() + 9)
            for v in self.rng.sample(self.viewers, len(self.viewers) // 2):
                self.spawn(self.enter(v, rec["id"], acked, until))
            at += self.cfg.lottery_every

    async def enter(self, v: ChaosClient, lottery: str, acked: set[str], until: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, 3))
        op = {"op": "enter", "lottery": lottery, "ref": f"{v.user}-{lottery}"}
        reply = await self.until_answered(v, op, until, "enter")
        if reply is not None and reply["type"] == "ack":
            acked.add(v.user)

    async def refund_loop(self) -> None:
        await self.pause(3.0)
        while self.running():
            async with self.turns:
                if not self.running():
                    break
                holder = self.holders.pop(0)
                t0 = self.now()
                await self.api("DELETE", f"/api/rooms/{self.paid}/tickets/{holder.user}")
                # the time from the successful DELETE's start is the refund's own latency
                try:
                    outcome, at = await asyncio.wait_for(asyncio.shield(holder.ended), 10)
                    latency: float | None = at - t0
                except TimeoutError:
                    outcome, latency = "not_closed", None
                self.refunds.append(RefundOutcome(holder.user, outcome, latency))
                self.retired.append(holder)
                self.holders.append(await self.new_holder())
            await self.pause(self.cfg.refund_every)

    def fault_schedule(self) -> list[tuple[float, str]]:
        s, k = self.cfg.seconds, self.cfg.kill_every
        kills = []
        if k > 0:
            kills = [k * i for i in range(1, int(s // k) + 1) if k * i < s - 5]
        plan = [(t, "gateway_kill") for t in kills]
        n = self.cfg.redis_restarts
        for j in range(1, n + 1):
            t = s * j / (n + 1)
            if any(abs(t - x) < 5 for x in kills):
                t += min(k / 2, 10) if k else 5
            plan.append((t, "redis_restart"))
        return sorted(plan)

    async def fault_loop(self) -> None:
        victim = 0
        for at, kind in self.fault_schedule():
            await self.pause(self.t0 + at - self.now())
            if not self.running():
                break
            async with self.turns:
                started = round(self.now() - self.t0, 2)
                if kind == "gateway_kill":
                    info = await self.cluster.kill_gateway(victim % len(self.cluster.gateways))
                    victim += 1
                else:
                    info = await self.cluster.restart_redis(self.cfg.redis_down_s)
                self.faults.append({"kind": kind, "at_s": started, **info})
                self.fault_count[kind] += 1
                await asyncio.sleep(2.0)  # clients resume before the next refund is timed

    # -- after the show

    async def settle(self, redis: Redis) -> str:
        """Wait (bounded) until every live viewer has the stream's head; return the head."""
        head = await last_id(redis, keys.events(RoomId(self.live)))
        end = self.now() + self.cfg.settle_s
        head_key = stream_id_key(head)
        while self.now() < end:
            behind = [
                v
                for v in self.viewers
                if v.died() is None and (not v.seen or stream_id_key(v.seen[-1][1]) < head_key)
            ]
            if not behind:
                break
            await asyncio.sleep(0.2)
        return head

    async def audit(self, redis: Redis) -> dict[str, Any]:
        head = await self.settle(redis)
        bus = RoomBus(redis, Settings())
        events: list[Event] = []
        after = ZERO_ID
        while True:
            page = await bus.after(RoomId(self.live), after, 5000)
            events += page
            if len(page) < 5000:
                break
            after = page[-1]["id"]
        stream = StreamIndex(e["id"] for e in events)
        viewer_audits = [
            audit_viewer(
                ViewerLog(
                    v.user,
                    [Welcome(w["last_id"], bool(w["recovered"])) for w in v.welcomes],
                    list(v.seen),
                    v.died(),
                ),
                stream,
                head,
            )
            for v in self.viewers
        ]
        texts = {e["id"]: e.get("text", "") for e in events if e["type"] == "danmaku"}
        danmaku = audit_danmaku(
            self.danmaku_acked,
            texts,
            text_of=self.danmaku_text,
            sent=len(self.danmaku_text),
            resends=self.resends["danmaku"],
            refused=self.danmaku_refused,
        )
        sales = []
        for book in self.sales:
            rec = await self.api("GET", f"/api/rooms/{self.live}/sales/{book.id}")
            orders = await self.api("GET", f"/api/rooms/{self.live}/sales/{book.id}/orders")
            sales.append(
                audit_sale(
                    rec,
                    orders,
                    book.acked,
                    attempts=book.attempts,
                    answers=book.answers,
                    answer_changed=book.answer_changed,
                )
            )
        lotteries = []
        for lid, acked in self.lotteries.items():
            path = f"/api/rooms/{self.live}/lotteries/{lid}"
            rec = await self.api("GET", path)
            if rec["status"] != "drawn":
                await self.api("POST", path + "/draw")
                for _ in range(40):
                    rec = await self.api("GET", path)
                    if rec["status"] == "drawn":
                        break
                    await asyncio.sleep(0.25)
            entrants = set(rec.get("entrants") or ())
            lotteries.append(
                LotteryAudit(
                    lid,
                    acked=len(acked),
                    entrants=len(entrants),
                    lost_acked=len(acked - entrants),
                    verified=rec["status"] == "drawn" and verify(rec).ok,
                )
            )
        room = await self.api("GET", f"/api/rooms/{self.live}")
        v = verdict(viewer_audits, danmaku, sales, lotteries, self.refunds)
        v.failures["harness_errors"] = len(self.errors)
        bad_viewers = [
            asdict(a)
            for a in viewer_audits
            if a.gaps or a.duplicates or a.out_of_order or a.unknown or a.died or a.unrecovered
        ]
        latencies = [r.latency_s for r in self.refunds if r.outcome == "closed_4403"]
        return {
            "ok": v.ok,
            "failures": v.failures,
            "notes": v.notes,
            "config": {**asdict(self.cfg), "sale_stock": self.cfg.sale_stock},
            "faults_done": {
                "gateway_kill": self.fault_count["gateway_kill"],
                "redis_restart": self.fault_count["redis_restart"],
            },
            "faults": self.faults,
            "stream": {"events": len(events), "head": head},
            "viewers": {
                "count": len(viewer_audits),
                "received": sum(a.received for a in viewer_audits),
                "expected": sum(a.expected for a in viewer_audits),
                "gaps": v.failures["gaps"],
                "duplicates": v.failures["duplicates"],
                "unrecovered_resumes": v.notes["unrecovered_resumes"],
                "close_codes": dict(Counter(str(c) for x in self.viewers for c in x.close_codes)),
                "with_findings": bad_viewers[:20],
            },
            "danmaku": asdict(danmaku),
            "sales": [asdict(s) for s in sales],
            "lotteries": [asdict(x) for x in lotteries],
            "refunds": {
                "count": len(self.refunds),
                "outcomes": dict(Counter(r.outcome for r in self.refunds)),
                "latency_ms": latency_summary_ms([x for x in latencies if x is not None]),
                "not_closed": [r.user for r in self.refunds if r.outcome == "not_closed"],
            },
            "resends": dict(self.resends),
            "harness_errors": self.errors[:20],
            "likes": {"sent": self.likes_sent, "total": room.get("likes")},
        }

    async def close(self) -> None:
        everyone = [*self.viewers, *self.chatters, *self.holders, *self.retired]
        await asyncio.gather(*(c.shut() for c in everyone), return_exceptions=True)
        for t in list(self.tasks):
            t.cancel()
        await self.http.aclose()


async def run(cfg: ChaosConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Start everything, play the show, audit it, stop everything; return the report."""
    work = workdir or Path(tempfile.mkdtemp(prefix="liveroom-chaos-"))
    cluster = Cluster(work, secrets.token_hex(24))
    show: Show | None = None
    redis: Redis | None = None
    report: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        await cluster.start()
        show = Show(cfg, cluster)
        await show.setup()
        await show.play()
        redis = Redis.from_url(cluster.redis.url)
        report = await show.audit(redis)
        report["workdir"] = str(work)
        report["wall_s"] = round(time.monotonic() - started, 1)
        return report
    finally:
        if show is not None:
            await show.close()
        if redis is not None:
            await redis.aclose()
        await cluster.close()
        if report is not None and report["ok"] and workdir is None:
            shutil.rmtree(work, ignore_errors=True)  # logs are kept when something failed


def parse_args(argv: list[str] | None = None) -> ChaosConfig:
    p = argparse.ArgumentParser(prog="python -m loadtest.chaos", description=__doc__.split("\n")[0])
    d = ChaosConfig()
    p.add_argument("--seconds", type=float, default=d.seconds)
    p.add_argument("--viewers", type=int, default=d.viewers)
    p.add_argument("--chatters", type=int, default=d.chatters)
    p.add_argument("--ticket-holders", type=int, default=d.ticket_holders)
    p.add_argument("--kill-every", type=float, default=d.kill_every)
    p.add_argument("--redis-restarts", type=int, default=d.redis_restarts)
    p.add_argument("--redis-down", type=float, default=d.redis_down_s, dest="redis_down_s")
    p.add_argument("--stock", type=int, default=None)
    p.add_argument("--sale-every", type=float, default=d.sale_every)
    p.add_argument("--lottery-every", type=float, default=d.lottery_every)
    p.add_argument("--refund-every", type=float, default=d.refund_every)
    p.add_argument("--settle", type=float, default=d.settle_s, dest="settle_s")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", default=None, dest="json_path", help="write the JSON report here")
    a = p.parse_args(argv)
    return ChaosConfig(**vars(a))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    async def guarded() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(cfg)

    try:
        report = asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("chaos: interrupted; every child was stopped", file=sys.stderr)
        return 130
    text = json.dumps(report, indent=2, sort_keys=False)
    if cfg.json_path:
        Path(cfg.json_path).write_text(text + "\n")
    print(table(report))
    print(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
