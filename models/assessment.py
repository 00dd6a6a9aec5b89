"""Assessment (考核): completion, the 70/30 score, grade and flags for one manager.

The rules themselves are plain functions in ``models.policy``; this module gathers the
figures they need from the database (tallies, target history, credit clients, the latest
evaluation a supervisor entered) and lays the answer out so each number can be explained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import VisitLogged, decode_event
from models.policy import (
    Policy,
    assessment_flags,
    completion_ratio,
    grade,
    money,
    performance_points,
)
from models.tables import ClientRow, EvaluationRow, EventRow
from models.tally import manager_totals, period_target, ratio_text, target_history

ASSESSMENT_PERIODS = ("month", "quarter", "year")


def period_label(period: str, start: date) -> str:
    """``2026`` / ``2026-Q4`` / ``2026-11``: the key evaluations are stored under."""
    if period == "year":
        return f"{start.year}"
    if period == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    if period == "month":
        return f"{start.year}-{start.month:02d}"
    raise ValueError(f"assessments are by month, quarter or year, not {period!r}")


@dataclass(frozen=True)
class PostLoanDiscipline:
    credit_clients: int
    not_overdue: int

    @property
    def share(self) -> Decimal:
        # no credit clients: nothing is overdue, the discipline is intact
        if self.credit_clients == 0:
            return Decimal(1)
        return Decimal(self.not_overdue) / Decimal(self.credit_clients)


def _is_check(payload: Any) -> bool:
    return (
        isinstance(payload, VisitLogged)
        and payload.method == "on_site"
        and payload.kind in ("post_loan_check", "surprise")
    )


async def post_loan_discipline(
    conn: AsyncConnection, manager_id: str, as_of: datetime, policy: Policy
) -> PostLoanDiscipline:
    """Of the manager's credit clients, how many were not overdue for a post-loan check at
    ``as_of``: the last on-site check or surprise visit (else the assignment) + interval."""
    clients = (
        await conn.execute(
            select(ClientRow.client_id, ClientRow.assigned_at, ClientRow.last_post_loan_at).where(
                ClientRow.manager_id == manager_id, ClientRow.credit_client.is_(True)
            )
        )
    ).all()
    interval = timedelta(days=policy.post_loan_interval_days)
    ok = 0
    for client_id, assigned_at, last_check in clients:
        if last_check is not None and last_check > as_of:
            # judging a past moment: find the last check made by then in the event log
            last_check = None
            rows = await conn.execute(
                select(EventRow.occurred_at, EventRow.value).where(
                    EventRow.client_id == client_id,
                    EventRow.event_type == "visit.logged",
                    EventRow.occurred_at <= as_of,
                )
            )
            for occurred_at, value in rows.all():
                if _is_check(decode_event(value.encode(), policy).payload) and (
                    last_check is None or occurred_at > last_check
                ):
                    last_check = occurred_at
        start = last_check if last_check is not None else assigned_at
        if start + interval > as_of:
            ok += 1
    return PostLoanDiscipline(len(clients), ok)


async def credit_clients_held(conn: AsyncConnection, manager_id: str) -> int:
    return int(
        (
            await conn.execute(
                select(func.count()).where(
                    ClientRow.manager_id == manager_id, ClientRow.credit_client.is_(True)
                )
            )
        ).scalar_one()
    )


async def latest_evaluation(conn: AsyncConnection, manager_id: str, label: str) -> Any | None:
    return (
        await conn.execute(
            select(EvaluationRow)
            .where(EvaluationRow.manager_id == manager_id, EvaluationRow.period == label)
            .order_by(EvaluationRow.version.desc())
            .limit(1)
        )
    ).first()


def evaluation_document(row: Any) -> dict[str, Any]:
    return {
        "period": row.period,
        "version": row.version,
        "points": money(row.points),
        "parts": json.loads(row.parts) if row.parts else None,
        "reasons": row.reasons,
        "entered_by": row.entered_by,
        "entered_at": row.entered_at.isoformat(),
    }


async def assess(
    conn: AsyncConnection,
    manager_id: str,
    period: str,
    start: date,
    end: date,
    policy: Policy,
    now: datetime,
) -> dict[str, Any]:
    """The assessment of one manager for a month, quarter or year (DOMAIN.md "Assessment")."""
    tz = policy.tz
    history = (await target_history(conn, [manager_id]))[manager_id]
    totals = await manager_totals(conn, manager_id, start, end)
    actual = totals["weighted_profit"]
    target = period_target(history, start, end, tz)
    ratio = completion_ratio(actual, target)
    perf = performance_points(ratio, policy)

    label = period_label(period, start)
    entered = await latest_evaluation(conn, manager_id, label)
    period_end = datetime.combine(end + timedelta(days=1), time(0), tzinfo=tz)
    as_of = min(now, period_end)
    discipline = await post_loan_discipline(conn, manager_id, as_of, policy)
    derived = policy.evaluation_points * discipline.share
    if entered is not None:
        evaluation_points = entered.points
        evaluation: dict[str, Any] = {"source": "supervisor", **evaluation_document(entered)}
    else:
        evaluation_points = derived
        evaluation = {"source": "derived", "points": money(derived)}
    evaluation["derived_signal"] = {
        "what": "share of credit clients whose post-loan check was not overdue",
        "as_of": as_of.astimezone(tz).isoformat(timespec="seconds"),
        "credit_clients": discipline.credit_clients,
        "not_overdue": discipline.not_overdue,
        "share": ratio_text(discipline.share),
        "points": money(derived),
    }

    # annual completions, oldest first, ending with the last settled year: the assessed
    # period's year once it is over, else the year before (a running year is not settled)
    years = max(policy.demotion_low_years, policy.demotion_mid_years)
    last_year = end.year if datetime(end.year + 1, 1, 1, tzinfo=tz) <= now else end.year - 1
    yearly: list[Decimal | None] = []
    yearly_doc = []
    for year in range(last_year - years + 1, last_year + 1):
        y0, y1 = date(year, 1, 1), date(year, 12, 31)
        y_target = period_target(history, y0, y1, tz)
        y_actual = (await manager_totals(conn, manager_id, y0, y1))["weighted_profit"]
        y_ratio = completion_ratio(y_actual, y_target)
        yearly.append(y_ratio)
        yearly_doc.append(
            {
                "year": year,
                "target": money(y_target) if y_target is not None else None,
                "actual": money(y_actual),
                "completion_ratio": ratio_text(y_ratio),
            }
        )
    credit_clients = await credit_clients_held(conn, manager_id)
    return {
        "manager_id": manager_id,
        "period": {"from": start.isoformat(), "to": end.isoformat(), "label": label},
        "target": money(target) if target is not None else None,
        "weighted_profit": money(actual),
        "completion_ratio": ratio_text(ratio),
        "completion_cap": str(policy.completion_cap),
        "performance_points": money(perf),
        "evaluation_points": money(evaluation_points),
        "evaluation": evaluation,
        "total_score": money(perf + evaluation_points),
        "credit_clients": credit_clients,
        "grade": grade(credit_clients, policy),
        "flags": assessment_flags(ratio, yearly, policy),
        "annual_completion": yearly_doc,
        "as_of": now.astimezone(tz).isoformat(timespec="seconds"),
    }
