"""What the credit rule reads: clients' terms and assignment histories. The write path reads
them per batch through its ledger (``Ledger.load_terms``, on the driver); replay and the
reference step use these."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import one_of
from models.tables import AssignmentRow, ClientRow
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
