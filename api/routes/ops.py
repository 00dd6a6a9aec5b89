"""Ops endpoints: consumer lag with its status, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.answers import LagOut
from api.auth import Principal
from api.deps import _bearer, principal_of, require_roles
from api.errors import Forbidden, Unavailable
from models.tables import EventRow, RejectedRow
from streams.lag import LagMonitor

log = logging.getLogger("crmtracker.api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The lag monitor and its sampler task (entered after the app's lifespan made the
    engine, left before it disposes of it)."""
    settings = app.state.settings
    monitor = app.state.lag_monitor = LagMonitor(settings.lag, app.state.engine)
    sampler = None
    stop = asyncio.Event()
    if settings.lag_sample_seconds > 0:
        sampler = asyncio.create_task(
            monitor.run(settings.lag_sample_seconds, stop), name="lag-sampler"
        )
    try:
        yield
    finally:
        if sampler is not None:
            stop.set()
            sampler.cancel()
            # never let a sample stuck in a client library hold up the shutdown
            done, _ = await asyncio.wait({sampler}, timeout=10)
            if not done:
                log.warning("lag sampler did not stop in 10 s; leaving it")


router = APIRouter(tags=["ops"], lifespan=lifespan)
Ops = Annotated[Principal, Depends(require_roles("ops", "admin"))]

# What the database knows, whichever worker applied it (the worker counters are per process
# and start at 0 on restart; these are totals). Refreshed at most every STORED_TTL seconds
# when /metrics is scraped: two GROUP BY counts, cheap at a scrape interval of 15 s or more.
STORED_TTL = 30.0
EVENTS_STORED = Gauge(
    "crm_events_stored",
    "Events in the database by type and status (applied | held), from the API",
    ["event_type", "status"],
)
PROBLEMS_STORED = Gauge(
    "crm_problem_messages_stored",
    "Rejected and held messages in the database by status (rejected | held | released)",
    ["status"],
)


@router.get(
    "/v1/ops/lag",
    response_model=LagOut,
    responses={503: {"description": "the broker's offsets could not be read (yet)"}},
)
async def lag(
    request: Request,
    _user: Ops,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,9}$")] = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """Consumer lag per group, topic and partition, with a Burrow-style status."""
    monitor = request.app.state.lag_monitor
    # without the background sampler (CRM_LAG_SAMPLE_SECONDS=0) every request samples
    if refresh or monitor.sampled_at is None or not request.app.state.settings.lag_sample_seconds:
        try:
            await monitor.sample()
        except Exception as exc:
            if monitor.sampled_at is None:
                raise Unavailable(
                    f"cannot read offsets from the broker: {type(exc).__name__}: {exc}"
                ) from None
    answer = monitor.report()
    start = int(cursor or 0)
    items = answer["items"]
    answer["items"] = items[start : start + limit]
    answer["next_cursor"] = str(start + limit) if start + limit < len(items) else None
    return answer


async def metrics_reader(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Ops and admin tokens; anyone when CRM_METRICS_PUBLIC is set (network-restricted)."""
    if request.app.state.settings.metrics_public:
        return
    user = principal_of(request, creds)
    if user.role not in ("ops", "admin"):
        raise Forbidden("out of scope for this role")


async def refresh_stored_counts(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        events = (
            await conn.execute(
                select(EventRow.event_type, EventRow.status, func.count()).group_by(
                    EventRow.event_type, EventRow.status
                )
            )
        ).all()
        problems = (
            await conn.execute(
                select(RejectedRow.status, func.count()).group_by(RejectedRow.status)
            )
        ).all()
    for event_type, st, n in events:
        EVENTS_STORED.labels(event_type, st).set(n)
    for st, n in problems:
        PROBLEMS_STORED.labels(st).set(n)


@router.get("/metrics", dependencies=[Depends(metrics_reader)], response_class=PlainTextResponse)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format: this process's registry, lag gauges, stored counts."""
    state = request.app.state
    if time.monotonic() - getattr(state, "stored_counts_at", -STORED_TTL) >= STORED_TTL:
        try:
            await refresh_stored_counts(state.engine)
            state.stored_counts_at = time.monotonic()
        except Exception:  # the database being down must not hide the other metrics
            pass
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
