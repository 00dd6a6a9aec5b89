"""What an applied visit changes besides the tallies: the client's last visit (and last
post-loan check) move forward, its due dates are recomputed and open reminders resolved,
once per client per batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import VisitLogged
from models.policy import Policy
from models.reminders import recompute_due
from models.tables import ClientRow
from models.visits import resets_post_loan_clock
from streams.apply.facts import Fact

REMINDER_SOURCE = "crm-tracker-worker"


def _move_forward(column: object) -> object:
    at = bindparam("at", type_=ClientRow.__table__.c.last_visit_at.type)
    return (
        update(ClientRow)
        .where(ClientRow.client_id == bindparam("cid"))
        .where(or_(column.is_(None), column < at))  # type: ignore[attr-defined]
        .values({column.key: at})  # type: ignore[attr-defined]
    )


class Visits:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._last_visit = _move_forward(ClientRow.last_visit_at)
        self._last_check = _move_forward(ClientRow.last_post_loan_at)

    async def record(self, conn: AsyncConnection, facts: Sequence[Fact], now: datetime) -> None:
        """A late visit older than the last one changes nothing."""
        last: dict[str, datetime] = {}
        last_check: dict[str, datetime] = {}
        for f in facts:
            p = f.event.payload
            if not isinstance(p, VisitLogged):
                continue
            at = f.event.occurred_at
            cid = p.client_id
            if cid not in last or at > last[cid]:
                last[cid] = at
            if resets_post_loan_clock(p.method, p.kind) and (
                cid not in last_check or at > last_check[cid]
            ):
                last_check[cid] = at
        if not last:
            return
        await conn.execute(self._last_visit, [{"cid": c, "at": last[c]} for c in sorted(last)])
        if last_check:
            await conn.execute(
                self._last_check, [{"cid": c, "at": last_check[c]} for c in sorted(last_check)]
            )
        # a qualifying visit moves the due date on and resolves the open reminder
        await recompute_due(conn, last, self.policy, now, source=REMINDER_SOURCE)
