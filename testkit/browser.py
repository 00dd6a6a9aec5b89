"""Debian's Chromium driven by Playwright, for the dashboard's page tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"


HAVE_CHROMIUM = Path(CHROMIUM).exists()


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser: Any, **kw: Any) -> Any:
    context = await browser.new_context(
        viewport=kw.pop("viewport", {"width": 1440, "height": 1000}),
        timezone_id=kw.pop("timezone_id", "America/Los_Angeles"),  # not the bank's zone
        **kw,
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    return page
