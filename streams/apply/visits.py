"""What an applied visit changes besides the tallies: the client's last visit (and last
post-loan check) move forward, its due dates are recomputed and open reminders resolved,
once per client per batch, in one update."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import VisitLogged
from models.policy import Policy
from models.visits import resets_post_loan_clock
from reminders.service import recompute_due
from streams.apply.facts import Fact

REMINDER_SOURCE = "crm-tracker-worker"


class Visits:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

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
        # the clocks move forward and the due dates follow in one statement; a qualifying
        # visit resolves the open reminder
        visits = {c: (at, last_check.get(c)) for c, at in last.items()}
        await recompute_due(conn, last, self.policy, now, source=REMINDER_SOURCE, visits=visits)
