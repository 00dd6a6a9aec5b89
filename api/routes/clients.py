"""A client's visit state, and the clients overdue for a visit or a post-loan check."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from api.answers import ClientOut, OverdueOut, Page
from api.deps import ConnDep, Reader, SettingsDep
from api.errors import Invalid
from api.scope import ClientInScope, caller_scope, forbid_out_of_scope
from models.followup import client_doc, overdue_page
from models.visits import REMINDER_KINDS

router = APIRouter(prefix="/v1", tags=["visits"])


async def request_now(request: Request) -> datetime:
    """The clock: the app's injected one (tests freeze it), else the system clock."""
    now = getattr(request.app.state, "now", None)
    return now() if now is not None else datetime.now(UTC)


NowDep = Annotated[datetime, Depends(request_now)]


def encode_key(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_key(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid("invalid cursor") from None


@router.get("/clients/{client_id}", response_model=ClientOut)
async def get_client(
    c: ClientInScope,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
) -> dict[str, Any]:
    """The client, its manager, last visits, next due dates and open reminders."""
    return await client_doc(conn, c, settings.policy, now)


@router.get("/overdue", response_model=Page[OverdueOut])
async def overdue(
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    branch_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    manager_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    kind: Literal["visit", "post_loan_check"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Clients overdue for a visit or post-loan check, most overdue first, then client id."""
    await forbid_out_of_scope(conn, user, manager_id, branch_id)
    after = None
    if cursor:
        key = decode_key(cursor)
        try:
            d, cid, k = key
            after = (datetime.fromisoformat(d), str(cid), str(k))
            if after[0].tzinfo is None:
                raise ValueError
        except (TypeError, ValueError):
            raise Invalid("invalid cursor") from None
    page = await overdue_page(
        conn,
        now,
        settings.tz,
        scope=caller_scope(user),
        kinds=(kind,) if kind else REMINDER_KINDS,
        manager_id=manager_id,
        branch_id=branch_id,
        after=after,
        limit=limit,
    )
    next_cursor = None
    if page.last_key is not None:
        d, cid, k = page.last_key
        if isinstance(d, datetime):
            d = (d if d.tzinfo else d.replace(tzinfo=UTC)).isoformat()
        else:  # SQLite hands a union's timestamp back as text (UTC)
            d = datetime.fromisoformat(d).replace(tzinfo=UTC).isoformat()
        next_cursor = encode_key([d, cid, k])
    return {"items": page.items, "next_cursor": next_cursor, "total": page.total}
