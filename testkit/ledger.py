"""Visits with confidential notes, applied by the real apply step (the visit ledger tests and
its page in the browser read them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from models.db import make_engine
from models.policy import Policy
from models.tables import AuditRow
from streams.apply import Applier
from testkit import api
from testkit.feed import Feed, env

SECRET = "ledger-secret-" + "s" * 40


NOTE = "CONFIDENTIAL-VISIT-NOTE-客户资金紧张-"


def note(i: int) -> str:
    return f"{NOTE}{i:03d}"


def visit(eid: str, at: str, manager: str = "m1", client: str = "c1", **extra: Any) -> bytes:
    payload = {"client_id": client, "manager_id": manager, "method": "on_site", "kind": "routine"}
    payload.update(extra)
    return env(eid, "visit.logged", at, **payload)


async def fill(url: str) -> None:
    engine = make_engine(url, writer=True)
    feed = Feed()
    applier = Applier(engine, Policy())
    ref = [
        feed.msg(
            "crm.managers",
            env(
                "mg1",
                "manager.upserted",
                "2026-01-01T09:00:00+08:00",
                manager_id="m1",
                branch_id="b1",
            ),
        ),
        feed.msg(
            "crm.managers",
            env(
                "mg2",
                "manager.upserted",
                "2026-01-01T09:00:00+08:00",
                manager_id="m2",
                branch_id="b2",
            ),
        ),
        feed.msg(
            "crm.clients",
            env(
                "cl1",
                "client.upserted",
                "2026-01-02T09:00:00+08:00",
                client_id="c1",
                manager_id="m1",
                tier="gold",
                visit_interval_days=10,
            ),
        ),
    ]
    await applier.apply(ref)
    msgs = [
        feed.msg("crm.visits", visit("v1", "2026-11-02T09:00:00+08:00", notes=note(1))),
        feed.msg(
            "crm.visits",
            visit("v2", "2026-11-05T10:00:00+08:00", notes=note(2), duration_minutes=45),
        ),
        feed.msg("crm.visits", visit("v3", "2026-11-04T10:00:00+08:00", method="phone")),
        # m2 (another branch) visits m1's client
        feed.msg(
            "crm.visits", visit("v4", "2026-11-06T10:00:00+08:00", manager="m2", notes=note(4))
        ),
        # a resend of v1, a visit held for a manager not yet known, a rejected one
        feed.msg("crm.visits", visit("v1", "2026-11-02T09:00:00+08:00", notes=note(1))),
        feed.msg(
            "crm.visits", visit("v5", "2026-11-07T10:00:00+08:00", manager="m9", notes=note(5))
        ),
        feed.msg(
            "crm.visits", visit("v6", "2026-11-07T10:00:00+08:00", method="pigeon", notes=note(6))
        ),
    ]
    await applier.apply(msgs[:4])
    await applier.apply(msgs[4:])
    await engine.dispose()


def auth(role: str, **kw: Any) -> dict[str, str]:
    return api.auth(role, SECRET, **kw)


async def audit_rows(url: str) -> list[Any]:
    engine = make_engine(url)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AuditRow).where(AuditRow.action == "visit_notes.read").order_by(AuditRow.id)
            )
        ).all()
    await engine.dispose()
    return rows
