"""Data-quality exceptions: reference data that breaks a bank rule, applied as sent and listed
for the supervisor (never silently corrected).

Today's rule: a client's claim ratio (绩效认领比例) below the floor of its origin (DOMAIN.md
"Claim ratio": self-marketed ≥ 0.8, natural growth ≥ 0.5; public-resource clients are
negotiated, no floor unless the bank sets one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.followup import Scope
from models.policy import Policy, claim_floor
from models.tables import ClientRow, ManagerRow

CLAIM_FLOOR_RULE = "claim_ratio_floor"
ORIGIN_NAMES = {
    "marketed": "self-marketed (自主营销)",
    "natural": "natural growth (自然增长)",
    "public_resource": "public resource (公共资源户)",
}


@dataclass
class Exceptions:
    items: list[dict[str, Any]]
    total: int


async def claim_floor_exceptions(
    conn: AsyncConnection,
    policy: Policy,
    *,
    scope: Scope,
    manager_id: str | None = None,
    branch_id: str | None = None,
) -> list[dict[str, Any]]:
    """Clients whose claim ratio is below their origin's floor, by client id. The ratio is
    applied as sent; each item names the rule it breaks."""
    origins = sorted(policy.claim_floors)
    if not origins:
        return []
    q = (
        select(
            ClientRow.client_id,
            ClientRow.manager_id,
            ManagerRow.branch_id,
            ClientRow.origin,
            ClientRow.claim_ratio,
            ClientRow.updated_at,
        )
        .select_from(ClientRow)
        .outerjoin(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
        .where(ClientRow.origin.in_(origins), ClientRow.claim_ratio.is_not(None))
        .order_by(ClientRow.client_id)
    )
    if manager_id is not None:
        q = q.where(ClientRow.manager_id == manager_id)
    if branch_id is not None:
        q = q.where(ManagerRow.branch_id == branch_id)
    if scope.manager_ids is not None:
        q = q.where(ClientRow.manager_id.in_(sorted(scope.manager_ids)))
    if scope.branch_ids is not None:
        q = q.where(ManagerRow.branch_id.in_(sorted(scope.branch_ids)))
    tz = policy.tz
    out = []
    # the comparison is made on exact decimals here (SQLite keeps them as text)
    for cid, mid, bid, origin, ratio, updated_at in (await conn.execute(q)).all():
        if origin is None or ratio is None:  # (the query selects neither)
            continue
        floor = claim_floor(origin, policy)
        if floor is None or ratio >= floor:
            continue
        out.append(_item(cid, mid, bid, origin, ratio, floor, updated_at, tz))
    return out


def _item(
    cid: str,
    mid: str,
    bid: str | None,
    origin: str,
    ratio: Any,
    floor: Any,
    updated_at: Any,
    tz: ZoneInfo,
) -> dict[str, Any]:
    return {
        "rule": CLAIM_FLOOR_RULE,
        "client_id": cid,
        "manager_id": mid,
        "branch_id": bid,
        "origin": origin,
        "claim_ratio": str(ratio),
        "floor": str(floor),
        "detail": (
            f"claim ratio {ratio} is below the floor {floor} of a "
            f"{ORIGIN_NAMES.get(origin, origin)} client (绩效认领比例不应低于 {floor}); "
            "applied as sent"
        ),
        "since": updated_at.astimezone(tz).isoformat(timespec="seconds"),
    }
