"""Reading what the credit rule needs, for a whole batch at once: the clients' terms, their
assignment histories and the managers that may be credited (three statements)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import one_of
from models.tables import AssignmentRow, ClientRow, ManagerRow
from streams.apply.credit import Assignment, ClientTerms, ManagerTerms

History = dict[str, list[Assignment]]


async def load_history(conn: AsyncConnection, client_ids: Iterable[str]) -> History:
    """Each client's assignments, oldest first: [(assigned_at, manager_id), ...]."""
    history: History = defaultdict(list)
    ids = sorted(set(client_ids))
    if not ids:
        return history
    for cid, at, mid in (
        await conn.execute(
            select(AssignmentRow.client_id, AssignmentRow.assigned_at, AssignmentRow.manager_id)
            .where(one_of(AssignmentRow.client_id, ids, conn.dialect.name))
            .order_by(AssignmentRow.client_id, AssignmentRow.assigned_at)
        )
    ).all():
        history[cid].append((at, mid))
    return history


async def load_managers(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, ManagerTerms]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await conn.execute(
        select(ManagerRow.manager_id, ManagerRow.branch_id, ManagerRow.active).where(
            one_of(ManagerRow.manager_id, wanted, conn.dialect.name)
        )
    )
    return {mid: ManagerTerms(bid, bool(active)) for mid, bid, active in rows.all()}


async def load_clients(conn: AsyncConnection, client_ids: Iterable[str]) -> dict[str, ClientTerms]:
    ids = sorted(set(client_ids))
    if not ids:
        return {}
    rows = await conn.execute(
        select(
            ClientRow.client_id, ClientRow.manager_id, ClientRow.claim_ratio, ClientRow.origin
        ).where(one_of(ClientRow.client_id, ids, conn.dialect.name))
    )
    return {cid: ClientTerms(mid, ratio, origin) for cid, mid, ratio, origin in rows.all()}


@dataclass
class Terms:
    """Everything the credit rule reads for a set of facts."""

    clients: dict[str, ClientTerms] = field(default_factory=dict)
    history: History = field(default_factory=dict)
    managers: dict[str, ManagerTerms] = field(default_factory=dict)


async def load_terms(
    conn: AsyncConnection, client_ids: Iterable[str], named_managers: Iterable[str]
) -> Terms:
    """The clients, their histories, and every manager a fact of theirs may be credited to
    (any manager of a history, the clients' current ones, and those the facts name)."""
    clients = await load_clients(conn, client_ids)
    history = await load_history(conn, clients)
    wanted = set(named_managers)
    wanted.update(c.manager_id for c in clients.values())
    for h in history.values():
        wanted.update(mid for _at, mid in h)
    return Terms(clients, history, await load_managers(conn, wanted))
