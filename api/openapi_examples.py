"""Examples in the OpenAPI: one real answer per route (``api/examples.json``, regenerated
with ``python -m api.make_examples``), plus the few that need a broker or stream text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

EXAMPLES = Path(__file__).with_name("examples.json")

LAG = {
    "status": "OK",
    "groups": [{"group": "crm-tracker", "status": "OK", "lag": 3, "partitions": 20}],
    "window_seconds": 60.0,
    "source": "broker",
    "error": None,
    "items": [
        {
            "group": "crm-tracker",
            "topic": "bank.transactions",
            "partition": 0,
            "committed_offset": 1207,
            "end_offset": 1210,
            "lag": 3,
            "time_lag_seconds": 0.41,
            "status": "OK",
        }
    ],
    "next_cursor": None,
    "total": 20,
}
READY = {
    "status": "ready",
    "checks": {"database": "ok", "broker": "reachable", "worker": "caught up (lag 3, broker)"},
}
STREAM = (
    'event: ready\ndata: {"role": "supervisor", "branches": ["b01"]}\n\n'
    "id: 1240\nevent: tally\n"
    'data: {"manager_id": "m-b01-03", "branch_id": "b01", "days": ["2026-11-24"]}\n\n'
)
DATA_QUALITY = {
    "items": [
        {
            "rule": "claim_ratio_floor",
            "client_id": "c0042",
            "manager_id": "m036",
            "branch_id": "b05",
            "origin": "marketed",
            "claim_ratio": "0.7",
            "floor": "0.8",
            "detail": "claim ratio 0.7 is below the floor 0.8 of a self-marketed (自主营销) "
            "client (绩效认领比例不应低于 0.8); applied as sent",
            "since": "2026-09-01T09:00:00+08:00",
        }
    ],
    "next_cursor": None,
    "total": 1,
}
METRICS = 'crm_consumer_lag{group="crm-tracker",partition="0",topic="bank.transactions"} 3.0\n'


def _examples() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(EXAMPLES.read_text()) if EXAMPLES.exists() else {}
    found.setdefault("GET /v1/ops/lag", LAG)
    found.setdefault("GET /readyz", READY)
    found.setdefault("GET /readyz/api", {"status": "ready"})
    # the contract vectors break no floor: a made-up exception shows the shape
    found.setdefault("GET /v1/data-quality", DATA_QUALITY)
    if "POST /v1/reminders/{reminder_id}/ack" in found:
        snoozed = dict(found["POST /v1/reminders/{reminder_id}/ack"])
        snoozed.update(status="snoozed", snoozed_until="2026-11-26T09:00:00+08:00")
        found.setdefault("POST /v1/reminders/{reminder_id}/snooze", snoozed)
    return found


def install(app: FastAPI) -> None:
    """Build the OpenAPI once, with an example answer on every route."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        examples = _examples()
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                ok = op.get("responses", {}).get("200", {})
                content = ok.setdefault("content", {})
                key = f"{method.upper()} {path}"
                if path == "/v1/stream":
                    content.setdefault("text/event-stream", {})["example"] = STREAM
                elif path == "/metrics":
                    content.setdefault("text/plain", {})["example"] = METRICS
                elif key in examples:
                    content.setdefault("application/json", {})["example"] = examples[key]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise
