"""What the credit rule reads: clients' terms and assignment histories. The write path reads
them per batch through its ledger (``Ledger.load_terms``, on the driver); replay and the
reference step use these."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import one_of
from models.events import AccountOpened, Event
from models.tables import AccountRow, AssignmentRow, ClientRow
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


async def load_opened(conn: AsyncConnection, client_ids: Iterable[str]) -> dict[str, datetime]:
    """The opening instant of these clients' accounts: account_id → opened_at."""
    ids = sorted(set(client_ids))
    if not ids:
        return {}
    rows = await conn.execute(
        select(AccountRow.account_id, AccountRow.opened_at).where(
            one_of(AccountRow.client_id, ids, conn.dialect.name)
        )
    )
    return {aid: at for aid, at in rows.all()}


async def handed_over_clients_of(conn: AsyncConnection, manager_ids: Iterable[str]) -> set[str]:
    """The clients with a hand-over in their history that one of these managers held (whose
    credit may follow the managers' active flags)."""
    ids = sorted(set(manager_ids))
    if not ids:
        return set()
    held = select(AssignmentRow.client_id).where(
        one_of(AssignmentRow.manager_id, ids, conn.dialect.name)
    )
    rows = await conn.execute(
        select(AssignmentRow.client_id)
        .where(AssignmentRow.client_id.in_(held))
        .group_by(AssignmentRow.client_id)
        .having(func.count() > 1)
    )
    return {cid for (cid,) in rows.all()}


def handed_over(history: History) -> set[str]:
    """The clients with a hand-over in their history (only their accounts' openings matter)."""
    return {cid for cid, h in history.items() if len(h) > 1}


@dataclass
class Terms:
    """Everything the credit rule reads for a set of facts."""

    clients: dict[str, ClientTerms] = field(default_factory=dict)
    history: History = field(default_factory=dict)
    managers: dict[str, ManagerTerms] = field(default_factory=dict)
    opened: dict[str, datetime] = field(default_factory=dict)
    """Opening instants of the handed-over clients' accounts (account_id → opened_at)."""

    def note_openings(self, events: Iterable[Event]) -> None:
        """Add the openings of a batch not written yet (the earliest of each account wins)."""
        for e in events:
            p = e.payload
            if isinstance(p, AccountOpened):
                known = self.opened.get(p.account_id)
                if known is None or e.occurred_at < known:
                    self.opened[p.account_id] = e.occurred_at
