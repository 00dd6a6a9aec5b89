"""Assessment (考核) of a manager, and the comprehensive evaluation a supervisor enters."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from api.answers import AssessmentOut, EnteredOut, EvaluationsOut
from api.deps import ConnDep, EngineDep, Reader, SettingsDep
from api.errors import Conflict, Forbidden, Invalid
from api.scope import ManagerInScope
from models.assessment import assess, evaluation_document, period_label
from models.audit import record
from models.policy import period_range
from models.tables import EvaluationRow

router = APIRouter(prefix="/v1", tags=["assessment"])

AssessPeriod = Literal["month", "quarter", "year"]
PeriodQ = Annotated[AssessPeriod, Query(description="month (check), quarter, year (settlement)")]
AtQ = Annotated[date | None, Query(description="a date in the period (default: today)")]


class EvaluationIn(BaseModel):
    """Comprehensive evaluation points for one period, with the reasons for them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "period": "year",
                "at": "2026-12-31",
                "points": "27.50",
                "reasons": "Work log complete; two post-loan checks late in Q3.",
                "parts": {
                    "work_log": "9.5",
                    "post_loan_discipline": "8",
                    "professional_quality": "10",
                },
            }
        },
    )

    period: AssessPeriod = "year"
    at: date | None = None
    points: Decimal = Field(ge=0, max_digits=7, decimal_places=2)
    reasons: str = Field(min_length=1, max_length=4000)
    parts: dict[str, Decimal] | None = None


@router.get("/managers/{manager_id}/assessment", response_model=AssessmentOut)
async def manager_assessment(
    manager: ManagerInScope,
    conn: ConnDep,
    settings: SettingsDep,
    period: PeriodQ = "year",
    at: AtQ = None,
) -> dict[str, Any]:
    """Completion ratio, performance and evaluation points, total score, grade and flags."""
    manager_id, branch_id = manager.manager_id, manager.branch_id
    now = datetime.now(UTC)
    start, end = period_range(period, at or now.astimezone(settings.tz).date())
    doc = await assess(conn, manager_id, period, start, end, settings.policy, now)
    doc["branch_id"] = branch_id
    return doc


@router.get("/managers/{manager_id}/evaluation", response_model=EvaluationsOut)
async def evaluation_history(
    manager: ManagerInScope,
    conn: ConnDep,
    settings: SettingsDep,
    period: PeriodQ = "year",
    at: AtQ = None,
) -> dict[str, Any]:
    """Every version of the evaluation entered for the period, newest first."""
    manager_id = manager.manager_id
    start, _ = period_range(period, at or datetime.now(settings.tz).date())
    label = period_label(period, start)
    rows = (
        await conn.execute(
            select(EvaluationRow)
            .where(EvaluationRow.manager_id == manager_id, EvaluationRow.period == label)
            .order_by(EvaluationRow.version.desc())
        )
    ).all()
    items = [evaluation_document(r) for r in rows]
    return {"manager_id": manager_id, "items": items, "next_cursor": None, "total": len(items)}


@router.put("/managers/{manager_id}/evaluation", response_model=EnteredOut)
async def enter_evaluation(
    manager: ManagerInScope,
    user: Reader,
    engine: EngineDep,
    settings: SettingsDep,
    request: Request,
    body: Annotated[EvaluationIn, Body()],
) -> dict[str, Any]:
    """Enter (or correct, as a new version) a manager's comprehensive evaluation points."""
    manager_id = manager.manager_id
    if user.role not in ("supervisor", "admin"):
        raise Forbidden("evaluations are entered by supervisors")
    limit = settings.policy.evaluation_points
    if body.points > limit:
        raise Invalid(f"points must be between 0 and {limit}")
    if body.parts is not None and sum(body.parts.values(), Decimal(0)) != body.points:
        raise Invalid("the parts must add up to points")
    start, _ = period_range(body.period, body.at or datetime.now(settings.tz).date())
    label = period_label(body.period, start)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        version = (
            await conn.execute(
                select(func.coalesce(func.max(EvaluationRow.version), 0)).where(
                    EvaluationRow.manager_id == manager_id, EvaluationRow.period == label
                )
            )
        ).scalar_one() + 1
        row = {
            "manager_id": manager_id,
            "period": label,
            "version": version,
            "points": body.points,
            "parts": json.dumps({k: str(v) for k, v in body.parts.items()}) if body.parts else None,
            "reasons": body.reasons,
            "entered_by": user.subject,
            "entered_at": now,
        }
        try:
            await conn.execute(insert(EvaluationRow).values(**row))
        except IntegrityError:
            raise Conflict("entered by someone else at the same moment; retry") from None
        await record(
            conn,
            actor=user.subject,
            role=user.role,
            action="evaluation.entered",
            subject=f"manager:{manager_id}",
            detail={"period": label, "version": version, "points": str(body.points)},
            remote_addr=request.client.host if request.client else None,
            at=now,
        )
    return {"manager_id": manager_id, **evaluation_document(SimpleNamespace(**row))}
