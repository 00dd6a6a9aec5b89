"""Liveness and readiness.

Two readiness questions, answered apart:

- ``GET /readyz`` (the contract's): is the **pipeline** ready, i.e. database and broker
  reachable, a worker alive (it reported within 30 s) and the group caught up (total lag at
  most ``CRM_READY_MAX_LAG``)? For deploy gates, smoke tests and humans.
- ``GET /readyz/api``: can **this API instance** serve requests, i.e. does its database
  answer? Reads come from the database, not the broker. This is what a load balancer or a
  Kubernetes readinessProbe should use: with ``/readyz`` there, a worker outage or a
  backfill would take every API pod out of service, including ``/v1/ops/lag`` that shows
  the outage. A stale pipeline is an alert (deploy/prometheus/alerts.yml), not a reason to
  stop answering.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from api.answers import AliveOut, ReadyOut
from api.deps import EngineDep, SettingsDep
from models.tables import WorkerPositionRow

router = APIRouter(tags=["health"])
STALE = timedelta(seconds=30)


@router.get("/healthz", response_model=AliveOut)
async def healthz() -> dict[str, str]:
    """Liveness: the API process answers."""
    return {"status": "ok"}


async def _broker_ok(bootstrap: str) -> tuple[bool, str]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        _r, w = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", int(port)), 2)
        w.close()
        return True, "reachable"
    except (OSError, TimeoutError, ValueError) as exc:
        return False, f"unreachable: {exc}"


def _answer(ready: bool, checks: dict[str, Any]) -> JSONResponse:
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/readyz/api", response_model=ReadyOut)
async def readyz_api(engine: EngineDep) -> JSONResponse:
    """Readiness of this API instance: its database answers (use for load balancers)."""
    try:
        async with engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 5)
    except Exception as exc:
        return _answer(False, {"database": f"unavailable: {type(exc).__name__}"})
    return _answer(True, {"database": "ok"})


def _sampled_lag(request: Request, settings_window: float) -> int | None:
    """Total lag from the API's own broker sample, if it is recent."""
    monitor = getattr(request.app.state, "lag_monitor", None)
    if monitor is None or monitor.sampled_at is None:
        return None
    if time.time() - monitor.sampled_at > max(30.0, settings_window):
        return None
    return sum(i["lag"] for i in monitor.partitions())


@router.get("/readyz", response_model=ReadyOut)
async def readyz(request: Request, engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    """Pipeline readiness: database and broker reachable, a worker alive and caught up."""
    checks: dict[str, Any] = {}
    ready = True
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            rows = (
                await conn.execute(
                    select(WorkerPositionRow).where(WorkerPositionRow.group_id == settings.group_id)
                )
            ).all()
        checks["database"] = "ok"
    except Exception as exc:
        rows = []
        ready = False
        checks["database"] = f"unavailable: {type(exc).__name__}"
    ok, detail = await _broker_ok(settings.bootstrap)
    checks["broker"] = detail
    ready = ready and ok
    now = datetime.now(UTC)
    fresh = [r for r in rows if now - r.updated_at < STALE]
    # Prefer the lag read from the broker (independent of the workers); fall back to what
    # the workers reported.
    lag = _sampled_lag(request, settings.lag_window_seconds)
    source = "broker"
    if lag is None:
        lag = sum(max(0, (r.end_offset or 0) - (r.committed_offset or 0)) for r in fresh)
        source = "worker reports"
    if not fresh:
        # No live worker: events that arrive would not be applied, whatever the lag now.
        ready = False
        checks["worker"] = "no worker has reported in the last 30 s"
    elif lag > settings.ready_max_lag:
        ready = False
        checks["worker"] = f"behind by {lag} events (limit {settings.ready_max_lag}, {source})"
    else:
        checks["worker"] = f"caught up (lag {lag}, {source})"
    return _answer(ready, checks)
