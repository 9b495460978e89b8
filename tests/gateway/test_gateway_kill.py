"""A gateway SIGKILLed under load: the shipped client resumes elsewhere, losing nothing.

The existing SIGKILL test in test_resume.py kills a gateway between two bursts, when nothing is
in flight. Here danmaku keep flowing while the gateway dies: from talkers on the surviving
gateway and from the viewers on the doomed one themselves (whose acks carry ids that must not
become their cursor), and every viewer's history is compared with the room's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest
from redis.asyncio import Redis

from engine.bus import RoomBus, last_id
from engine.codec import Subprotocol
from engine.ids import RoomId, stream_id_key
from engine.keys import events as events_key
from engine.settings import Settings
from sdk.client import ClientError, LiveroomClient
from tests.support import Api, token, unique

SEND_FAILURES = (ClientError, TimeoutError, ConnectionError, OSError, AssertionError)


class Recorder:
    """One viewer: a client on the doomed gateway first, and the history ids it receives."""

    def __init__(self, urls: list[str], room: str, user: str, binary: bool) -> None:
        sp = Subprotocol.MSGPACK if binary else Subprotocol.JSON
        self.client = LiveroomClient(urls, room, token(user), subprotocol=sp)
        self.ids: list[str] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.connect()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            ev = await self.client.next_event()
            if "id" in ev and ev["type"] not in ("ack", "error", "welcome"):
                self.ids.append(ev["id"])

    def has(self, head: str) -> bool:
        return bool(self.ids) and stream_id_key(self.ids[-1]) >= stream_id_key(head)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.client.close()


async def _until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigkill_under_steady_danmaku_every_viewer_resumes_without_gap_or_duplicate(
    api: Api, spawn, redis: Redis
) -> None:
    doomed, survivor = spawn(), spawn()
    room = unique("kill")
    await api.create_room(room)
    urls = [doomed.ws_url, survivor.ws_url]
    viewers = [Recorder(urls, room, f"kv{i}", binary=i % 2 == 1) for i in range(24)]
    await asyncio.gather(*(v.start() for v in viewers))
    talkers = [
        LiveroomClient(survivor.ws_url, room, token(f"kt{i}"), resume=False) for i in range(4)
    ]
    await asyncio.gather(*(t.connect() for t in talkers))
    stop = asyncio.Event()
    published = [0]

    async def talk(c: LiveroomClient, name: str, pace: float) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                await c.request({"op": "danmaku", "text": f"{name} {n}"}, timeout=3)
                published[0] += 1
            except SEND_FAILURES:
                pass  # a viewer's own gateway died under it: it resumes, we go on
            await asyncio.sleep(pace)

    load = [asyncio.ensure_future(talk(t, f"talker{i}", 0.6)) for i, t in enumerate(talkers)]
    # Some viewers chat too: their acks arrive on the doomed gateway while events are in flight.
    load += [
        asyncio.ensure_future(talk(v.client, f"viewer{i}", 0.8)) for i, v in enumerate(viewers[:6])
    ]
    try:
        await _until(lambda: published[0] >= 20, 30, "steady load")
        before = published[0]
        doomed.kill()
        await _until(
            lambda: all(len(v.client.welcomes) >= 2 for v in viewers), 30, "every viewer resumed"
        )
        await _until(lambda: published[0] >= before + 20, 30, "load after the kill")
    finally:
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
    head = await last_id(redis, events_key(RoomId(room)))
    await _until(lambda: all(v.has(head) for v in viewers), 30, "viewers at the stream's head")

    stream = await RoomBus(redis, Settings()).after(RoomId(room), "0-0", 100_000)
    ids = [e["id"] for e in stream]
    for v in viewers:
        start = stream_id_key(v.client.welcomes[0]["last_id"])
        expected = [i for i in ids if stream_id_key(i) > start]
        assert v.ids == expected, f"{len(v.ids)} received, {len(expected)} in the stream"
        assert 1006 in v.client.close_codes  # it really lost its gateway...
        assert all(w["recovered"] for w in v.client.welcomes[1:])  # ...and resumed in full
    await asyncio.gather(*(v.stop() for v in viewers), *(t.close() for t in talkers))


async def test_resending_a_ref_after_its_reply_was_lost_gets_the_ack(api: Api, spawn) -> None:
    doomed, survivor = spawn(), spawn()
    room = unique("lost-reply")
    await api.create_room(room)
    c = LiveroomClient([doomed.ws_url, survivor.ws_url], room, token("resender"))
    await c.connect()
    op = {"op": "danmaku", "text": "hello once", "ref": "once"}
    doomed.signal(signal.SIGSTOP)  # the op reaches its socket; no reply ever comes back
    try:
        with pytest.raises(TimeoutError):
            await c.request(dict(op), timeout=1)
    finally:
        doomed.kill()
    await _until(lambda: len(c.welcomes) >= 2, 30, "the resume on the other gateway")
    try:
        ack = await c.request(dict(op), timeout=5)  # what any careful client does next
        assert ack["type"] == "ack"
    finally:
        await c.close()


async def test_a_url_that_fails_the_handshake_is_skipped_like_a_refused_one(
    api: Api, spawn
) -> None:
    doomed, survivor = spawn(), spawn()

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # a dying gateway: accepts, then closes before answering the upgrade

    broken = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    broken_url = f"ws://127.0.0.1:{broken.sockets[0].getsockname()[1]}"
    room = unique("handshake")
    await api.create_room(room)
    c = LiveroomClient([doomed.ws_url, broken_url, survivor.ws_url], room, token("skipper"))
    try:
        await c.connect()
        doomed.kill()
        await _until(lambda: len(c.welcomes) >= 2, 15, "the resume on the third URL")
    finally:
        await c.close()
        broken.close()
