"""Every `data-lr` hook of PROTOCOL.md §7, read from the contract itself, is on its page once a
sale and a lottery are open: outside tools drive the pages by these names only."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.support import ADMIN, Api, token, unique
from tests.web.conftest import OpenPage

CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "PROTOCOL.md"
"""The contract beside the project's root, where a checkout has it."""

HOOKS = {
    "player": [
        "video", "chat", "danmaku-input", "danmaku-send", "like", "likes-total", "online",
        "access", "sale", "sale-left", "buy", "buy-result", "lottery", "lottery-enter",
        "lottery-result", "winners",
    ],
    "console": [
        "go-live", "end", "sale-form", "sale-title", "sale-price", "sale-stock", "sale-limit",
        "sale-duration", "sale-start", "sale-sold", "sale-left", "lottery-form", "lottery-prize",
        "lottery-winners", "lottery-keyword", "lottery-duration", "lottery-start",
        "lottery-draw", "notice-input", "notice-send", "online", "likes-total",
    ],
}  # fmt: skip
"""PROTOCOL.md §7, as of this writing."""


def _contract_hooks(text: str) -> dict[str, list[str]]:
    """{'player': [...], 'console': [...]} from §7's bullets (words in parentheses are texts
    the elements show, not hooks)."""
    section = text.split("## 7. Pages", 1)[1].split("\n## ", 1)[0]
    out: dict[str, list[str]] = {}
    for page in ("player", "console"):
        bullet = section.split(f"- {page}:", 1)[1].split("\n- ", 1)[0]
        bullet = re.sub(r"\([^)]*\)", "", bullet)
        out[page] = list(dict.fromkeys(re.findall(r"`([a-z][a-z-]*)`", bullet)))
    return out


def test_the_hooks_here_are_the_contracts() -> None:
    if not CONTRACT.is_file():
        pytest.skip("PROTOCOL.md is not beside this checkout")
    assert _contract_hooks(CONTRACT.read_text()) == HOOKS


async def test_every_hook_of_the_contract_is_on_its_page(web_api: Api, open_page: OpenPage) -> None:
    room = unique("hooks")
    await web_api.create_room(room)
    host = token("hooks-host", "host", rooms=[room])
    async with httpx.AsyncClient(
        base_url=web_api.base_url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as c:
        sale = {"item": "mug", "title": "Mug", "price_cents": 990, "stock": 10}
        r = await c.post(
            f"/api/rooms/{room}/sales", json={**sale, "per_user_limit": 1, "duration_s": 300}
        )
        assert r.status_code == 201, r.text
        rule = {"like": False, "keyword": "666", "paid_only": False, "min_tier": None}
        r = await c.post(
            f"/api/rooms/{room}/lotteries",
            json={"prize": "Earbuds", "winners": 1, "rule": rule, "duration_s": 300},
        )
        assert r.status_code == 201, r.text
    player = await open_page(f"/rooms/{room}?token={token('hooks-viewer')}")
    console = await open_page(f"/host/{room}?token={host}")
    hooks = HOOKS
    for page, names in ((player, hooks["player"]), (console, hooks["console"])):
        await page.locator('[data-lr="sale-left"]').first.wait_for(state="attached")  # type: ignore[attr-defined]
        missing = [
            n
            for n in names
            if await page.locator(f'[data-lr="{n}"]').count() == 0  # type: ignore[attr-defined]
        ]
        assert missing == [], f"{page.url.split('?')[0]} lacks {missing}"  # type: ignore[attr-defined]
