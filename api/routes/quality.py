"""Data-quality exceptions a supervisor should see (reference data that breaks a rule)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.answers import Page, QualityItemOut
from api.deps import ConnDep, Reader, SettingsDep
from api.errors import Invalid
from api.routes.clients import decode_key, encode_key
from api.scope import caller_scope, forbid_out_of_scope
from models.quality import CLAIM_FLOOR_RULE, claim_floor_exceptions

router = APIRouter(prefix="/v1", tags=["data quality"])


@router.get("/data-quality", response_model=Page[QualityItemOut])
async def data_quality(
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    branch_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    manager_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    rule: Literal["claim_ratio_floor"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Data-quality exceptions in the caller's scope, by client id: each item names the rule
    it breaks (`claim_ratio_floor`: a client's claim ratio below its origin's floor,
    self-marketed 0.8, natural growth 0.5; the ratio is applied as sent)."""
    await forbid_out_of_scope(conn, user, manager_id, branch_id)
    items: list[dict[str, Any]] = []
    if rule in (None, CLAIM_FLOOR_RULE):
        items = await claim_floor_exceptions(
            conn,
            settings.policy,
            scope=caller_scope(user),
            manager_id=manager_id,
            branch_id=branch_id,
        )
    total = len(items)
    if cursor:
        after = decode_key(cursor)
        if (
            not isinstance(after, list)
            or len(after) != 2
            or not all(isinstance(k, str) for k in after)
        ):
            raise Invalid("invalid cursor")
        items = [i for i in items if [i["client_id"], i["rule"]] > after]
    page = items[:limit]
    more = len(items) > limit
    return {
        "items": page,
        "next_cursor": encode_key([page[-1]["client_id"], page[-1]["rule"]]) if more else None,
        "total": total,
    }
