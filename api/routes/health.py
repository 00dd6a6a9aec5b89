"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from api.deps import EngineDep, SettingsDep
from models.tables import WorkerPositionRow

router = APIRouter(tags=["health"])
STALE = timedelta(seconds=30)


@router.get("/healthz")
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


@router.get("/readyz")
async def readyz(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: database and broker reachable, and the worker caught up."""
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
    lag = sum(max(0, (r.end_offset or 0) - (r.committed_offset or 0)) for r in fresh)
    if not fresh:
        ready = False
        checks["worker"] = "no recent report from a worker"
    elif lag > settings.ready_max_lag:
        ready = False
        checks["worker"] = f"behind by {lag} events (limit {settings.ready_max_lag})"
    else:
        checks["worker"] = f"caught up (lag {lag})"
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
