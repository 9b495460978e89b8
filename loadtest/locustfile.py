"""Locust users for every kind of live-room user (PROTOCOL.md §3, §4).

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080            # the web UI
    locust -f loadtest/locustfile.py --headless -u 500 -r 100 -t 60s --host http://127.0.0.1:8080
    locust -f loadtest/locustfile.py ... Buyer Host      # some classes only (by class name)
    locust -f loadtest/locustfile.py ... --tags buy host # or by tag

``--host`` is the HTTP API that ``liveroom up`` prints; the WebSocket URL comes from its
``GET /api/config``. Tokens are signed here with ``LIVEROOM_SECRET`` (in dev mode, the default
secret ``liveroom up`` uses). Environment: ``LIVEROOM_ROOM`` (default ``demo``),
``LIVEROOM_LOCUST_SALE_EVERY_S`` (30), ``LIVEROOM_LOCUST_LOTTERY_EVERY_S`` (45),
``LIVEROOM_LOCUST_SALE_STOCK`` (100). docs/loadtest.md says what each user does and reports.

Every op is a locust request named ``<op> <outcome>`` (``buy ok``, ``buy sold_out``, ...) of
type ``WS``, so the web UI and ``--csv`` show each outcome's count and latency. Documented
business outcomes (``sold_out``, ``limit_reached``, ``not_open``, ``closed``, ``not_eligible``,
``rate_limited``) are successes; any other error is a failure. Numbered danmaku let every
viewer check the stream: type ``SEQ`` lines ``in order`` (success), ``gap`` and ``duplicate``
(failures: the contract promises neither), and a summary at the end.

Locust runs on gevent, so this uses websockets' threaded client (greenlets under gevent) with
the project's one codec (``engine.codec``), not the asyncio ``sdk.client.LiveroomClient``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import socket
import time
import urllib.request
import warnings
from typing import Any

import gevent
from gevent.event import AsyncResult
from locust import HttpUser, User, between, constant, events, tag, task
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from engine.codec import Subprotocol, decode_events, encode_value
from engine.settings import Settings
from engine.tokens import issue

ROOM = os.environ.get("LIVEROOM_ROOM", "demo")
SALE_EVERY_S = float(os.environ.get("LIVEROOM_LOCUST_SALE_EVERY_S", "30"))
LOTTERY_EVERY_S = float(os.environ.get("LIVEROOM_LOCUST_LOTTERY_EVERY_S", "45"))
SALE_STOCK = int(os.environ.get("LIVEROOM_LOCUST_SALE_STOCK", "100"))
REPLY_TIMEOUT_S = 10.0

BUSINESS = frozenset(
    {"sold_out", "limit_reached", "not_open", "closed", "not_eligible", "rate_limited"}
)
"""Refusals the contract documents as normal answers: counted, never failures."""

NUMBERED = re.compile(r"^\[(?P<who>[A-Za-z0-9_.-]+)#(?P<n>\d+)\]")
"""A chatter's danmaku start with ``[sender#n]``; n goes up by one per acknowledged danmaku."""

_ids = itertools.count()
_config: dict[str, Any] = {}
SEQ_TOTALS = {"in order": 0, "gap": 0, "duplicate": 0}


def _secret() -> str:
    return Settings.from_env(os.environ).secret


def api_config(host: str) -> dict[str, Any]:
    """``GET /api/config`` of the API (once per process): where the gateway is."""
    if not _config:
        with urllib.request.urlopen(f"{host.rstrip('/')}/api/config", timeout=10) as r:
            _config.update(json.load(r))
    return _config


def fire(env: Any, kind: str, name: str, t0: float | None, *, ok: bool = True, size: int = 0):
    """One locust request line: ``name`` under ``kind``, timed from ``t0`` (None: 0 ms)."""
    env.events.request.fire(
        request_type=kind,
        name=name,
        response_time=0.0 if t0 is None else (time.perf_counter() - t0) * 1000,
        response_length=size,
        exception=None if ok else RuntimeError(name),
        context={},
    )


