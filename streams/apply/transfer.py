"""Late transfers: topics are not ordered against each other, so a transfer can be applied
after facts dated past its ``assigned_at``. Those facts were credited to the previous
manager; here they move to the new one (both days' buckets and both branches), exactly: the
weighted profit taken back is the one stored when the fact was applied. If the new manager
is not known yet, the facts leave the previous manager now and wait, held, for the new one.

The same move re-credits a client's facts when the hand-over rule (增量认领, see
``streams.apply.credit``) decides differently after the fact: a late ``account.opened`` of a
handed-over client, or a record of a manager of its history (the ``active`` flag decides
between the split and a full transfer).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import one_of
from models.decode import decode_event
from models.events import AccountOpened, TransactionPosted
from models.policy import Policy
from models.tables import EventRow, RejectedRow
from streams.apply.buckets import Tally
from streams.apply.credit import Credit, credit, fact_columns
from streams.apply.ledger import Ledger
from streams.apply.messages import Incoming, problem_row

CREDITED_FACT = (
    EventRow.event_id,
    EventRow.client_id,
    EventRow.manager_id,
    EventRow.branch_id,
    EventRow.day,
    EventRow.weighted_profit,
    EventRow.value,
)
"""What re-crediting a stored fact reads of it (its credit now, and the message to credit
anew): the transfer move here and ``crm-tracker replay``."""

_REHOLD_COLUMNS = (
    "status",
    "reason",
    "waiting_client_id",
    "waiting_manager_id",
    "released_at",
    "value_b64",
)


class Transfers:
    def __init__(self, ledger: Ledger, policy: Policy) -> None:
        self.ledger = ledger
        self.policy = policy
        self.tz: ZoneInfo = policy.tz
        self._move_stmt = (
            update(EventRow)
            .where(EventRow.event_id == bindparam("eid"))
            .values(
                manager_id=bindparam("mid"),
                branch_id=bindparam("bid"),
                day=bindparam("day"),
                weighted_profit=bindparam("wp"),
            )
        )
        self._unapply_stmt = (
            update(EventRow)
            .where(EventRow.event_id == bindparam("eid"))
            .values(status="held", manager_id=None, branch_id=None, weighted_profit=None)
        )
        # it may have been held (and released) before: same position, same row
        rehold = ledger.insert(RejectedRow)
        self._rehold_stmt = rehold.on_conflict_do_update(
            index_elements=["topic", "partition", "offset"],
            set_={c: rehold.excluded[c] for c in _REHOLD_COLUMNS},
        )

    async def move(
        self, conn: AsyncConnection, client_ids: set[str], tally: Tally, now: datetime
    ) -> int:
        """Move the already-applied facts of these clients whose credit changed with their
        history; the bucket changes go to ``tally``. Returns how many facts moved.

        Runs under the hold/release lock (PostgreSQL): a worker releasing a held fact of
        these clients does not lock the client, so it may credit the fact by the history
        before this transfer; it does so under the same lock, and commits before this reads.
        """
        if not client_ids:
            return 0
        ids = sorted(client_ids)
        rows = (
            await conn.execute(
                select(
                    *CREDITED_FACT,
                    EventRow.topic,
                    EventRow.partition,
                    EventRow.offset,
                    EventRow.event_type,
                ).where(
                    one_of(EventRow.client_id, ids, conn.dialect.name),
                    EventRow.status == "applied",
                    EventRow.event_type.in_(("transaction.posted", "account.opened")),
                )
            )
        ).all()
        if not rows:
            return 0
        terms = await self.ledger.load_terms(conn, ids, ())
        moved, rehold = [], []
        for r in rows:
            ev = decode_event(r.value.encode(), self.policy)
            # the query reads only transactions and account openings
            assert isinstance(ev.payload, (TransactionPosted, AccountOpened))
            if ev.payload.manager_id is not None:
                continue  # an explicit override never moves
            client = terms.clients.get(r.client_id)
            if client is None:
                continue
            p = ev.payload
            outcome = credit(
                ev,
                client,
                terms.history.get(r.client_id, ()),
                terms.managers,
                self.policy,
                self.tz,
                terms.opened.get(p.account_id) if isinstance(p, TransactionPosted) else None,
            )
            if isinstance(outcome, Credit) and outcome.manager_id == r.manager_id:
                continue
            # take back exactly what was credited
            taken = fact_columns(ev, r.weighted_profit, self.policy)
            tally.add_columns(r.manager_id, r.branch_id, r.day, taken.items(), sign=-1)
            if isinstance(outcome, Credit):
                tally.add(outcome)
                moved.append(
                    {
                        "eid": r.event_id,
                        "mid": outcome.manager_id,
                        "bid": outcome.branch_id,
                        "day": outcome.day,
                        "wp": outcome.weighted_profit,
                    }
                )
                continue
            msg = Incoming(r.topic, r.partition, r.offset, None, r.value.encode())
            reason = f"held: {outcome.reason} (client transferred)"
            rehold.append(
                problem_row(
                    msg,
                    "held",
                    reason,
                    r.event_id,
                    r.event_type,
                    now,
                    wait_manager=outcome.manager_id,
                )
            )
        if moved:
            await conn.execute(self._move_stmt, moved)
        if rehold:
            await conn.execute(self._unapply_stmt, [{"eid": row["event_id"]} for row in rehold])
            await conn.execute(self._rehold_stmt, rehold)
        return len(moved) + len(rehold)
