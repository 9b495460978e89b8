"""`liveroom.js`, the browser client module, in real Chromium against a real gateway: the
cursor comes only from history events, ops survive a drop with their ref, and a 4403 ends the
client for good."""

from __future__ import annotations

import asyncio

from sdk.client import LiveroomClient
from tests.support import ADMIN, Proc, token, unique
from tests.web.conftest import OpenPage

SETUP = """
async ({room, token}) => {
  const m = await import('/static/liveroom.js');
  const c = new m.LiveroomClient({room, token, backoffMs: 100, maxBackoffMs: 400});
  window.lr = {m, c, texts: [], statuses: [], welcomes: []};
  c.on('danmaku', (ev) => window.lr.texts.push(ev.text));
  c.on('status', (s) => window.lr.statuses.push(s));
  c.on('welcome', (ev) => window.lr.welcomes.push({recovered: ev.recovered, last_id: ev.last_id}));
  await c.connect();
  await new Promise((ok) => {
    const t = setInterval(() => { if (c.state === 'open') { clearInterval(t); ok(); } }, 20);
  });
  return c.cursor;
}
"""


async def _until(page: object, expr: str, timeout: float = 10.0) -> object:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await page.evaluate(expr)  # type: ignore[attr-defined]
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never true: {expr}")
        await asyncio.sleep(0.05)


async def test_a_drop_right_after_an_ack_loses_nothing(
    web_proc: Proc, web_api: object, open_page: OpenPage
) -> None:
    room = unique("jsmod")
    await web_api.create_room(room)  # type: ignore[attr-defined]
    page = await open_page("/healthz")
    cursor = await page.evaluate(SETUP, {"room": room, "token": token("js1")})  # type: ignore[attr-defined]
    assert cursor and ":" in cursor

    # Five times: send a danmaku, and drop the socket the moment its ack arrives (before the
    # tick that delivers the event). The ack's id must not become the cursor.
    for i in range(5):
        await page.evaluate(  # type: ignore[attr-defined]
            "async (t) => { const ack = await window.lr.c.danmaku(t);"
            " window.lr.c._ws.close(); return ack.id; }",
            f"mine-{i}",
        )
        await _until(page, "window.lr.c.state === 'open'")
    await _until(page, "window.lr.texts.length >= 5")
    texts = await page.evaluate("window.lr.texts")  # type: ignore[attr-defined]
    assert texts == [f"mine-{i}" for i in range(5)]  # each once, in order, none lost
    welcomes = await page.evaluate("window.lr.welcomes")  # type: ignore[attr-defined]
    assert len(welcomes) == 6 and all(w["recovered"] for w in welcomes[1:])

    # While the page is disconnected, others talk: the resume replays exactly that.
    await page.evaluate("window.lr.c._ws.close()")  # type: ignore[attr-defined]
    async with LiveroomClient(web_proc.ws_url, room, token("other")) as other:
        for i in range(3):
            await other.danmaku(f"other-{i}")
    await _until(page, "window.lr.texts.length >= 8")
    await asyncio.sleep(0.3)
    texts = await page.evaluate("window.lr.texts")  # type: ignore[attr-defined]
    assert texts[5:] == ["other-0", "other-1", "other-2"]
    assert page.js_errors == []  # type: ignore[attr-defined]


async def test_a_request_made_while_down_is_sent_on_the_next_connection(
    web_proc: Proc, web_api: object, open_page: OpenPage
) -> None:
    room = unique("jsmod")
    await web_api.create_room(room)  # type: ignore[attr-defined]
    page = await open_page("/healthz")
    await page.evaluate(SETUP, {"room": room, "token": token("js2")})  # type: ignore[attr-defined]
    ack = await page.evaluate(  # type: ignore[attr-defined]
        """async () => {
             const c = window.lr.c;
             c._ws.close();                      // down: the request waits for the welcome
             const a = await c.danmaku('queued', 'q-1');
             const again = await c.danmaku('queued', 'q-1');   // a resend: the same answer
             return [a.ref, a.id, again.id];
           }"""
    )
    assert ack[0] == "q-1" and ack[1] == ack[2]
    await _until(page, "window.lr.texts.includes('queued')")
    await asyncio.sleep(0.3)
    assert (await page.evaluate("window.lr.texts")).count("queued") == 1  # type: ignore[attr-defined]

    # A refused op rejects with the server's code, in words.
    err = await page.evaluate(  # type: ignore[attr-defined]
        "async () => { try { await window.lr.c.danmaku('x'.repeat(201)); }"
        " catch (e) { return [e.name, e.code, e.message]; } }"
    )
    assert err[0] == "LiveroomError" and err[1] == "too_long" and err[2]


async def test_access_ended_ends_the_client_for_good(
    web_proc: Proc, web_api: object, open_page: OpenPage
) -> None:
    room = unique("jsmod")
    await web_api.create_room(  # type: ignore[attr-defined]
        room, access={"mode": "paid", "price_cents": 100, "tiers": [], "preview_seconds": 0}
    )
    async with web_api.client(ADMIN) as c:  # type: ignore[attr-defined]
        assert (await c.put(f"/api/rooms/{room}/tickets/js3")).status_code == 200
    page = await open_page("/healthz")
    await page.evaluate(SETUP, {"room": room, "token": token("js3")})  # type: ignore[attr-defined]
    async with web_api.client(ADMIN) as c:  # type: ignore[attr-defined]
        assert (await c.delete(f"/api/rooms/{room}/tickets/js3")).status_code == 200
    ended = await _until(
        page, "window.lr.statuses.find((s) => s.state === 'ended') || null", timeout=5
    )
    assert ended["why"] == "access_ended" and ended["code"] == 4403  # type: ignore[index]
    await asyncio.sleep(1.0)
    assert await page.evaluate("window.lr.c.state") == "ended"  # type: ignore[attr-defined]
    assert await page.evaluate("window.lr.welcomes.length") == 1  # type: ignore[attr-defined]

    # The page can learn why a new connection would be refused: the same 403 a join gets.
    why = await page.evaluate(  # type: ignore[attr-defined]
        """async ({room, token}) => {
             try { await window.lr.m.api('GET', `/api/rooms/${room}/access`, {token}); }
             catch (e) { return e.code; }
             return null;
           }""",
        {"room": room, "token": token("js3")},
    )
    assert why == "not_entitled"
