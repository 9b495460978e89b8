"""``BodyLimit``: the HTTP API's bound on request bodies, as ASGI middleware.

It must never read more of a body than the limit (plus a bounded drain of what a client is
still sending), so that one request cannot make the process hold an unbounded body.
"""

from __future__ import annotations

from typing import Any

from engine.codec import dumps_json
from engine.errors import TooLarge

DRAIN_MOST = 8 << 20
"""Most bytes of a too-large body read (and dropped, never held) so that its sender can read
the 413."""


class BodyLimit:
    """Refuse a request body past ``limit`` bytes with 413, never reading more than that: by its
    Content-Length at once, or while a chunked body streams in (held, then handed on). WHEP and
    WHIP bound their SDP offers themselves (``media/http.py``, with CORS headers)."""

    def __init__(self, app: Any, limit: int, *, skip: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.skip = skip

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                # Read (and drop) a body of modest size first: a server that answers and closes
                # while the client still sends makes the client's TCP stack meet a reset, and it
                # never sees the 413. Past DRAIN_MOST, the reset is the answer.
                if int(declared) <= DRAIN_MOST:
                    await self._discard(receive, True, DRAIN_MOST)
                await self._refuse(send)
            else:
                await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._discard(receive, more)
                await self._refuse(send)
                return
        handed = False

        async def replay() -> Any:
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _discard(self, receive: Any, more: bool, most: int = DRAIN_MOST) -> None:
        """Read (and drop) up to ``most`` more bytes of a body that is too large, so that a
        client still sending it can read the 413 instead of meeting a reset connection."""
        dropped = 0
        while more and dropped < most:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def _refuse(self, send: Any) -> None:
        # Raw ASGI, before any route or exception handler: the §3 body is built here.
        error = TooLarge(f"a request body is at most {self.limit} bytes")
        body = dumps_json({"error": error.code, "message": error.message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
