"""A client's visit state, and the clients overdue for a visit or a post-loan check."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status

from api.auth import Principal
from api.deps import ConnDep, Reader, SettingsDep
from models.followup import Scope, client_doc, client_row, overdue_page
from models.visits import REMINDER_KINDS

router = APIRouter(prefix="/v1", tags=["visits"])


def request_now(request: Request) -> datetime:
    """The clock: the app's injected one (tests freeze it), else the system clock."""
    now = getattr(request.app.state, "now", None)
    return now() if now is not None else datetime.now(UTC)


NowDep = Annotated[datetime, Depends(request_now)]


def caller_scope(user: Principal) -> Scope:
    """What the caller may see: a manager their own clients, a supervisor their branches."""
    if user.role == "manager":
        return Scope(manager_ids=frozenset({user.manager_id or ""}))
    if user.role == "supervisor":
        return Scope(branch_ids=user.branches)
    return Scope()


def forbid_out_of_scope(user: Principal, manager_id: str | None, branch_id: str | None) -> None:
    """A filter naming someone the caller may not see is a 403, not an empty list."""
    if manager_id is not None and user.role == "manager" and manager_id != user.manager_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "out of scope: another manager")
    if branch_id is not None and user.role == "supervisor" and branch_id not in user.branches:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "out of scope: another branch")


def encode_key(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_key(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from None


@router.get("/clients/{client_id}")
async def get_client(
    client_id: Annotated[str, Path(min_length=1, max_length=128)],
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
) -> dict[str, Any]:
    """The client, its manager, last visits, next due dates and open reminders."""
    c = await client_row(conn, client_id)
    if c is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"client {client_id} not found")
    if not user.can_see_manager(c.manager_id, c.manager_branch_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "out of scope for this caller")
    return await client_doc(conn, c, settings.policy, now)


@router.get("/overdue")
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
    forbid_out_of_scope(user, manager_id, branch_id)
    after = None
    if cursor:
        key = decode_key(cursor)
        try:
            d, cid, k = key
            after = (datetime.fromisoformat(d), str(cid), str(k))
            if after[0].tzinfo is None:
                raise ValueError
        except (TypeError, ValueError):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from None
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
