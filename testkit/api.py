"""The API under test: bearer tokens, a client calling the app in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from api.auth import mint_token

SECRET = "test-secret-" + "x" * 40


def auth(role: str = "admin", secret: str = SECRET, **kw: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, role, **kw)}"}  # type: ignore[arg-type]


@asynccontextmanager
async def asgi_client(app: Any, base_url: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling ``app`` in this process (no server), inside the app's lifespan."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            yield c
