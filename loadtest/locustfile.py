"""Locust scenario: viewers who watch, chat and like in bursts.

    LIVEROOM_SECRET=... locust -f loadtest/locustfile.py --host ws://127.0.0.1:8081 \
        --users 500 --spawn-rate 50 --headless -t 60s

Environment: LIVEROOM_ROOM (default `demo`), LIVEROOM_SECRET (tokens are signed locally; in
dev mode the default secret works). Reported "requests": `ws connect` (handshake + welcome),
`danmaku ack` (op to ack), `danmaku deliver` (publish `ts` to receipt by this viewer, so the
fan-out latency under load shows in locust's percentiles).

Locust runs on gevent, so this uses websockets' threaded client with the project's one codec
(`engine.codec`) rather than the asyncio `sdk.client.LiveroomClient`.
"""

from __future__ import annotations

import itertools
import os
import random
import time

from locust import User, between, events, task
from websockets.sync.client import connect

from engine.codec import Subprotocol, decode_events, encode_value
from engine.settings import Settings
from engine.tokens import issue

_ids = itertools.count()


class Viewer(User):
    wait_time = between(0.5, 2.0)
    room = os.environ.get("LIVEROOM_ROOM", "demo")

    def on_start(self) -> None:
        self.user_id = f"locust-{os.getpid()}-{next(_ids)}"
        tok = issue(Settings.from_env(os.environ).secret, self.user_id, "viewer", ttl_s=3600)
        t0 = time.perf_counter()
        self.ws = connect(
            f"{self.host}/ws/rooms/{self.room}?token={tok}",
            subprotocols=[Subprotocol.MSGPACK.value],
            compression=None,
        )  # type: ignore[list-item]
        welcome = decode_events(self.ws.recv())[0]
        self._fire("ws connect", t0, ok=welcome.get("type") == "welcome")
        self.pending: dict[str, float] = {}
        self.environment.runner.greenlet.spawn(self._read)  # type: ignore[union-attr]

    def _fire(self, name: str, t0: float, *, ok: bool = True, length: int = 0) -> None:
        events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - t0) * 1000,
            response_length=length,
            exception=None if ok else RuntimeError(name),
            context={},
        )

    def _read(self) -> None:
        try:
            for message in self.ws:
                now = time.time()
                for ev in decode_events(message):
                    kind = ev.get("type")
                    if kind == "danmaku" and "ts" in ev:
                        events.request.fire(
                            request_type="WS",
                            name="danmaku deliver",
                            response_time=(now - ev["ts"]) * 1000,
                            response_length=len(message),
                            exception=None,
                            context={},
                        )
                    elif kind in ("ack", "error") and ev.get("ref") in self.pending:
                        t0 = self.pending.pop(ev["ref"])
                        self._fire("danmaku ack", t0, ok=kind == "ack")
        except Exception:
            pass

    def _send(self, op: dict) -> None:
        self.ws.send(encode_value(op, Subprotocol.MSGPACK))

    @task(3)
    def like_burst(self) -> None:
        for _ in range(random.randint(1, 5)):
            self._send({"op": "like", "count": random.randint(10, 100)})

    @task(1)
    def danmaku(self) -> None:
        ref = f"{self.user_id}-{next(_ids)}"
        self.pending[ref] = time.perf_counter()
        self._send(
            {"op": "danmaku", "text": random.choice(["666", "hello", "好!", "❤️"]), "ref": ref}
        )

    def on_stop(self) -> None:
        self.ws.close()