class Sequences:
    """What one viewer saw of each chatter's numbered danmaku, along one resume chain."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def reset(self) -> None:
        """After a resume that did not recover (the snapshot is the truth): start over."""
        self.last.clear()

    def check(self, env: Any, text: str) -> None:
        m = NUMBERED.match(text)
        if m is None:
            return
        who, n = m["who"], int(m["n"])
        last = self.last.get(who)
        if last is None or n == last + 1:
            outcome = "in order"
        elif n <= last:
            outcome = "duplicate"
        else:
            outcome = "gap"
        if outcome != "duplicate":
            self.last[who] = n
        SEQ_TOTALS[outcome] += 1
        fire(env, "SEQ", outcome, None, ok=outcome == "in order")


class Connection:
    """One WebSocket to the room: a reader greenlet, replies matched to refs, and the cursor
    a resume needs (the epoch and the last history id received)."""

    def __init__(self, user: RoomUser) -> None:
        self.user = user
        self.ws: ClientConnection | None = None
        self.waiting: dict[str, AsyncResult] = {}
        self.epoch: str | None = None
        self.last_id: str | None = None
        self.welcome: dict[str, Any] = {}
        self.reader: gevent.Greenlet | None = None

    @property
    def since(self) -> str | None:
        return f"{self.epoch}:{self.last_id}" if self.epoch and self.last_id else None

    def open(self, name: str, *, resume: bool = False) -> bool:
        """Connect (with ``since`` when ``resume``) and read `welcome`; one request line."""
        base = api_config(self.user.host)["ws_url"].rstrip("/")
        url = f"{base}/ws/rooms/{ROOM}?token={self.user.token}"
        if resume and self.since:
            url += f"&since={self.since}"
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():  # (websockets 17 would rather be a context manager)
                warnings.simplefilter("ignore", DeprecationWarning)
                self.ws = connect(url, subprotocols=[Subprotocol.MSGPACK], compression=None)  # type: ignore[list-item]
                first = self.ws.recv(timeout=REPLY_TIMEOUT_S)
            welcome, *rest = decode_events(first)  # (the replay may share welcome's frame)
        except Exception as exc:
            fire(self.user.environment, "WS", f"{name} failed: {type(exc).__name__}", t0, ok=False)
            return False
        self.welcome = welcome
        self.epoch = welcome.get("epoch")
        recovered = bool(welcome.get("recovered"))
        if not recovered:
            self.last_id = welcome.get("last_id")
            self.user.sequences.reset()
        outcome = "" if not resume else (" recovered" if recovered else " not recovered")
        fire(self.user.environment, "WS", name + outcome, t0, ok=not resume or recovered)
        now = time.time()
        for ev in rest:
            self._on(ev, now, len(first))
        self.reader = gevent.spawn(self._read, self.ws)
        return True

    def _read(self, ws: ClientConnection) -> None:
        try:
            for message in ws:
                now = time.time()
                for ev in decode_events(message):
                    self._on(ev, now, len(message))
        except (ConnectionClosed, OSError):
            pass
        except Exception as exc:  # a bug here must show, not vanish with the greenlet
            fire(
                self.user.environment, "WS", f"reader failed: {type(exc).__name__}", None, ok=False
            )

    def _on(self, ev: dict[str, Any], now: float, size: int) -> None:
        kind = ev.get("type")
        if kind in ("ack", "error"):
            waiter = self.waiting.pop(str(ev.get("ref")), None)
            if waiter is not None:
                waiter.set(ev)
            return
        if "id" in ev:
            self.last_id = ev["id"]
        self.user.on_event(ev, now, size)

    def send(self, op: dict[str, Any]) -> None:
        assert self.ws is not None
        self.ws.send(encode_value(op, Subprotocol.MSGPACK))

    def request(self, op: dict[str, Any]) -> dict[str, Any] | None:
        """Send an op with a ``ref``, wait for its reply; one request line ``<op> <outcome>``."""
        ref = op["ref"]
        waiter = self.waiting[ref] = AsyncResult()
        t0 = time.perf_counter()
        try:
            self.send(op)
            reply: dict[str, Any] = waiter.get(timeout=REPLY_TIMEOUT_S)
        except (ConnectionClosed, OSError, gevent.Timeout) as exc:
            self.waiting.pop(ref, None)
            fire(self.user.environment, "WS", f"{op['op']} {type(exc).__name__}", t0, ok=False)
            return None
        code = "ok" if reply["type"] == "ack" else reply.get("code", "error")
        ok = code == "ok" or code in BUSINESS
        fire(self.user.environment, "WS", f"{op['op']} {code}", t0, ok=ok)
        return reply

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):  # (a socket already cut by `drop`)
                self.ws.close()
            self.ws = None
        if self.reader is not None:
            self.reader.join(timeout=5)
            self.reader = None


class RoomUser(User):
    """A viewer's player: one WebSocket to the room, watched as it arrives. Subclasses add
    what that kind of user does. A connection the server ends is resumed with ``since``."""

    abstract = True
    wait_time = between(1.0, 3.0)
    role = "viewer"

    def on_start(self) -> None:
        self.user_id = f"{type(self).__name__.lower()}-{os.getpid()}-{next(_ids)}"
        self.token = issue(_secret(), self.user_id, self.role, ttl_s=6 * 3600)
        self.sequences = Sequences()
        self.conn = Connection(self)
        self.conn.open("connect")

    def on_stop(self) -> None:
        self.conn.close()

    def on_event(self, ev: dict[str, Any], now: float, size: int) -> None:
        if ev.get("type") == "danmaku":
            if "ts" in ev:  # the gateway's clock: same machine or NTP-close
                latency_ms = max(0.0, (now - float(ev["ts"])) * 1000)
                self.environment.events.request.fire(
                    request_type="WS",
                    name="danmaku deliver",
                    response_time=latency_ms,
                    response_length=size,
                    exception=None,
                    context={},
                )
            self.sequences.check(self.environment, str(ev.get("text", "")))

    def ensure_open(self) -> bool:
        """Resume a connection the server closed (1001 drain, 4408 slow, ...)."""
        if self.conn.ws is not None and self.conn.reader is not None and not self.conn.reader.dead:
            return True
        self.conn.close()
        return self.conn.open("resume", resume=True)


class Viewer(RoomUser):
    """Watches: connects, receives, resumes after a server close; reports ``danmaku deliver``
    (the gateway's `ts` to receipt) and the sequence checks."""

    weight = 10

    @tag("viewer")
    @task
    def watch(self) -> None:
        self.ensure_open()


class Chatter(RoomUser):
    """Sends numbered danmaku (``[id#n] ...``) within the per-connection rate, one at a time:
    n advances only on its ack, so every viewer can check it sees each number once, in order."""

    weight = 3
    wait_time = between(1.0, 2.0)

    def on_start(self) -> None:
        super().on_start()
        self.n = 1

    @tag("chat")
    @task
    def chat(self) -> None:
        if not self.ensure_open():
            return
        text = f"[{self.user_id}#{self.n}] {random.choice(['666', 'hello', '加油', '好!'])}"
        # The same ref for the same number: a resend after a timeout publishes at most once.
        reply = self.conn.request({"op": "danmaku", "text": text, "ref": f"d{self.n}"})
        if reply is not None and reply["type"] == "ack":
            self.n += 1


class Liker(RoomUser):
    """Likes in bursts (no reply: each burst is a ``like sent`` line) and watches the totals."""

    weight = 3
    wait_time = between(0.5, 1.5)

    @tag("like")
    @task
    def like_burst(self) -> None:
        if not self.ensure_open():
            return
        t0 = time.perf_counter()
        for _ in range(random.randint(1, 5)):
            self.conn.send({"op": "like", "count": random.randint(1, 100)})
        fire(self.environment, "WS", "like sent", t0)


class Buyer(RoomUser):
    """Buys once in every sale it sees open (`welcome`'s open sale, or `sale.started`):
    ``buy ok`` / ``buy sold_out`` / ``buy limit_reached`` ... with the ack's latency."""

    weight = 3

    def on_start(self) -> None:
        self.tried: set[str] = set()
        super().on_start()
        sale = (self.conn.welcome.get("room") or {}).get("sale")
        if isinstance(sale, dict) and sale.get("id"):
            self._buy_soon(str(sale["id"]))

    def on_event(self, ev: dict[str, Any], now: float, size: int) -> None:
        super().on_event(ev, now, size)
        if ev.get("type") == "sale.started":
            self._buy_soon(str(ev["sale"]))

    def _buy_soon(self, sale: str) -> None:
        if sale not in self.tried:
            self.tried.add(sale)
            gevent.spawn_later(random.uniform(0, 0.5), self._buy, sale)

    def _buy(self, sale: str) -> None:
        if self.conn.ws is not None:
            self.conn.request({"op": "buy", "sale": sale, "qty": 1, "ref": f"b-{sale}"})

    @tag("buy")
    @task
    def watch(self) -> None:
        self.ensure_open()


class LotteryEntrant(RoomUser):
    """Enters every lottery it sees start: ``enter ok`` / ``enter closed`` ..."""

    weight = 2

    def on_start(self) -> None:
        self.entered: set[str] = set()
        super().on_start()

    def on_event(self, ev: dict[str, Any], now: float, size: int) -> None:
        super().on_event(ev, now, size)
        if ev.get("type") == "lottery.started" and ev["lottery"] not in self.entered:
            self.entered.add(ev["lottery"])
            gevent.spawn_later(random.uniform(0, 1.0), self._enter, str(ev["lottery"]))
        elif ev.get("type") == "lottery.drawn":
            fire(self.environment, "WS", "lottery.drawn seen", None)

    def _enter(self, lottery: str) -> None:
        if self.conn.ws is not None:
            self.conn.request({"op": "enter", "lottery": lottery, "ref": f"e-{lottery}"})

    @tag("lottery")
    @task
    def watch(self) -> None:
        self.ensure_open()


class ReconnectingViewer(RoomUser):
    """Drops its connection now and then (no close handshake, like a phone losing signal) and
    resumes with ``since``: ``resume recovered`` (else a failure), and the sequence checks
    across the gap show whether anything was lost or repeated."""

    weight = 2
    wait_time = between(3.0, 8.0)

    @tag("reconnect")
    @task
    def drop_and_resume(self) -> None:
        ws = self.conn.ws
        if ws is not None:
            with contextlib.suppress(OSError):  # abrupt: the server sees the TCP connection end
                ws.socket.shutdown(socket.SHUT_RDWR)
            self.conn.close()
        gevent.sleep(random.uniform(0.2, 2.0))
        self.conn.open("resume", resume=True)


class Host(HttpUser):
    """The room's host, through the HTTP API: opens a flash sale every
    ``LIVEROOM_LOCUST_SALE_EVERY_S``, a lottery every ``LIVEROOM_LOCUST_LOTTERY_EVERY_S``,
    posts a notice now and then, and checks each sale it opened after it ended (sold <= stock,
    one order per unit sold)."""

    fixed_count = 1
    wait_time = constant(1.0)

    def on_start(self) -> None:
        tok = issue(_secret(), f"locust-host-{os.getpid()}", "host", ttl_s=6 * 3600, rooms=[ROOM])
        self.client.headers["Authorization"] = f"Bearer {tok}"
        self.next_sale = self.next_lottery = time.monotonic()
        self.sales: list[tuple[str, float]] = []

    @tag("host")
    @task
    def schedule(self) -> None:
        now = time.monotonic()
        if now >= self.next_sale:
            self.next_sale = now + SALE_EVERY_S
            self._open_sale(now)
        if now >= self.next_lottery:
            self.next_lottery = now + LOTTERY_EVERY_S
            body = {"prize": "locust prize", "winners": 3, "rule": {}, "duration_s": 10}
            self.client.post(f"/api/rooms/{ROOM}/lotteries", json=body, name="POST lottery")
        if random.random() < 0.1:
            body = {"text": "welcome, locusts"}
            self.client.post(f"/api/rooms/{ROOM}/notices", json=body, name="POST notice")
        self._check_ended(now)

    def _open_sale(self, now: float) -> None:
        duration = max(5, int(SALE_EVERY_S * 0.6))
        body = {
            "item": "locust-item",
            "title": "Locust flash sale",
            "price_cents": 100,
            "stock": SALE_STOCK,
            "per_user_limit": 1,
            "duration_s": duration,
        }
        r = self.client.post(f"/api/rooms/{ROOM}/sales", json=body, name="POST sale")
        if r.status_code == 201:
            self.sales.append((r.json()["id"], now + duration + 2))

    def _check_ended(self, now: float) -> None:
        for sale, due in [s for s in self.sales if s[1] <= now]:
            self.sales.remove((sale, due))
            with self.client.get(
                f"/api/rooms/{ROOM}/sales/{sale}", name="GET sale (check)", catch_response=True
            ) as r:
                record = r.json() if r.status_code == 200 else {}
                orders = self.client.get(
                    f"/api/rooms/{ROOM}/sales/{sale}/orders", name="GET orders"
                ).json()
                if not record or record["sold"] > record["stock"] or len(orders) != record["sold"]:
                    r.failure(f"sale {sale}: {record.get('sold')} sold, {len(orders)} orders")


@events.quitting.add_listener
def _summary(environment: Any, **_: Any) -> None:
    seen = sum(SEQ_TOTALS.values())
    if seen:
        print(
            f"numbered danmaku checked: {seen:,}; in order {SEQ_TOTALS['in order']:,}, "
            f"gaps {SEQ_TOTALS['gap']:,}, duplicates {SEQ_TOTALS['duplicate']:,}"
        )
