"""A viewer's WebSocket connection: websockets' ``ServerConnection`` with a lighter receive path.

websockets hands every connection an ``Assembler`` (a queue object, its own queue object and a
64-slot deque) and ``recv()`` awaits through three coroutines of it; an idle viewer keeps all of
that alive for hours. Here the frames websockets parses land in an ``Inbox``: whole messages in
a list that is empty while idle, one future while the reader waits, nothing else. Reading pauses
when ``high`` messages wait unhandled and resumes when a quarter of that is left, as websockets'
own does.
The drain waiters (a deque per connection upstream) are a list, and the per-connection
``LoggerAdapter`` is dropped for the module's logger.

Only what websockets itself calls on its ``recv_messages`` is implemented: ``put`` (a data
frame) and ``close`` (the connection is lost). Server code reads with ``Inbox.next``, never
``ServerConnection.recv``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode, Frame, Opcode

log = logging.getLogger("websockets.server")

MAX_UNREAD = 16
"""Messages received and not yet handled before reading the connection pauses (websockets'
``max_queue``); it resumes at a quarter of that."""

MAX_FRAGMENTS = 4096
"""A message of more frames than this closes the connection (1009), as websockets does."""


@dataclass(frozen=True, slots=True)
class Broken:
    """A message that cannot be read: the connection is closed with ``code``."""

    code: int
    reason: str


Message = str | bytes | Broken


class Inbox:
    """The messages a connection received and its reader has not taken yet, in order."""

    __slots__ = ("messages", "parts", "waiter", "closed", "transport", "high", "paused")

    def __init__(self, transport: asyncio.Transport, high: int) -> None:
        self.messages: list[Message] = []
        self.parts: list[Frame] | None = None
        """The frames so far of a fragmented message."""
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.transport = transport
        self.high = high
        self.paused = False

    # -- what websockets calls -----------------------------------------------------------

    def put(self, frame: Frame) -> None:
        """One data frame (text, binary or a continuation), parsed by websockets."""
        parts = self.parts
        if parts is None and frame.fin:
            self._add(frame.opcode is Opcode.TEXT, frame.data)
            return
        if parts is None:
            self.parts = [frame]
            return
        parts.append(frame)
        if len(parts) > MAX_FRAGMENTS:
            self.parts = None
            self._push(Broken(CloseCode.MESSAGE_TOO_BIG, "too many fragments"))
        elif frame.fin:
            self.parts = None
            self._add(parts[0].opcode is Opcode.TEXT, b"".join(f.data for f in parts))

    def close(self) -> None:
        """The connection is gone: the reader takes what is left, then stops."""
        self.closed = True
        self._wake()

    # -- what the reader calls -----------------------------------------------------------

    async def next(self) -> Message | None:
        """The next message; None once the connection is closed and every message taken."""
        while not self.messages:
            if self.closed:
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        message = self.messages.pop(0)
        if self.paused and len(self.messages) <= self.high // 4 and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return message

    # -- inside --------------------------------------------------------------------------

    def _add(self, text: bool, data: Any) -> None:
        if not text:
            self._push(bytes(data))
            return
        try:
            self._push(bytes(data).decode())
        except UnicodeDecodeError as exc:
            self._push(Broken(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}"))

    def _push(self, message: Message) -> None:
        self.messages.append(message)
        if not self.paused and len(self.messages) >= self.high:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class LiveConnection(ServerConnection):
    """``ServerConnection`` receiving into an ``Inbox`` (``serve(create_connection=...)``)."""

    recv_messages: Inbox  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # websockets only appends to, removes from and iterates its drain waiters.
        self.drain_waiters = []  # type: ignore[assignment]
        self.protocol.logger = self.logger = log

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.recv_messages = Inbox(self.transport, self.max_queue_high or MAX_UNREAD)
