"""Fixtures of the system tests: a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from testkit.browser import chromium


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium under Playwright, headless."""
    async with chromium() as b:
        yield b
