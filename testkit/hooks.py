"""A webhook receiver on a real local HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from crmtracker.broker import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


HOOK_SECRET = "hook-secret-for-tests"


@dataclass
class Receiver:
    """A webhook endpoint on a real local HTTP server; fails the first ``fail_first`` calls."""

    fail_first: int = 0
    calls: int = 0
    failures: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        if self.calls <= self.fail_first:
            self.failures += 1
            return web.Response(status=500, text="down for maintenance")
        self.received.append((dict(request.headers), body))
        return web.Response(status=204)


@asynccontextmanager
async def local_http(routes: list[tuple[str, str, Handler]]) -> AsyncIterator[str]:
    """``(method, path, handler)`` routes on a real HTTP server on a free local port; yields its
    base URL, e.g. ``http://127.0.0.1:PORT``."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
