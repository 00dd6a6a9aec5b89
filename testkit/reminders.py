"""A database, the real apply step and a reminder scheduler sharing one frozen clock (the
``world`` fixture of tests/db)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from models.tables import ClientRow, OutboxRow, ReminderRow
from scheduler.service import ReminderScheduler
from streams.apply import Applier
from testkit.feed import Feed, env

DAY0 = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


def day(n: float) -> datetime:
    return DAY0 + timedelta(days=n)


def iso(t: datetime) -> str:
    return t.isoformat()


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


@dataclass
class World:
    """A database, the real apply step and a scheduler sharing one frozen clock."""

    engine: AsyncEngine
    applier: Applier
    scheduler: ReminderScheduler
    clock: Clock
    feed: Feed = field(default_factory=Feed)
    n: int = 0

    async def send(self, topic: str, event_type: str, at: datetime, **payload: Any) -> None:
        self.n += 1
        value = env(f"e{self.n:05d}", event_type, iso(at), **payload)
        res = await self.applier.apply([self.feed.msg(topic, value)])
        assert not res.rejected, res.rejected

    async def manager(self, mid: str, branch: str = "b1", supervisor: str = "s1") -> None:
        await self.send(
            "crm.managers",
            "manager.upserted",
            day(-400),
            manager_id=mid,
            branch_id=branch,
            supervisor_id=supervisor,
        )

    async def client(
        self, cid: str, at: datetime, manager: str = "m1", tier: str = "diamond", **kw: Any
    ) -> None:
        await self.send(
            "crm.clients",
            "client.upserted",
            at,
            client_id=cid,
            manager_id=manager,
            tier=tier,
            segment="corporate",
            **kw,
        )

    async def visit(
        self, cid: str, at: datetime, method: str = "on_site", kind: str = "routine", by: str = "m1"
    ) -> None:
        await self.send(
            "crm.visits",
            "visit.logged",
            at,
            client_id=cid,
            manager_id=by,
            method=method,
            kind=kind,
        )

    async def due(self, cid: str) -> tuple[datetime | None, datetime | None]:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(ClientRow.next_visit_due, ClientRow.next_post_loan_due).where(
                        ClientRow.client_id == cid
                    )
                )
            ).one()
        return row[0], row[1]

    async def reminders(self, cid: str | None = None) -> list[Any]:
        async with self.engine.connect() as conn:
            q = select(ReminderRow.__table__).order_by(ReminderRow.id)
            if cid:
                q = q.where(ReminderRow.client_id == cid)
            return list((await conn.execute(q)).all())

    async def outbox(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            bodies = (await conn.execute(select(OutboxRow.body).order_by(OutboxRow.id))).scalars()
            return [json.loads(b) for b in bodies]
