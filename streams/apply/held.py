"""Held events: a fact whose client or manager is not known yet is stored, listed with its
reason, and released (applied) in the transaction that brings the missing record."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import one_of
from models.decode import decode_event
from models.policy import Policy
from models.tables import EventRow, RejectedRow
from streams.apply.facts import Fact
from streams.apply.ledger import Ledger
from streams.apply.messages import problem_row


class HeldEvents:
    def __init__(self, ledger: Ledger, policy: Policy) -> None:
        self.ledger = ledger
        self.policy = policy
        self._hold_stmt = ledger.insert(RejectedRow).on_conflict_do_nothing()
        self._released_stmt = (
            update(EventRow)
            .where(EventRow.event_id == bindparam("eid"))
            .values(
                status="applied",
                manager_id=bindparam("mid"),
                branch_id=bindparam("bid"),
                weighted_profit=bindparam("wp"),
            )
        )
        self._rewait_stmt = (
            update(RejectedRow)
            .where(RejectedRow.id == bindparam("hid"))
            .values(
                reason=bindparam("reason"),
                waiting_client_id=bindparam("wc"),
                waiting_manager_id=bindparam("wm"),
            )
        )

    async def hold(self, conn: AsyncConnection, facts: Sequence[Fact], now: datetime) -> None:
        """Store new facts that must wait (their events rows say ``held``)."""
        rows = []
        for f in facts:
            w = f.wait
            assert f.msg is not None and w is not None
            rows.append(
                problem_row(
                    f.msg,
                    "held",
                    f"held: {w.reason}",
                    f.event.event_id,
                    f.event.event_type,
                    now,
                    wait_client=w.client_id,
                    wait_manager=w.manager_id,
                )
            )
        if rows:
            await conn.execute(self._hold_stmt, rows)

    async def load(
        self, conn: AsyncConnection, client_ids: set[str], manager_ids: set[str]
    ) -> list[Fact]:
        """Held facts waiting for any of these clients or managers, oldest first."""
        if not client_ids and not manager_ids:
            return []
        dialect = conn.dialect.name
        conds = []
        if client_ids:
            conds.append(one_of(RejectedRow.waiting_client_id, sorted(client_ids), dialect))
        if manager_ids:
            conds.append(one_of(RejectedRow.waiting_manager_id, sorted(manager_ids), dialect))
        rows = (
            await conn.execute(
                select(RejectedRow.id, RejectedRow.value_b64)
                .where(and_(RejectedRow.status == "held", or_(*conds)))
                .order_by(RejectedRow.id)
            )
        ).all()
        return [
            Fact(decode_event(base64.b64decode(b64), self.policy), None, held_id)
            for held_id, b64 in rows
            if b64 is not None  # (a held row always keeps its value: it was decoded)
        ]

    async def settle(self, conn: AsyncConnection, released: Sequence[Fact], now: datetime) -> int:
        """After a release attempt: credited facts are released, the rest wait on (for what
        they wait for now). Returns how many were released."""
        still = [f for f in released if f.wait is not None]
        if still:
            await conn.execute(
                self._rewait_stmt,
                [
                    {
                        "hid": f.held_id,
                        "reason": f"held: {f.wait.reason}",  # type: ignore[union-attr]
                        "wc": f.wait.client_id,  # type: ignore[union-attr]
                        "wm": f.wait.manager_id,  # type: ignore[union-attr]
                    }
                    for f in still
                ],
            )
        done = [f for f in released if f.credit is not None]
        if done:
            await conn.execute(
                update(RejectedRow)
                .where(RejectedRow.id.in_([f.held_id for f in done]))
                .values(status="released", released_at=now)
            )
            await conn.execute(
                self._released_stmt,
                [
                    {
                        "eid": f.event.event_id,
                        "mid": f.credit.manager_id,  # type: ignore[union-attr]
                        "bid": f.credit.branch_id,  # type: ignore[union-attr]
                        "wp": f.credit.weighted_profit,  # type: ignore[union-attr]
                    }
                    for f in done
                ],
            )
        return len(done)
