"""An async client for the gateway protocol, shared by the tests, locust and users' bots.

    async with LiveroomClient(["ws://127.0.0.1:8081"], "demo", token) as c:
        await c.danmaku("hello")              # -> ack {ref, id}
        async for event in c.events():        # every event, in order; resumes by itself
            ...

It keeps the room's resume cursor (``epoch:last_id``) and, when the connection drops with a
code that invites it (1001, 1006, 1011, 1012, 4408), reconnects with ``since`` to the next URL
in its list, so a caller sees every history event once, in order, across gateway restarts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from engine.codec import Event, Subprotocol, decode_events, encode_value

RESUMABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 4408})
REPLY_TYPES = frozenset({"ack", "error", "welcome"})
"""Events for this connection only: never a resume cursor, even when they carry an `id`."""


class ClientError(Exception):
    """An `error` reply, or a refused connection (``status`` set)."""

    def __init__(self, code: str, message: str = "", status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.status = status


class LiveroomClient:
    def __init__(
        self,
        urls: list[str] | str,
        room: str,
        token: str,
        *,
        subprotocol: Subprotocol = Subprotocol.JSON,
        since: str | None = None,
        resume: bool = True,
        max_retries: int = 20,
        recv_buffer: int | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.room = room
        self.token = token
        self.subprotocol = subprotocol
        self.since = since
        self.resume = resume
        self.max_retries = max_retries
        self.recv_buffer = recv_buffer
        self.open_timeout = open_timeout
        self.welcome: Event | None = None
        self.welcomes: list[Event] = []
        self.epoch: str | None = None
        self.last_id: str | None = None
        self.close_codes: list[int | None] = []
        self._url_index = 0
        self._ws: ClientConnection | None = None
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._waiters: dict[str, list[asyncio.Future[Event]]] = {}
        self._refs = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> LiveroomClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def cursor(self) -> str | None:
        if self.epoch is None or self.last_id is None:
            return self.since
        return f"{self.epoch}:{self.last_id}"

    def _url(self) -> str:
        base = self.urls[self._url_index % len(self.urls)].rstrip("/")
        url = f"{base}/ws/rooms/{self.room}"
        if self.cursor:
            url += f"?since={self.cursor}"
        return url

    async def _open(self) -> Event:
        sock = None
        if self.recv_buffer is not None:
            host_port = self.urls[self._url_index % len(self.urls)].split("//", 1)[1]
            host, _, port = host_port.rstrip("/").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        try:
            ws = await connect(
                self._url(),
                additional_headers={"Authorization": f"Bearer {self.token}"},
                subprotocols=[self.subprotocol.value],  # type: ignore[list-item]
                compression=None,
                max_size=None,
                max_queue=None if self.recv_buffer is None else 1,
                open_timeout=self.open_timeout,
                sock=sock,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            code, message = "http_error", exc.response.body.decode(errors="replace")
            try:
                body = json.loads(exc.response.body)
                code, message = body.get("error", code), body.get("message", message)
            except Exception:
                pass
            raise ClientError(code, message, status) from None
        first = decode_events(await ws.recv())
        if not first or first[0].get("type") != "welcome":
            await ws.close()
            raise ClientError("protocol", "the first message did not start with welcome")
        welcome = first[0]
        self._ws = ws
        self._connected.set()
        self.welcome = welcome
        self.welcomes.append(welcome)
        self.epoch = welcome["epoch"]
        if not welcome["recovered"] or self.last_id is None:
            self.last_id = welcome["last_id"]
        for ev in first[1:]:
            self._take(ev)
        return welcome

    async def connect(self) -> Event:
        welcome = await self._open()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        return welcome

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass

    async def drop(self) -> None:
        """Drop the TCP connection without a closing handshake (tests: a crash, a lost phone)."""
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            self._ws.transport.abort()

    def interrupt(self) -> None:
        """Cut the TCP connection as a network would (no close frame); the client resumes with
        ``since`` by itself, as after any drop."""
        if self._ws is not None:
            self._ws.transport.abort()

    # -- reading ---------------------------------------------------------------------------

    def _take(self, ev: Event) -> None:
        if "id" in ev and ev.get("type") not in REPLY_TYPES:
            # Only a history event received moves the cursor: an ack's `id` names an event
            # that may not have reached us yet (PROTOCOL.md §4), so resuming from it would
            # skip what was in flight.
            self.last_id = ev["id"]
        ref = ev.get("ref")
        if ev.get("type") in ("ack", "error") and ref in self._waiters:
            # replies come in the order requests went out, also for a resent ref
            waiting = self._waiters[ref]
            fut = waiting.pop(0)
            if not waiting:
                del self._waiters[ref]
            if not fut.done():
                fut.set_result(ev)
        self._queue.put_nowait(ev)

    async def _read_loop(self) -> None:
        retries = 0
        while True:
            assert self._ws is not None
            try:
                async for message in self._ws:
                    for ev in decode_events(message):
                        self._take(ev)
            except ConnectionClosed:
                pass
            self._connected.clear()
            code = self._ws.close_code
            self.close_codes.append(code)
            if (
                self._closed
                or not self.resume
                or code not in RESUMABLE_CLOSE_CODES
                and code is not None
            ):
                self._queue.put_nowait(ConnectionClosedByServer(code, self._ws.close_reason))
                return
            while True:
                retries += 1
                if retries > self.max_retries:
                    self._queue.put_nowait(ConnectionClosedByServer(code, "gave up resuming"))
                    return
                self._url_index += 1
                try:
                    await self._open()
                    break
                except (
                    OSError,
                    ClientError,
                    ConnectionClosed,
                    InvalidHandshake,  # the peer closed mid-handshake (a gateway dying)
                    TimeoutError,
                ) as exc:
                    if isinstance(exc, ClientError) and exc.status in (401, 403, 404):
                        self._queue.put_nowait(exc)
                        return
                    await asyncio.sleep(min(0.05 * retries, 1.0))
            retries = 0

    async def next_event(self, timeout: float | None = None) -> Event:
        item = await asyncio.wait_for(self._queue.get(), timeout)
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # stays the last word
            raise item
        return item

    async def events(self, timeout: float | None = None) -> AsyncIterator[Event]:
        while True:
            yield await self.next_event(timeout)

    # -- ops -------------------------------------------------------------------------------

    async def send(self, op: dict[str, Any]) -> None:
        """Send one op. While the client is resuming, wait for the new connection (up to
        ``open_timeout``); an op caught in a drop is sent again on it (ops with a ``ref``
        are safe to resend: PROTOCOL.md §4)."""
        assert self._ws is not None, "not connected"
        data = encode_value(op, self.subprotocol)
        message: str | bytes = data if self.subprotocol.binary else data.decode("utf-8")
        for attempt in range(2):
            if not self._connected.is_set() and self.resume and not self._closed:
                await asyncio.wait_for(self._connected.wait(), self.open_timeout)
            ws = self._ws
            try:
                await ws.send(message)
                return
            except ConnectionClosed:
                if attempt or not self.resume or self._closed:
                    raise
                await asyncio.wait_for(self._replaced(ws), self.open_timeout)

    async def _replaced(self, ws: ClientConnection) -> None:
        """Until the reader has resumed on a connection other than ``ws``."""
        while self._ws is ws or not self._connected.is_set():
            if self._reader is None or self._reader.done():
                raise ConnectionClosedByServer(ws.close_code, "not resuming")
            await asyncio.sleep(0.01)

    async def request(self, op: dict[str, Any], timeout: float = 10.0) -> Event:
        """Send an op with a ``ref`` and wait for its ``ack``; raise ``ClientError`` on error."""
        ref = op.setdefault("ref", f"r{next(self._refs)}")
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        waiting = self._waiters.setdefault(ref, [])
        waiting.append(fut)
        try:
            await self.send(op)
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            # A reply that never came must not leave its waiter behind: the reply to the
            # resend of this ref would resolve the stale one and be lost.
            if fut in waiting:
                waiting.remove(fut)
            if not waiting and self._waiters.get(ref) is waiting:
                del self._waiters[ref]
        if reply["type"] == "error":
            raise ClientError(reply["code"], reply.get("message", ""))
        return reply

    async def danmaku(self, text: str, *, ref: str | None = None) -> Event:
        op: dict[str, Any] = {"op": "danmaku", "text": text}
        if ref:
            op["ref"] = ref
        return await self.request(op)

    async def like(self, count: int = 1) -> None:
        await self.send({"op": "like", "count": count})

    async def buy(self, sale: str, qty: int = 1, *, ref: str) -> Event:
        return await self.request({"op": "buy", "sale": sale, "qty": qty, "ref": ref})

    async def enter(self, lottery: str, *, ref: str | None = None) -> Event:
        op: dict[str, Any] = {"op": "enter", "lottery": lottery}
        if ref:
            op["ref"] = ref
        return await self.request(op)


class ConnectionClosedByServer(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}")
        self.code = code
        self.reason = reason
