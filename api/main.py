"""The FastAPI application: routers, lifespan-managed engine, JSON errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from api import errors, openapi_examples
from api.deps import ERRORS
from api.export import ExportMiddleware
from api.reads import ReadCache
from api.routes import (
    assessment,
    audit,
    balances,
    book,
    clients,
    dashboard,
    events,
    health,
    leaderboard,
    ops,
    plan,
    quality,
    reminders,
    reports,
    series,
    stream,
    tally,
    visits,
)
from config import ApiConfig
from models.visit_ledger import NotesCipher

log = logging.getLogger("crmtracker.api")


def create_app(
    settings: ApiConfig,
    *,
    engine: Callable[[], AsyncEngine],
    secret: str,
    notes_cipher: NotesCipher,
) -> FastAPI:
    """The API on what the composition root made: ``engine`` builds the database engine when
    the app starts (on the server's loop), ``secret`` signs tokens, ``notes_cipher`` opens
    visit notes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = engine()
        app.state.reads = ReadCache(app.state.engine, enabled=settings.api_read_cache)
        pruner = asyncio.create_task(stream.prune_forever(app.state.engine))
        try:
            yield
        finally:
            pruner.cancel()
            await asyncio.gather(pruner, return_exceptions=True)
            await app.state.reads.close()
            await app.state.engine.dispose()

    app = FastAPI(
        title="crm-tracker",
        version="0.1.0",
        description="Live activity tallies of bank relationship managers (客户经理).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.secret = secret
    app.state.notes_cipher = notes_cipher

    errors.install(app)  # CRMError: {"detail": ...} with its status code

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.include_router(health.router)
    app.include_router(tally.router, responses=ERRORS)
    app.include_router(leaderboard.router, responses=ERRORS)
    app.include_router(assessment.router, responses=ERRORS)
    app.include_router(events.router, responses=ERRORS)
    app.include_router(audit.router, responses=ERRORS)
    app.include_router(stream.router, responses=ERRORS)
    # before clients: /v1/clients/tier-review is not a client id
    app.include_router(balances.router, responses=ERRORS)
    app.include_router(clients.router, responses=ERRORS)
    app.include_router(visits.router, responses=ERRORS)
    app.include_router(book.router, responses=ERRORS)
    app.include_router(plan.router, responses=ERRORS)
    app.include_router(reports.router, responses=ERRORS)
    app.include_router(series.router, responses=ERRORS)
    app.include_router(reminders.router, responses=ERRORS)
    app.include_router(quality.router, responses=ERRORS)
    app.include_router(ops.router, responses=ERRORS)  # also starts the lag sampler
    app.include_router(dashboard.router)
    # ?format=csv|xlsx (or Accept) on the report routes
    app.add_middleware(ExportMiddleware)
    openapi_examples.install(app)

    contract_doc: dict[str, object] = {}

    # the event contract, like /openapi.json: public (no data in it), not part of the OpenAPI
    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        if not contract_doc:
            from models.contract import asyncapi as build

            contract_doc.update(build(settings, server=settings.bootstrap))
        return JSONResponse(contract_doc)

    return app
