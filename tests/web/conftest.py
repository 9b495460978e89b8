"""The pages in a real browser: Debian's headless Chromium driven by Playwright, against one
`liveroom serve --role all` process (gateway, API, media and pages on real ports).

`open_page(path, ...)` opens a page of that process in a fresh browser context (its own
viewport and language); `screenshot(page, name)` saves a picture for docs/web.md under
`test-artifacts/screenshots/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.media.conftest import MEDIA_ENV
from tests.support import CHROMIUM, CHROMIUM_ARGS, Api, Proc

ARGS = [
    *CHROMIUM_ARGS,
    "--enable-precise-memory-info",
    "--js-flags=--expose-gc",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}

OpenPage = Callable[..., Awaitable[object]]


@pytest.fixture(scope="session")
def web_proc(redis_url: str, tmp_root: Path) -> Iterator[Proc]:
    """One process with every role: the pages, the API, the gateway and media."""
    p = Proc(redis_url, "all", tmp_root, env=MEDIA_ENV)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def web_api(web_proc: Proc) -> Api:
    return Api(web_proc.http_url)


@pytest_asyncio.fixture
async def open_page(web_proc: Proc) -> AsyncIterator[OpenPage]:
    """``await open_page("/rooms/r?token=...", viewport=DESKTOP, locale="en-US")``."""
    playwright = pytest.importorskip("playwright.async_api")
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        contexts = []

        async def open_(path: str, *, viewport: dict = DESKTOP, locale: str = "en-US") -> object:
            ctx = await browser.new_context(viewport=viewport, locale=locale)
            contexts.append(ctx)
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.js_errors = errors  # type: ignore[attr-defined]
            # What the page asked for and did not get, as its console reports it (the browser's
            # own loads, a favicon say, raise no response event).
            failed: list[str] = []
            page.on(
                "console",
                lambda m: (
                    failed.append(f"{m.text} {m.location.get('url')}")
                    if m.type == "error" and m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.failed_loads = failed  # type: ignore[attr-defined]
            await page.goto(web_proc.http_url + path)
            return page

        try:
            yield open_
        finally:
            for ctx in contexts:
                await ctx.close()
            await browser.close()


async def screenshot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))  # type: ignore[attr-defined]
    return path
