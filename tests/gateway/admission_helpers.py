"""Steps shared by the admission and abuse tests."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.client import connect

from engine.codec import decode_events
from engine.ids import stream_id_key
from sdk.client import LiveroomClient
from tests.gateway.helpers import Talkers
from tests.support import token, unique


async def _join(url: str, room: str, tok: str, **kw: object):
    ws = await connect(
        f"{url}/ws/rooms/{room}",
        additional_headers={"Authorization": f"Bearer {tok}"},
        compression=None,
        **kw,  # type: ignore[arg-type]
    )
    assert decode_events(await ws.recv())[0]["type"] == "welcome"
    return ws


async def _status(url: str, room: str, tok: str, **kw: object) -> int:
    """The HTTP status a WebSocket join gets (101 when it is accepted)."""
    try:
        ws = await _join(url, room, tok, **kw)
    except Exception as exc:  # InvalidStatus
        return exc.response.status_code  # type: ignore[attr-defined]
    await ws.close()
    return 101


class Witness:
    """An honest viewer and a talker in the room: every event said must reach the viewer,
    once and in order. ``latencies`` holds publish-to-receive seconds of each (same host)."""

    def __init__(self, url: str, room: str) -> None:
        self.viewer = LiveroomClient(url, room, token(f"honest-{unique('w')}"))
        self.talk = Talkers(url, room, n=2, prefix=f"wt-{unique('t')}")
        self.said: list[str] = []
        self.seen: list[str] = []
        self.latencies: dict[str, float] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Witness:
        await self.viewer.connect()
        await self.talk.__aenter__()
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        while True:
            ev = await self.viewer.next_event()
            if "id" in ev and ev["type"] not in ("ack", "error"):
                self.seen.append(ev["id"])
                if "ts" in ev:
                    self.latencies[ev["id"]] = time.time() - ev["ts"]

    async def say(self) -> None:
        self.said.append(await self.talk.say(f"honest {len(self.said)}"))

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                await self.say()
                deadline = time.monotonic() + 20
                while set(self.said) - set(self.seen):
                    assert time.monotonic() < deadline, "honest events never arrived"
                    assert self._reader is not None and not self._reader.done()
                    await asyncio.sleep(0.02)
                want = set(self.said)
                assert [i for i in self.seen if i in want] == self.said  # each once, in order
                assert self.seen == sorted(self.seen, key=stream_id_key)
                assert len(set(self.seen)) == len(self.seen)  # no duplicate at all
                assert self.viewer.close_codes == []
        finally:
            if self._reader is not None:
                self._reader.cancel()
            await self.talk.__aexit__(None, None, None)
            await self.viewer.close()

    def honest_latencies(self) -> list[float]:
        return sorted(self.latencies[i] for i in self.said if i in self.latencies)
