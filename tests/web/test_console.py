"""The host console (`/host/{room}`) and the verify page (`/verify/{room}/{lottery}`) in a real
Chromium, against one `liveroom serve --role all` process, with real players beside them.

Every element is found by its `data-lr` hook (PROTOCOL.md §7; the pages' own hooks are listed
in docs/web.md). Each test ends with no JavaScript error on any page it opened.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sdk.client import ClientError, LiveroomClient
from tests.support import Api, Proc, token, unique
from tests.web.conftest import DESKTOP, PHONE, OpenPage, screenshot

pw = pytest.importorskip("playwright.async_api")
expect = pw.expect

TIMEOUT_MS = 10_000


def hook(page: Any, name: str) -> Any:
    return page.locator(f'[data-lr="{name}"]')


async def number(page: Any, name: str) -> int | None:
    """The integer shown by a hook (digits only: "1,234 left" is 1234), or None."""
    text = await hook(page, name).first.inner_text()
    digits = re.sub(r"[^\d]", "", text)
    return int(digits) if digits else None


async def until(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def wait_number(
    page: Any, name: str, ok: Callable[[int], bool], timeout: float = 10.0
) -> int:
    async def check() -> int | None:
        n = await number(page, name)
        return n if n is not None and ok(n) else None

    return await until(f"{name} on {page.url}", check, timeout)


async def wait_event(client: LiveroomClient, kind: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        ev = await client.next_event(max(0.05, deadline - time.monotonic()))
        if ev["type"] == kind:
            return ev


async def open_console(open_page: OpenPage, room: str, tok: str, **kw: Any) -> Any:
    page = await open_page(f"/host/{room}?token={tok}", **kw)
    await expect(hook(page, "connection")).to_have_attribute(
        "data-state", "open", timeout=TIMEOUT_MS
    )
    return page


async def start_sale(
    page: Any, *, title: str, price: int, stock: int, limit: int, duration: int
) -> None:
    await hook(page, "sale-title").fill(title)
    await hook(page, "sale-price").fill(str(price))
    await hook(page, "sale-stock").fill(str(stock))
    await hook(page, "sale-limit").fill(str(limit))
    await hook(page, "sale-duration").fill(str(duration))
    await hook(page, "sale-start").click()


async def start_lottery(page: Any, *, prize: str, winners: int, keyword: str, duration: int) -> str:
    await hook(page, "lottery-prize").fill(prize)
    await hook(page, "lottery-winners").fill(str(winners))
    await hook(page, "lottery-keyword").fill(keyword)
    await hook(page, "lottery-duration").fill(str(duration))
    await hook(page, "lottery-start").click()
    card = hook(page, "lottery-card")
    await expect(card).to_be_visible(timeout=TIMEOUT_MS)
    return await card.get_attribute("data-lottery")


def no_js_errors(*pages: Any) -> None:
    for page in pages:
        assert page.js_errors == [], (page.url, page.js_errors)


# -- 1. a flash sale from the console, bought on a player ------------------------------------


async def test_sale_started_from_console_sells_on_player(web_api: Api, open_page: OpenPage) -> None:
    room = unique("sale")
    await web_api.create_room(room, title="Sale night")
    console = await open_console(open_page, room, token("h1", "host", rooms=[room]))
    player = await open_page(f"/rooms/{room}?token={token('buyer1', name='Buyer')}")

    await start_sale(console, title="Desk lamp", price=2500, stock=5, limit=1, duration=120)
    await expect(hook(console, "sale-msg")).to_contain_text("Sale started")
    await wait_number(console, "sale-left", lambda n: n == 5)
    await expect(hook(player, "sale")).to_be_visible(timeout=TIMEOUT_MS)
    await wait_number(player, "sale-left", lambda n: n == 5)

    await hook(player, "buy").click()
    await expect(hook(player, "buy-result")).to_contain_text("Order confirmed", timeout=TIMEOUT_MS)
    await expect(hook(player, "buy-result")).to_contain_text("25.00")
    await wait_number(player, "sale-left", lambda n: n == 4)
    await wait_number(console, "sale-left", lambda n: n == 4)
    await wait_number(console, "sale-sold", lambda n: n == 1)
    await expect(hook(console, "sale-revenue")).to_contain_text("25.00")
    # the console's orders table has it, with the buyer
    row = console.locator('[data-lr="orders"] tbody tr[data-user="buyer1"]')
    await expect(row).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(row).to_contain_text("25.00")

    # past the per-user limit: refused, in words, and nothing more is sold
    await hook(player, "buy").click()
    await expect(hook(player, "buy-result")).to_contain_text("limit", timeout=TIMEOUT_MS)
    await asyncio.sleep(1.2)
    assert await number(console, "sale-left") == 4
    assert await number(console, "sale-sold") == 1

    # the host ends it early from the console's list
    await console.locator('[data-lr="sale-row"] [data-lr="sale-end"]').first.click()
    await expect(console.locator('[data-lr="sale-row"] .tag').first).to_have_text(
        "ended", timeout=TIMEOUT_MS
    )
    no_js_errors(console, player)


# -- 2. a lottery from the console, entered on players, verified --------------------------------


async def test_lottery_from_console_entered_on_players_and_verified(
    web_api: Api, open_page: OpenPage
) -> None:
    room = unique("lot")
    await web_api.create_room(room, title="Lottery night")
    console = await open_console(open_page, room, token("h1", "host", rooms=[room]))
    chatty = await open_page(f"/rooms/{room}?token={token('fan1', name='Fan one')}")
    clicker = await open_page(f"/rooms/{room}?token={token('fan2', name='Fan two')}")

    lottery = await start_lottery(
        console, prize="Tour tickets", winners=2, keyword="pickme", duration=300
    )
    for player in (chatty, clicker):
        await expect(hook(player, "lottery")).to_be_visible(timeout=TIMEOUT_MS)
    # one enters by sending the keyword as danmaku, the other with the button
    await hook(chatty, "danmaku-input").fill("pickme please!")
    await hook(chatty, "danmaku-send").click()
    await hook(clicker, "lottery-enter").click()
    await expect(hook(clicker, "lottery-result")).to_contain_text("You're in", timeout=TIMEOUT_MS)
    await expect(hook(console, "lottery-entrants")).to_have_text("2", timeout=TIMEOUT_MS)
    # the keyword danmaku reached the console's list too
    await expect(console.locator('[data-lr="danmaku-item"][data-user="fan1"]')).to_contain_text(
        "pickme"
    )

    await hook(console, "lottery-draw").click()
    await expect(hook(console, "drawn-winners").locator(".winner")).to_have_count(
        2, timeout=TIMEOUT_MS
    )
    for player in (chatty, clicker):
        await expect(hook(player, "winners")).to_contain_text("fan1", timeout=TIMEOUT_MS)
        await expect(hook(player, "winners")).to_contain_text("fan2")

    # the player's verify link, followed, checks the proof in the browser
    async with clicker.context.expect_page() as opened:
        await hook(clicker, "verify").click()
    proof = await opened.value
    proof.js_errors = []
    proof.on("pageerror", lambda e: proof.js_errors.append(str(e)))
    await proof.wait_for_load_state()
    assert f"/verify/{room}/{lottery}" in proof.url
    result = hook(proof, "verify-result")
    await expect(result).to_contain_text("verified", timeout=TIMEOUT_MS)
    await expect(hook(proof, "verify-winners")).to_contain_text("fan1")

    # the same check on records that do not hold, and before the draw
    async with web_api.client(token("anyone")) as c:
        record = (await c.get(f"/api/rooms/{room}/lotteries/{lottery}")).json()
    verdicts = await proof.evaluate(
        """async (rec) => {
          const { verifyLottery } = await import("/static/liveroom.js");
          const cases = {
            good: rec,
            seed: { ...rec, seed: rec.seed.replace(/^./, (c) => (c === "0" ? "1" : "0")) },
            winners: { ...rec, winners: ["mallory"] },
            entrants: {
              ...rec, entrants: [...rec.entrants, "zed"], entrants_count: rec.entrants.length + 1,
            },
            unsorted: { ...rec, entrants: [...rec.entrants].reverse() },
            undrawn: { ...rec, seed: undefined },
          };
          const out = {};
          for (const [k, v] of Object.entries(cases)) out[k] = await verifyLottery(v);
          return out;
        }""",
        record,
    )
    assert verdicts["good"]["ok"], verdicts["good"]
    for case in ("seed", "winners", "entrants", "unsorted", "undrawn"):
        assert not verdicts[case]["ok"], (case, verdicts[case])
    assert "commit" in verdicts["seed"]["reasons"][0]
    assert "not an entrant" in verdicts["winners"]["reasons"][0]
    assert any("entrants_sha256" in r for r in verdicts["entrants"]["reasons"])
    assert "out of order" in verdicts["unsorted"]["reasons"][0]
    assert verdicts["undrawn"]["reasons"] == ["not drawn yet"]
    no_js_errors(console, chatty, clicker, proof)


async def test_verify_page_before_the_draw(web_api: Api, open_page: OpenPage) -> None:
    room = unique("lot")
    await web_api.create_room(room)
    async with web_api.client() as c:
        r = await c.post(
            f"/api/rooms/{room}/lotteries", json={"prize": "Mug", "winners": 1, "duration_s": 300}
        )
    assert r.status_code == 201, r.text
    lottery = r.json()["id"]
    page = await open_page(f"/verify/{room}/{lottery}?token={token('anyone')}")
    await expect(hook(page, "verify-result")).to_contain_text("not drawn yet", timeout=TIMEOUT_MS)
    async with web_api.client() as c:
        assert (await c.post(f"/api/rooms/{room}/lotteries/{lottery}/draw")).status_code == 200
    # the page checks again by itself once the draw is published (nobody entered: no winners)
    await expect(hook(page, "verify-result")).to_contain_text("verified", timeout=TIMEOUT_MS)
    await expect(hook(page, "verify-winners")).to_contain_text("nobody")
    no_js_errors(page)


# -- 3. the console's own parts ---------------------------------------------------------------


async def test_console_basics(web_proc: Proc, web_api: Api, open_page: OpenPage) -> None:
    room = unique("con")
    await web_api.create_room(room, title="Basics")
    host = token("h1", "host", rooms=[room])
    page = await open_console(open_page, room, host)
    status = hook(page, "status")
    await expect(status).to_have_attribute("data-status", "scheduled")

    # online rises when a Python client joins, the notice reaches it, its danmaku appears
    online = await wait_number(page, "online", lambda n: n >= 1)
    async with LiveroomClient(web_proc.ws_url, room, token("py1", name="Python")) as py:
        await wait_number(page, "online", lambda n: n >= online + 1)
        await hook(page, "notice-input").fill("Welcome, everyone!")
        await hook(page, "notice-send").click()
        assert (await wait_event(py, "notice"))["text"] == "Welcome, everyone!"
        await expect(hook(page, "notice-msg")).to_contain_text("sent")

        await py.danmaku("hello from python")
        item = page.locator('[data-lr="danmaku-item"][data-user="py1"]').first
        await expect(item).to_contain_text("hello from python", timeout=TIMEOUT_MS)
        # mute from the list: the next danmaku is refused
        await item.locator('[data-lr="mute-60"]').click()
        await expect(page.locator(".toast").first).to_contain_text("Muted")

        async def muted() -> bool:
            try:
                await py.danmaku("still here?")
            except ClientError as e:
                return e.code == "muted"
            return False

        await until("the mute", muted, 5)
    await wait_number(page, "online", lambda n: n <= online)

    # the console's connection drops: it says so, resumes, and misses nothing sent meanwhile
    conn = hook(page, "connection")
    await page.evaluate("window.liveroomConsole.client._ws.close()")
    async with web_api.client() as c:
        r = await c.post(f"/api/rooms/{room}/notices", json={"text": "sent while you were away"})
    assert r.status_code == 201, r.text
    await expect(conn).to_have_attribute("data-state", "open", timeout=TIMEOUT_MS)
    assert await page.evaluate("window.liveroomConsole.client.reconnects") >= 1
    await expect(page.locator('[data-lr="feed-event"]').first).to_contain_text(
        "sent while you were away", timeout=TIMEOUT_MS
    )

    # go live, end: the status follows
    await hook(page, "go-live").click()
    await expect(status).to_have_attribute("data-status", "live", timeout=TIMEOUT_MS)
    await expect(status).to_contain_text("Live")
    await hook(page, "end").click()
    await expect(status).to_have_attribute("data-status", "ended", timeout=TIMEOUT_MS)

    # an invalid sale: the server's 422 in words, in the form and in the banner
    await start_sale(page, title="Nothing", price=100, stock=0, limit=1, duration=60)
    await expect(hook(page, "sale-msg")).to_contain_text("stock", timeout=TIMEOUT_MS)
    await expect(hook(page, "error")).to_contain_text("Could not start the sale")

    # a viewer's token: go-live is refused with the server's words
    viewer = await open_console(open_page, room, token("v9"))
    await hook(viewer, "go-live").click()
    async with httpx.AsyncClient(base_url=web_proc.http_url) as c:
        r = await c.post(
            f"/api/rooms/{room}/live", headers={"Authorization": f"Bearer {token('v9')}"}
        )
    assert r.status_code == 403
    await expect(hook(viewer, "error")).to_contain_text(r.json()["message"], timeout=TIMEOUT_MS)
    await expect(hook(viewer, "error")).to_contain_text("Could not go live")
    await screenshot(viewer, "console-refused")
    no_js_errors(page, viewer)


async def test_console_without_token_and_in_chinese(web_api: Api, open_page: OpenPage) -> None:
    room = unique("con")
    await web_api.create_room(room)
    page = await open_page(f"/host/{room}")
    await hook(page, "token-input").fill(token("h1", "host", rooms=[room]))
    await page.locator('[data-lr="token-form"] button').click()
    await expect(hook(page, "connection")).to_have_attribute(
        "data-state", "open", timeout=TIMEOUT_MS
    )

    zh = await open_console(
        open_page, room, token("h1", "host", rooms=[room]), locale="zh-CN", viewport=PHONE
    )
    await expect(hook(zh, "go-live")).to_have_text("开播")
    await expect(hook(zh, "sale-start")).to_have_text("开始秒杀")
    await screenshot(zh, "console-phone-zh")
    no_js_errors(page, zh)


# -- 4. the pictures: a busy show -------------------------------------------------------------


async def test_console_screenshot(web_proc: Proc, web_api: Api, open_page: OpenPage) -> None:
    room = unique("show")
    await web_api.create_room(room, title="Friday night unboxing")
    host = token("h1", "host", rooms=[room], name="Host")
    async with web_api.client() as c:
        assert (await c.post(f"/api/rooms/{room}/live")).status_code == 200
    page = await open_console(open_page, room, host, viewport=DESKTOP)
    await start_sale(page, title="Retro camera kit", price=12900, stock=200, limit=3, duration=600)
    await wait_number(page, "sale-left", lambda n: n == 200)
    lottery = await start_lottery(
        page, prize="Signed vinyl", winners=3, keyword="lucky", duration=600
    )
    sale = await page.evaluate("window.liveroomConsole.state.current")

    names = ["Mia", "Leo", "Ava", "Kai", "Zoe", "Ian", "Noa", "Eli"]
    lines = [
        "this looks amazing",
        "lucky!",
        "how much is shipping?",
        "666 lucky",
        "lucky me",
        "the lens is gorgeous",
        "already ordered two",
        "lucky lucky",
    ]
    viewers: list[LiveroomClient] = []
    try:
        for i, name in enumerate(names):
            c = LiveroomClient(web_proc.ws_url, room, token(f"u{i}", name=name))
            await c.connect()
            viewers.append(c)
            await c.like(5 + 7 * i)
            await c.danmaku(lines[i])
            await c.buy(sale, 1 + i % 3, ref=f"b{i}")
            await asyncio.sleep(0.6)
        await wait_number(page, "sale-sold", lambda n: n >= 12)
        await expect(hook(page, "lottery-entrants")).to_have_text("4", timeout=TIMEOUT_MS)
        await asyncio.sleep(1.5)
        await screenshot(page, "console-desktop")

        await hook(page, "lottery-draw").click()
        await expect(hook(page, "drawn-winners").locator(".winner")).to_have_count(
            3, timeout=TIMEOUT_MS
        )
        href = await hook(page, "verify").get_attribute("href")
    finally:
        for c in viewers:
            await c.close()
    # the orders table shows every order of the sale
    await expect(page.locator('[data-lr="orders"] tbody tr[data-order]')).to_have_count(
        8, timeout=TIMEOUT_MS
    )

    proof = await open_page(href, viewport=DESKTOP)
    result = hook(proof, "verify-result")
    await expect(result).to_contain_text("verified", timeout=TIMEOUT_MS)
    assert lottery in proof.url
    await screenshot(proof, "verify-desktop")
    no_js_errors(page, proof)
