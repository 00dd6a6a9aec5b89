"""Live push: Server-Sent Events of tally changes (and reminder events) in the caller's scope."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from api.auth import Principal, TokenError, decode_token
from api.deps import _bearer
from api.errors import Forbidden, Invalid, Unauthorized
from models.stream import Partner, last_id, partner_changes, prune, read_after, split_partners

router = APIRouter(prefix="/v1", tags=["live"])

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
PARTNERS_SECONDS = 30.0
"""How long a connection keeps the hand-overs it expands tally rows with (a new hand-over is
seen within this)."""
RETENTION = timedelta(hours=24)


async def stream_user(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    access_token: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="the token, for clients that cannot set headers (EventSource)",
        ),
    ] = None,
) -> Principal:
    token = creds.credentials if creds is not None else access_token
    if not token:
        raise Unauthorized("missing bearer token")
    try:
        user = decode_token(request.app.state.secret, token)
    except TokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    if user.role == "ops":
        raise Forbidden("out of scope for this role")
    return user


def in_scope(user: Principal, manager_id: str | None, branch_id: str | None) -> bool:
    if user.role == "admin":
        return True
    if user.role == "supervisor":
        return branch_id is not None and branch_id in user.branches
    if user.role == "manager":
        return manager_id is not None and manager_id == user.manager_id
    return False


def _frame(event_id: int, kind: str, data: str) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    user: Annotated[Principal, Depends(stream_user)],
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Server-Sent Events: `tally` when a manager's figures change, `reminder` for reminder
    events, each in the caller's scope; resumes after `Last-Event-ID`; keep-alives every 15 s.
    A change of one side of a hand-over also names the other side (the split of deposit
    business moves both), under the same id."""
    engine = request.app.state.engine
    policy = request.app.state.settings.policy
    try:
        after = int(last_event_id) if last_event_id else None
    except ValueError:
        raise Invalid("Last-Event-ID must be an integer") from None
    async with engine.connect() as conn:
        newest = await last_id(conn)
    cursor = newest if after is None else min(after, newest)

    async def events() -> AsyncIterator[str]:
        nonlocal cursor
        scope = {
            "role": user.role,
            "manager_id": user.manager_id,
            "branches": sorted(user.branches),
        }
        yield f"retry: 2000\nevent: ready\ndata: {json.dumps(scope)}\n\n"
        quiet = 0.0
        partners: dict[str, list[Partner]] = {}
        partners_at = -PARTNERS_SECONDS
        loop = asyncio.get_running_loop()
        while not await request.is_disconnected():
            async with engine.connect() as conn:
                rows = await read_after(conn, cursor)
                if any(r.kind == "tally" for r in rows) and (
                    loop.time() - partners_at >= PARTNERS_SECONDS
                ):
                    partners, partners_at = await split_partners(conn, policy), loop.time()
            for r in rows:
                cursor = r.id
                if in_scope(user, r.manager_id, r.branch_id):
                    yield _frame(r.id, r.kind, r.data)
                    quiet = 0.0
                if r.kind != "tally" or not partners:
                    continue
                for data in partner_changes(json.loads(r.data), partners):
                    if in_scope(user, data["manager_id"], data["branch_id"]):
                        yield _frame(r.id, r.kind, json.dumps(data, ensure_ascii=False))
                        quiet = 0.0
            if rows:
                continue
            await asyncio.sleep(POLL_SECONDS)
            quiet += POLL_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def prune_forever(engine: Any, every: float = 600.0) -> None:
    """Drop stream rows older than a day (a client away longer reloads instead)."""
    while True:
        try:
            async with engine.begin() as conn:
                await prune(conn, datetime.now(UTC) - RETENTION)
        except Exception:
            pass
        await asyncio.sleep(every)
