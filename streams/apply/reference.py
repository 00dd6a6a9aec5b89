"""Reference data: manager and client records, managers' targets, clients' assignment
history. Written in one statement per table per batch; an older record arriving late never
overwrites a newer one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import ClientUpserted, Event, ManagerUpserted
from models.tables import (
    DERIVED_CLIENT_COLUMNS,
    AssignmentRow,
    ClientRow,
    ManagerRow,
    ManagerTargetRow,
)
from streams.apply.credit import attributed_manager
from streams.apply.ledger import Ledger
from streams.apply.terms import load_history

REFERENCE_ORDER = {"manager.upserted": 0, "client.upserted": 1}
"""Reference event types, in the order a batch applies them (managers first)."""


@dataclass
class Written:
    clients: set[str] = field(default_factory=set)
    managers: set[str] = field(default_factory=set)
    transferred: set[str] = field(default_factory=set)
    """Clients whose history changed under facts that may already be applied."""


class ReferenceWriter:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._manager_stmt = self._upsert_newer(ManagerRow, "manager_id")
        self._client_stmt = self._upsert_newer(ClientRow, "client_id")
        hist = ledger.insert(AssignmentRow)
        self._history_stmt = hist.on_conflict_do_update(
            index_elements=["client_id", "assigned_at"],
            set_={"manager_id": hist.excluded.manager_id, "event_id": hist.excluded.event_id},
        )
        self._target_stmt = ledger.insert(ManagerTargetRow).on_conflict_do_nothing()

    def _upsert_newer(self, model: Any, key: str) -> Any:
        """Upsert where a late-arriving older record never overwrites a newer one."""
        stmt = self.ledger.insert(model)
        cols = [
            c.key for c in model.__table__.c if c.key != key and c.key not in DERIVED_CLIENT_COLUMNS
        ]
        return stmt.on_conflict_do_update(
            index_elements=[key],
            set_={c: stmt.excluded[c] for c in cols},
            where=model.updated_at <= stmt.excluded.updated_at,
        )

    async def write(self, conn: AsyncConnection, fresh: Sequence[Event]) -> Written:
        """Write the records (``fresh`` in occurred_at order: per key, the newest wins)."""
        managers: dict[str, dict[str, Any]] = {}
        clients: dict[str, dict[str, Any]] = {}
        history: dict[tuple[str, datetime], dict[str, Any]] = {}
        targets: dict[tuple[str, datetime], dict[str, Any]] = {}
        for e in fresh:
            p = e.payload
            if isinstance(p, ManagerUpserted):
                managers[p.manager_id] = manager_row(p, e.occurred_at)
                if p.annual_profit_target is not None:
                    targets[(p.manager_id, e.occurred_at)] = {
                        "manager_id": p.manager_id,
                        "effective_at": e.occurred_at,
                        "annual_profit_target": p.annual_profit_target,
                        "event_id": e.event_id,
                    }
            elif isinstance(p, ClientUpserted):
                assigned_at = p.assigned_at or e.occurred_at
                history[(p.client_id, assigned_at)] = {
                    "client_id": p.client_id,
                    "assigned_at": assigned_at,
                    "manager_id": p.manager_id,
                    "event_id": e.event_id,
                }
                clients[p.client_id] = client_row(p, assigned_at, e.occurred_at)
        out = Written(set(clients), set(managers))
        if managers:
            await conn.execute(self._manager_stmt, [managers[k] for k in sorted(managers)])
        if targets:
            # the history keeps every target, late ones too (years are judged by their own)
            await conn.execute(self._target_stmt, [targets[k] for k in sorted(targets)])
        if history:
            existing = await load_history(conn, {k[0] for k in history})
            # a row that names the manager already in force changes no attribution
            rows = [
                history[k]
                for k in sorted(history)
                if attributed_manager(existing.get(k[0], []), k[1]) != history[k]["manager_id"]
            ]
            if rows:
                await conn.execute(self._history_stmt, rows)
                out.transferred = {r["client_id"] for r in rows if existing.get(r["client_id"])}
        if clients:
            await conn.execute(self._client_stmt, [clients[k] for k in sorted(clients)])
        return out


def manager_row(p: ManagerUpserted, occurred_at: datetime) -> dict[str, Any]:
    return {
        "manager_id": p.manager_id,
        "name": p.name,
        "branch_id": p.branch_id,
        "supervisor_id": p.supervisor_id,
        "level": p.level,
        "annual_profit_target": p.annual_profit_target,
        "active": p.active,
        "updated_at": occurred_at,
        # where the manager's reminders go (README "Reminder channels")
        "email": p.email,
        "wecom_userid": p.wecom_userid,
        "dingtalk_userid": p.dingtalk_userid,
    }


def client_row(p: ClientUpserted, assigned_at: datetime, occurred_at: datetime) -> dict[str, Any]:
    return {
        "client_id": p.client_id,
        "name": p.name,
        "segment": p.segment,
        "tier": p.tier,
        "manager_id": p.manager_id,
        "branch_id": p.branch_id,
        "credit_client": p.credit_client,
        "claim_ratio": p.claim_ratio,
        "visit_interval_days": p.visit_interval_days,
        "origin": p.origin,
        "bad_credit": p.bad_credit,  # tier review: bronze whatever its deposits
        "assigned_at": assigned_at,
        "updated_at": occurred_at,
    }
