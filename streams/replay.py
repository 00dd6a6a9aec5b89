"""Replay: rebuild the daily tally buckets from the stored events (e.g. after a policy change).

Every applied fact in ``events`` is decoded again and credited by today's rules: the
assignment history as it stands, the accounts' openings, the policy's coefficients, claim
ratios and hand-over mode (增量认领 or full), the bank's time zone. Its row is corrected (manager, branch, day, weighted profit) and the buckets from
``--from`` on are replaced by the recomputed ones, all in ONE transaction:

- PostgreSQL: the replay locks ``events`` and the bucket tables in EXCLUSIVE mode, so a
  running worker's batches wait (reads go on) and apply on top of the rebuilt figures once
  it commits; a worker never sees half a replay.
- SQLite: the transaction holds the single write lock; the worker's writes wait, and retry
  (a locked database is a transient error to the worker), in the same way.

The balances are rebuilt in the same transaction from the stored snapshots (their day
changes, year openings and holders by the assignment history as it stands; the snapshots
are stored in CNY, so a changed FX rate does not convert them again).

If anything fails, the transaction rolls back and the old figures stay. Held events stay
held (they are released by the reference data they wait for, as always).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.decode import decode_event
from models.events import TransactionPosted
from models.policy import Policy
from models.tables import BranchDayRow, EventRow, ManagerDayRow, ManagerRow
from streams.apply.buckets import Tally
from streams.apply.credit import Credit, ManagerTerms, attribution, credit, credit_to
from streams.apply.ledger import BUCKET_COLUMNS, full_row
from streams.apply.terms import handed_over as handed_over_clients
from streams.apply.terms import load_clients, load_history, load_opened
from streams.apply.transfer import CREDITED_FACT
from streams.balances import rebuild_balances

log = logging.getLogger("crmtracker.replay")

FACT_TYPES = ("transaction.posted", "account.opened", "visit.logged")
CHUNK = 2000


@dataclass
class ReplayResult:
    events: int = 0
    corrected: int = 0
    """Events whose credited manager, day or weighted profit changed."""
    manager_days: int = 0
    branch_days: int = 0
    skipped: int = 0
    """Facts whose manager is not known any more (left as they were; logged)."""
    balance_changes: int = 0
    """Balance change rows rebuilt (``streams.balances.rebuild_balances``)."""


Progress = Callable[[int, int], None]


async def replay(
    engine: AsyncEngine,
    policy: Policy,
    since: date | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Rebuild the buckets for days ≥ ``since`` (all days when None) from the events."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(
                "LOCK TABLE events, manager_daily, branch_daily, balance_snapshots,"
                " balance_accounts, balance_holders, balance_daily, balance_openings"
                " IN EXCLUSIVE MODE"
            )
        return await _replay(conn, policy, since, progress)


async def _replay(
    conn: AsyncConnection, policy: Policy, since: date | None, progress: Progress | None
) -> ReplayResult:
    tz = policy.tz
    result = ReplayResult()
    conds = [EventRow.status == "applied", EventRow.event_type.in_(FACT_TYPES)]
    if since is not None:
        # a time-zone change can move an event across midnight: take a day's margin
        conds.append(EventRow.day >= date.fromordinal(since.toordinal() - 1))
    total = (await conn.execute(select(func.count()).where(*conds))).scalar_one()
    managers = {
        mid: ManagerTerms(bid, bool(active))
        for mid, bid, active in (
            await conn.execute(
                select(ManagerRow.manager_id, ManagerRow.branch_id, ManagerRow.active)
            )
        ).all()
    }
    tally = Tally()
    rows = (
        await conn.execute(select(*CREDITED_FACT).where(*conds).order_by(EventRow.event_id))
    ).all()
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        ids = {r.client_id for r in chunk if r.client_id}
        clients, history = await load_clients(conn, ids), await load_history(conn, ids)
        opened = await load_opened(conn, handed_over_clients(history))
        fixes = []
        for r in chunk:
            ev = decode_event(r.value.encode(), policy)
            hist = history.get(r.client_id, ())
            p = ev.payload
            at = opened.get(p.account_id) if isinstance(p, TransactionPosted) else None
            c = credit(ev, clients.get(r.client_id), hist, managers, policy, tz, at)
            if not isinstance(c, Credit):
                stored = managers.get(r.manager_id)
                if stored is None:
                    result.skipped += 1
                    log.warning("event %s: its manager is not known; left as it was", r.event_id)
                    continue
                handed_over = attribution(hist, ev.occurred_at)[1] > 0
                c = credit_to(
                    ev,
                    r.manager_id,
                    stored.branch_id,
                    clients.get(r.client_id),
                    handed_over,
                    policy,
                    tz,
                )
            if since is not None and c.day < since:
                continue
            tally.add(c)
            if (c.manager_id, c.branch_id, c.day, c.weighted_profit) != (
                r.manager_id,
                r.branch_id,
                r.day,
                r.weighted_profit,
            ):
                fixes.append(
                    {
                        "eid": r.event_id,
                        "mid": c.manager_id,
                        "bid": c.branch_id,
                        "day": c.day,
                        "wp": c.weighted_profit,
                    }
                )
            result.events += 1
        if fixes:
            await conn.execute(
                update(EventRow)
                .where(EventRow.event_id == bindparam("eid"))
                .values(
                    manager_id=bindparam("mid"),
                    branch_id=bindparam("bid"),
                    day=bindparam("day"),
                    weighted_profit=bindparam("wp"),
                ),
                fixes,
            )
            result.corrected += len(fixes)
        if progress is not None:
            progress(min(start + CHUNK, total), total)
    per_manager, per_branch = tally.manager, tally.branch
    for model, key_col, acc in (
        (ManagerDayRow, "manager_id", per_manager),
        (BranchDayRow, "branch_id", per_branch),
    ):
        stmt = delete(model)
        if since is not None:
            stmt = stmt.where(model.day >= since)
        await conn.execute(stmt)
        keys = sorted(acc)
        for i in range(0, len(keys), CHUNK):
            await conn.execute(
                cast(Table, model.__table__).insert(),
                [
                    {
                        key_col: k[0],
                        "day": k[1],
                        **dict(zip(BUCKET_COLUMNS, full_row(acc[k]), strict=True)),
                    }
                    for k in keys[i : i + CHUNK]
                ],
            )
    result.manager_days, result.branch_days = len(per_manager), len(per_branch)
    # the balances: every change rebuilt from the stored snapshots by today's history
    result.balance_changes = await rebuild_balances(conn, policy, datetime.now(policy.tz).date())
    if progress is not None:
        progress(total, total)
    return result
