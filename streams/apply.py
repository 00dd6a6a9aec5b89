"""The idempotent batch apply: one database transaction per batch of Kafka messages.

Kafka delivers at least once, so this step makes redelivery harmless: the batch's event ids
are inserted into ``events`` with ON CONFLICT DO NOTHING ... RETURNING, and deltas are
applied only for the ids that came back (the new ones). Rejected messages are recorded by
their (topic, partition, offset), so a redelivered bad message is recorded once. Offsets are
committed by the caller only after this transaction commits.

Events whose client or manager is not known yet are *held* (stored, listed) and applied in
the transaction that brings the missing reference data.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.db import one_of
from models.events import (
    AccountOpened,
    ClientUpserted,
    Event,
    InvalidEvent,
    ManagerUpserted,
    TransactionPosted,
    VisitLogged,
    decode_event,
)
from models.policy import Policy, bank_day, claim_ratio, to_cny, weighted_profit
from models.reminders import recompute_due
from models.stream import publish, tally_changes
from models.tables import (
    COUNT_COLUMNS,
    DERIVED_CLIENT_COLUMNS,
    MONEY_COLUMNS,
    AssignmentRow,
    BranchDayRow,
    ClientRow,
    EventRow,
    ManagerDayRow,
    ManagerRow,
    ManagerTargetRow,
    RejectedRow,
)
from models.visits import resets_post_loan_clock
from streams.balances import apply_snapshots, move_clients

_RESOLVE_CLIENT_COLS = (
    ClientRow.client_id,
    ClientRow.manager_id,
    ClientRow.claim_ratio,
    ClientRow.origin,
)
"""What resolving a fact reads of its client (attribution and claim ratio)."""

REFERENCE_ORDER = {"manager.upserted": 0, "client.upserted": 1}

_CLAIM_COLUMNS = (
    ("event_id", "varchar"),
    ("event_type", "varchar"),
    ("topic", "varchar"),
    ("partition", "int"),
    ("offset", "bigint"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("status", "varchar"),
    ("client_id", "varchar"),
    ("manager_id", "varchar"),
    ("branch_id", "varchar"),
    ("day", "date"),
    ("weighted_profit", "numeric"),
    ("value", "text"),
)
_PG_CLAIM = (
    "INSERT INTO events ({cols}) SELECT * FROM unnest({arrays}) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
).format(
    cols=", ".join(f'"{c}"' for c, _ in _CLAIM_COLUMNS),
    arrays=", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_CLAIM_COLUMNS, 1)),
)
REMINDER_SOURCE = "crm-tracker-worker"


@dataclass(frozen=True, slots=True)
class Incoming:
    """One Kafka message as the worker received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass
class BatchResult:
    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejected: list[tuple[Incoming, str]] = field(default_factory=list)
    held: int = 0
    released: int = 0
    latest_occurred: list[datetime] = field(default_factory=list)
    changed_managers: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Fact:
    event: Event
    msg: Incoming | None  # None for a released held event
    held_id: int | None = None
    client: ClientRow | None = None
    manager: ManagerRow | None = None
    problem: str | None = None
    wait_client: str | None = None
    wait_manager: str | None = None
    delta: dict[str, Any] | None = None  # what it adds to its day bucket, once resolved


def _zero() -> dict[str, Any]:
    row: dict[str, Any] = {c: Decimal(0) for c in MONEY_COLUMNS}
    row.update({c: 0 for c in COUNT_COLUMNS})
    return row


def fact_delta(
    event: Event, client: Any | None, policy: Policy, *, handed_over: bool = False
) -> dict[str, Any]:
    """The columns one fact adds to its day bucket (pure; used by apply and replay).

    ``client`` is the client row (its claim ratio and origin); ``handed_over`` says the
    fact falls in a later assignment than the client's first (a transferred client).
    """
    d: dict[str, Any] = {}
    p = event.payload
    if isinstance(p, TransactionPosted):
        line = p.business_line
        amount = to_cny(p.amount, p.currency, policy)
        profit = to_cny(p.simulated_profit, p.currency, policy)
        ratio = claim_ratio(
            client.claim_ratio if client is not None else None,
            client.origin if client is not None else None,
            handed_over,
            line,
            policy,
        )
        d["transactions"] = 1
        d[f"volume_{line}"] = amount
        d[f"profit_{line}"] = profit
        d["weighted_profit"] = weighted_profit(profit, line, ratio, policy)
    elif isinstance(p, AccountOpened):
        d[f"accounts_{p.account_type}"] = 1
        d[f"accounts_{p.origin}"] = 1
    elif isinstance(p, VisitLogged):
        d["visits_total"] = 1
        d[f"visits_{p.method}"] = 1
        d[f"visits_{p.kind}"] = 1
    return d


def attribution(history: Sequence[tuple[datetime, str]], at: datetime) -> tuple[str | None, int]:
    """Who held the client at ``at`` (the last assignment at or before it, else the first),
    and which assignment that is (0: the first; later ones are hand-overs)."""
    if not history:
        return None, 0
    i = max(bisect.bisect_right([h[0] for h in history], at) - 1, 0)
    return history[i][1], i


def attributed_manager(history: Sequence[tuple[datetime, str]], at: datetime) -> str | None:
    """Who held the client at ``at``: the last assignment at or before it, else the first."""
    return attribution(history, at)[0]


History = dict[str, list[tuple[datetime, str]]]


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


def _problem_row(
    m: Incoming,
    status: str,
    reason: str,
    event_id: str | None,
    event_type: str | None,
    now: datetime,
    *,
    wait_client: str | None = None,
    wait_manager: str | None = None,
) -> dict[str, Any]:
    """A ``rejected_events`` row: the raw message, where it came from, and why."""
    return {
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "key": _raw_text(m.key) if m.key is not None else None,
        "value_b64": base64.b64encode(m.value).decode() if m.value is not None else None,
        "status": status,
        "reason": reason,
        "event_id": event_id,
        "event_type": event_type,
        "waiting_client_id": wait_client,
        "waiting_manager_id": wait_manager,
        "received_at": now,
        "released_at": None,
    }


def _raw_text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace")


class Applier:
    """Applies batches to the database; safe to call again with the same messages."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: Policy,
        *,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.now = now or (lambda: datetime.now(UTC))
        """The clock (injected in tests): receive times, and when reminders are resolved."""
        self.tz = policy.tz
        self.dialect = engine.dialect.name
        # SQLite has one writer: queue this process's transactions instead of busy-waiting
        self._lock = asyncio.Lock() if self.dialect == "sqlite" else None
        # Statements are built once and run with parameter lists: SQLAlchemy caches their
        # compiled form and batches the rows (insertmanyvalues).
        self._claim_stmt = (
            self._insert(EventRow)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(EventRow.event_id)
        )
        self._manager_stmt = self._upsert_newer(ManagerRow, "manager_id")
        self._client_stmt = self._upsert_newer(ClientRow, "client_id")
        hist = self._insert(AssignmentRow)
        self._history_stmt = hist.on_conflict_do_update(
            index_elements=["client_id", "assigned_at"],
            set_={"manager_id": hist.excluded.manager_id, "event_id": hist.excluded.event_id},
        )
        at = bindparam("at", type_=ClientRow.__table__.c.last_visit_at.type)
        self._last_visit_stmt = (
            update(ClientRow)
            .where(ClientRow.client_id == bindparam("cid"))
            .where(or_(ClientRow.last_visit_at.is_(None), ClientRow.last_visit_at < at))
            .values(last_visit_at=at)
        )
        self._last_check_stmt = (
            update(ClientRow)
            .where(ClientRow.client_id == bindparam("cid"))
            .where(or_(ClientRow.last_post_loan_at.is_(None), ClientRow.last_post_loan_at < at))
            .values(last_post_loan_at=at)
        )
        self._bucket_stmts = {
            model: self._bucket_stmt(model, key)
            for model, key in ((ManagerDayRow, "manager_id"), (BranchDayRow, "branch_id"))
        }

    def _upsert_newer(self, model: Any, key: str) -> Any:
        """Upsert where a late-arriving older record never overwrites a newer one."""
        stmt = self._insert(model)
        cols = [
            c.key for c in model.__table__.c if c.key != key and c.key not in DERIVED_CLIENT_COLUMNS
        ]
        return stmt.on_conflict_do_update(
            index_elements=[key],
            set_={c: stmt.excluded[c] for c in cols},
            where=model.updated_at <= stmt.excluded.updated_at,
        )

    def _bucket_stmt(self, model: Any, key_col: str) -> Any:
        cols = (*MONEY_COLUMNS, *COUNT_COLUMNS)
        table = model.__table__
        stmt = self._insert(model)
        if self.dialect == "postgresql":
            set_ = {c: table.c[c] + stmt.excluded[c] for c in cols}
        else:  # the new totals were computed in Python (decimals are text on SQLite)
            set_ = {c: stmt.excluded[c] for c in cols}
        return stmt.on_conflict_do_update(index_elements=[key_col, "day"], set_=set_)

    # --- entry point ---------------------------------------------------------------------
    async def apply(self, messages: Sequence[Incoming]) -> BatchResult:
        result = BatchResult()
        decoded: list[tuple[Incoming, Event]] = []
        rejected: list[tuple[Incoming, InvalidEvent]] = []
        for msg in messages:
            try:
                decoded.append((msg, decode_event(msg.value, self.policy)))
            except InvalidEvent as exc:
                rejected.append((msg, exc))
        # a resend inside the same batch: keep the first copy
        seen: set[str] = set()
        unique: list[tuple[Incoming, Event]] = []
        for msg, ev in decoded:
            if ev.event_id in seen:
                result.duplicates += 1
                continue
            seen.add(ev.event_id)
            unique.append((msg, ev))

        if self._lock is not None:
            async with self._lock:
                await self._apply_in_tx(unique, rejected, result)
        else:
            await self._apply_in_tx(unique, rejected, result)
        return result

    async def _apply_in_tx(
        self,
        decoded: list[tuple[Incoming, Event]],
        rejected: list[tuple[Incoming, InvalidEvent]],
        result: BatchResult,
    ) -> None:
        now = self.now()
        async with self.engine.begin() as conn:
            conn.info["tally_entries"] = []
            if rejected:
                await self._record_rejected(conn, rejected, now)
                result.rejected = [(m, e.reason) for m, e in rejected]
            refs = sorted(
                ((m, e) for m, e in decoded if e.event_type in REFERENCE_ORDER),
                key=lambda me: (REFERENCE_ORDER[me[1].event_type], me[1].occurred_at),
            )
            facts = [(m, e) for m, e in decoded if e.event_type not in REFERENCE_ORDER]
            if self.dialect == "postgresql":
                await self._lock_entities(conn, refs, facts)

            released: list[_Fact] = []
            if refs:
                new_ids = await self._claim_reference(conn, refs, now)
                result.duplicates += len(refs) - len(new_ids)
                fresh = [(m, e) for m, e in refs if e.event_id in new_ids]
                client_ids, manager_ids, moved = await self._apply_reference(conn, fresh)
                # tier, credit status, override or manager may have changed: due dates follow
                await recompute_due(conn, client_ids, self.policy, now, source=REMINDER_SOURCE)
                for _m, e in fresh:
                    result.applied[e.event_type] += 1
                await self._hold_release_lock(conn)
                # under the lock: a fact another worker is releasing right now was credited
                # by the history before this transfer; once it commits, it is found here
                await self._reattribute(conn, moved)
                # --- balances (issue 19, streams/balances.py): a transfer moves the clients'
                # carried balances to the new holder's days
                result.changed_managers |= await move_clients(
                    conn, moved, self.policy, bank_day(now, self.tz)
                )
                # --- end balances
                released = await self._load_held(conn, client_ids, manager_ids)
            if facts or released:
                await self._apply_facts(conn, facts, released, now, result)
            # last, so the stream lock is held only from here to the commit
            await publish(conn, tally_changes(conn.info.pop("tally_entries", []), now))

    async def record_rejected(self, rejected: list[tuple[Incoming, InvalidEvent]]) -> None:
        """Record messages rejected outside a batch (e.g. ones the apply step cannot take)."""
        async with self.engine.begin() as conn:
            await self._record_rejected(conn, rejected, datetime.now(UTC))

    # --- rejected ------------------------------------------------------------------------
    async def _record_rejected(
        self,
        conn: AsyncConnection,
        rejected: list[tuple[Incoming, InvalidEvent]],
        now: datetime,
    ) -> None:
        rows = [
            _problem_row(m, "rejected", f"{m.position}: {e.reason}", e.event_id, e.event_type, now)
            for m, e in rejected
        ]
        await conn.execute(self._insert(RejectedRow).on_conflict_do_nothing(), rows)

    def _insert(self, model: Any) -> Any:
        mod = postgresql if self.dialect == "postgresql" else sqlite
        return mod.insert(model)

    # --- locking (PostgreSQL: several workers) -------------------------------------------
    async def _lock_entities(
        self,
        conn: AsyncConnection,
        refs: Iterable[tuple[Incoming, Event]],
        facts: Iterable[tuple[Incoming, Event]],
    ) -> None:
        """Serialise 'is the client known? else hold' against 'client arrives, release held'.

        Without it, a worker could hold an event for a client another worker is inserting at
        the same moment, and the event would wait for the next upsert of that client.
        """
        keys: set[str] = set()
        for _m, e in [*refs, *facts]:
            p = e.payload
            if isinstance(p, ManagerUpserted):
                keys.add("m:" + p.manager_id)
            elif isinstance(p, ClientUpserted):
                keys.add("c:" + p.client_id)
            else:
                keys.add("c:" + p.client_id)  # type: ignore[union-attr]
                if getattr(p, "manager_id", None):
                    keys.add("m:" + p.manager_id)  # type: ignore[union-attr]
        if not keys:
            return
        await conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(k) FROM "
                "(SELECT DISTINCT hashtextextended(x, 0) AS k FROM unnest(CAST(:keys AS text[])) x"
                " ORDER BY 1) s"
            ),
            {"keys": sorted(keys)},
        )

    async def _managers(self, conn: AsyncConnection, ids: list[str]) -> dict[str, Any]:
        rows = await conn.execute(
            select(ManagerRow).where(one_of(ManagerRow.manager_id, ids, self.dialect))
        )
        return {m.manager_id: m for m in rows.all()}

    async def _hold_release_lock(self, conn: AsyncConnection) -> None:
        """Serialise 'hold an event' against 'release held events' across workers.

        A batch that is about to hold re-checks its references under this lock; a batch that
        brought reference data looks for held events under it. Either the holder sees the
        reference data committed, or the releaser sees the held row committed: no event can
        wait for data that has already arrived. (SQLite has one writer: nothing to do.)
        """
        if self.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(7235002)"))

    # --- reference data ------------------------------------------------------------------
    async def _claim(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert event rows; return the ids that were new (the dedupe step)."""
        if not rows:
            return set()
        rows.sort(key=lambda r: r["event_id"])  # same lock order in every worker
        if self.dialect == "postgresql":
            # one statement over arrays: no per-row parameter building (the claim is the
            # widest write of a batch)
            raw = await conn.get_raw_connection()
            found = await raw.driver_connection.fetch(  # type: ignore[union-attr]
                _PG_CLAIM, *([r.get(c) for r in rows] for c, _ in _CLAIM_COLUMNS)
            )
            return {r[0] for r in found}
        res = await conn.execute(self._claim_stmt, rows)
        return {r[0] for r in res}

    def _event_row(self, m: Incoming, e: Event, now: datetime, **extra: Any) -> dict[str, Any]:
        row = {
            "event_id": e.event_id,
            "event_type": e.event_type,
            "topic": m.topic,
            "partition": m.partition,
            "offset": m.offset,
            "occurred_at": e.occurred_at,
            "received_at": now,
            "status": "applied",
            "client_id": getattr(e.payload, "client_id", None),
            "manager_id": getattr(e.payload, "manager_id", None),
            "branch_id": None,
            "day": bank_day(e.occurred_at, self.tz),
            "value": _raw_text(m.value),
        }
        row.update(extra)
        return row

    async def _claim_reference(
        self, conn: AsyncConnection, refs: list[tuple[Incoming, Event]], now: datetime
    ) -> set[str]:
        rows = []
        for m, e in refs:
            branch = getattr(e.payload, "branch_id", None)
            rows.append(self._event_row(m, e, now, branch_id=branch))
        return await self._claim(conn, rows)

    async def _apply_reference(
        self, conn: AsyncConnection, fresh: list[tuple[Incoming, Event]]
    ) -> tuple[set[str], set[str], set[str]]:
        """Write the records; returns the clients and managers written, and the clients
        whose history changed for facts already applied (the caller moves those)."""
        managers: dict[str, dict[str, Any]] = {}
        clients: dict[str, dict[str, Any]] = {}
        history: dict[tuple[str, datetime], dict[str, Any]] = {}
        targets: dict[tuple[str, datetime], dict[str, Any]] = {}
        # fresh is in occurred_at order: per key, the newest record wins
        for _m, e in fresh:
            p = e.payload
            if isinstance(p, ManagerUpserted):
                managers[p.manager_id] = {
                    "manager_id": p.manager_id,
                    "name": p.name,
                    "branch_id": p.branch_id,
                    "supervisor_id": p.supervisor_id,
                    "level": p.level,
                    "annual_profit_target": p.annual_profit_target,
                    "active": p.active,
                    "updated_at": e.occurred_at,
                }
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
                clients[p.client_id] = {
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
                    "bad_credit": p.bad_credit,  # balances (issue 19): tier review
                    "assigned_at": assigned_at,
                    "updated_at": e.occurred_at,
                }
        if managers:
            await conn.execute(self._manager_stmt, [managers[k] for k in sorted(managers)])
        if targets:
            # the history keeps every target, late ones too (years are judged by their own)
            await conn.execute(
                self._insert(ManagerTargetRow).on_conflict_do_nothing(),
                [targets[k] for k in sorted(targets)],
            )
        changed: set[str] = set()
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
                changed = {r["client_id"] for r in rows if existing.get(r["client_id"])}
        if clients:
            await conn.execute(self._client_stmt, [clients[k] for k in sorted(clients)])
        return set(clients), set(managers), changed

    # --- held events ---------------------------------------------------------------------
    async def _load_held(
        self, conn: AsyncConnection, client_ids: set[str], manager_ids: set[str]
    ) -> list[_Fact]:
        if not client_ids and not manager_ids:
            return []
        conds = []
        if client_ids:
            conds.append(one_of(RejectedRow.waiting_client_id, sorted(client_ids), self.dialect))
        if manager_ids:
            conds.append(one_of(RejectedRow.waiting_manager_id, sorted(manager_ids), self.dialect))
        rows = (
            await conn.execute(
                select(RejectedRow.id, RejectedRow.value_b64)
                .where(and_(RejectedRow.status == "held", or_(*conds)))
                .order_by(RejectedRow.id)
            )
        ).all()
        out = []
        for held_id, b64 in rows:
            ev = decode_event(base64.b64decode(b64), self.policy)
            out.append(_Fact(event=ev, msg=None, held_id=held_id))
        return out

    # --- facts ---------------------------------------------------------------------------
    async def _resolve(self, conn: AsyncConnection, facts: list[_Fact]) -> None:
        """Find each fact's client and credited manager; note what is missing."""
        client_ids = sorted({f.event.payload.client_id for f in facts})  # type: ignore[union-attr]
        clients = {
            c.client_id: c
            for c in (
                await conn.execute(
                    select(*_RESOLVE_CLIENT_COLS).where(
                        one_of(ClientRow.client_id, client_ids, self.dialect)
                    )
                )
            ).all()
        }
        history = await load_history(conn, clients)
        wanted: dict[int, str | None] = {}
        handed_over: dict[int, bool] = {}
        for i, f in enumerate(facts):
            f.problem = f.wait_client = f.wait_manager = None
            f.client = f.manager = f.delta = None
            p = f.event.payload
            client = clients.get(p.client_id)  # type: ignore[union-attr]
            f.client = client  # type: ignore[assignment]
            override = getattr(p, "manager_id", None)
            if client is None:
                f.problem = f"client {p.client_id} is not known yet"  # type: ignore[union-attr]
                f.wait_client = p.client_id  # type: ignore[union-attr]
                wanted[i] = override
                continue
            holder, index = attribution(history.get(client.client_id, []), f.event.occurred_at)
            handed_over[i] = index > 0
            wanted[i] = override or holder or client.manager_id
        manager_ids = sorted({m for m in wanted.values() if m})
        managers = (
            {
                m.manager_id: m
                for m in (
                    await conn.execute(
                        select(ManagerRow.manager_id, ManagerRow.branch_id).where(
                            one_of(ManagerRow.manager_id, manager_ids, self.dialect)
                        )
                    )
                ).all()
            }
            if manager_ids
            else {}
        )
        for i, f in enumerate(facts):
            mid = wanted.get(i)
            if mid is None:
                continue
            mgr = managers.get(mid)
            if mgr is None:
                f.wait_manager = mid
                what = f"manager {mid} is not known yet"
                f.problem = f"{f.problem}; {what}" if f.problem else what
            else:
                f.manager = mgr  # type: ignore[assignment]
        for i, f in enumerate(facts):
            if f.problem is None:
                f.delta = fact_delta(
                    f.event, f.client, self.policy, handed_over=handed_over.get(i, False)
                )

    async def _apply_facts(
        self,
        conn: AsyncConnection,
        batch: list[tuple[Incoming, Event]],
        released: list[_Fact],
        now: datetime,
        result: BatchResult,
    ) -> None:
        new_facts = [_Fact(event=e, msg=m) for m, e in batch]
        everything = new_facts + released
        await self._resolve(conn, everything)
        unresolved = [f for f in new_facts if f.problem is not None]
        if unresolved and self.dialect == "postgresql":
            await self._hold_release_lock(conn)
            await self._resolve(conn, unresolved)  # sees what committed while we waited

        # dedupe: claim the batch's ids with the attribution they get now
        rows = []
        for f in new_facts:
            assert f.msg is not None
            rows.append(
                self._event_row(
                    f.msg,
                    f.event,
                    now,
                    status="held" if f.problem else "applied",
                    manager_id=f.manager.manager_id if f.manager else None,
                    branch_id=f.manager.branch_id if f.manager else None,
                    weighted_profit=self._weighted(f),
                )
            )
        new_ids = await self._claim(conn, rows)
        result.duplicates += len(new_facts) - len(new_ids)
        fresh = [f for f in new_facts if f.event.event_id in new_ids]

        to_apply = [f for f in fresh + released if f.problem is None]
        to_hold = [f for f in fresh if f.problem is not None]
        still_held = [f for f in released if f.problem is not None]

        if to_hold:
            await self._hold(conn, to_hold, now)
            result.held += len(to_hold)
        for f in still_held:  # it now waits for something else
            await conn.execute(
                update(RejectedRow)
                .where(RejectedRow.id == f.held_id)
                .values(
                    reason=f"held: {f.problem}",
                    waiting_client_id=f.wait_client,
                    waiting_manager_id=f.wait_manager,
                )
            )
        done_held = [f for f in released if f.problem is None]
        if done_held:
            await conn.execute(
                update(RejectedRow)
                .where(RejectedRow.id.in_([f.held_id for f in done_held]))
                .values(status="released", released_at=now)
            )
            await conn.execute(
                update(EventRow)
                .where(EventRow.event_id == bindparam("eid"))
                .values(
                    status="applied",
                    manager_id=bindparam("mid"),
                    branch_id=bindparam("bid"),
                    weighted_profit=bindparam("wp"),
                ),
                [
                    {
                        "eid": f.event.event_id,
                        "mid": f.manager.manager_id,
                        "bid": f.manager.branch_id,
                        "wp": self._weighted(f),
                    }
                    for f in done_held
                    if f.manager is not None
                ],
            )
            result.released += len(done_held)
        # --- balances (issue 19, streams/balances.py): snapshots are applied there, as one
        # list per batch (claimed and resolved like every fact; no day-bucket columns)
        snapshots = [f for f in to_apply if f.event.event_type == "balance.snapshot"]
        if snapshots:
            to_apply = [f for f in to_apply if f.event.event_type != "balance.snapshot"]
            result.changed_managers |= await apply_snapshots(
                conn, [f.event for f in snapshots], self.policy, now
            )
            result.applied["balance.snapshot"] += len(snapshots)
            result.latest_occurred.extend(f.event.occurred_at for f in snapshots)
        # --- end balances
        if to_apply:
            await self._add_to_buckets(conn, to_apply)
            visited = await self._record_visits(conn, to_apply)
            # a qualifying visit moves the due date on and resolves the open reminder
            await recompute_due(conn, visited, self.policy, now, source=REMINDER_SOURCE)
            for f in to_apply:
                result.applied[f.event.event_type] += 1
                result.latest_occurred.append(f.event.occurred_at)
                assert f.manager is not None
                result.changed_managers.add(f.manager.manager_id)

    @staticmethod
    def _weighted(f: _Fact) -> Decimal | None:
        return f.delta.get("weighted_profit") if f.delta is not None else None

    async def _hold(self, conn: AsyncConnection, facts: list[_Fact], now: datetime) -> None:
        rows = []
        for f in facts:
            assert f.msg is not None
            rows.append(
                _problem_row(
                    f.msg,
                    "held",
                    f"held: {f.problem}",
                    f.event.event_id,
                    f.event.event_type,
                    now,
                    wait_client=f.wait_client,
                    wait_manager=f.wait_manager,
                )
            )
        await conn.execute(self._insert(RejectedRow).on_conflict_do_nothing(), rows)

    async def _add_to_buckets(self, conn: AsyncConnection, facts: list[_Fact]) -> None:
        entries = []
        for f in facts:
            assert f.manager is not None
            assert f.delta is not None
            entries.append(
                (
                    f.manager.manager_id,
                    f.manager.branch_id,
                    bank_day(f.event.occurred_at, self.tz),
                    f.delta,
                )
            )
        await self._add_entries(conn, entries)

    async def _add_entries(
        self, conn: AsyncConnection, entries: list[tuple[str, str, date, dict[str, Any]]]
    ) -> None:
        """Add (manager, branch, day, delta) entries to the daily buckets, aggregated first."""
        conn.info.setdefault("tally_entries", []).extend(entries)
        per_manager: dict[tuple[str, date], dict[str, Any]] = {}
        per_branch: dict[tuple[str, date], dict[str, Any]] = {}
        for manager_id, branch_id, day, delta in entries:
            for acc, key in ((per_manager, (manager_id, day)), (per_branch, (branch_id, day))):
                row = acc.get(key)
                if row is None:
                    row = acc[key] = _zero()
                for col, v in delta.items():
                    row[col] += v
        await self._upsert_buckets(conn, ManagerDayRow, "manager_id", per_manager)
        await self._upsert_buckets(conn, BranchDayRow, "branch_id", per_branch)

    async def _reattribute(self, conn: AsyncConnection, client_ids: set[str]) -> int:
        """Move already-applied facts whose credited manager changed with the history.

        Topics are not ordered against each other: a transfer can be applied after facts
        dated past its ``assigned_at``. Those facts were credited to the previous manager;
        here they move to the new one (both days' buckets and both branches), exactly: the
        weighted profit taken back is the one stored when the fact was applied.

        Runs under the hold/release lock (PostgreSQL): a worker releasing a held fact of
        these clients does not lock the client, so it may credit the fact by the history
        before this transfer; it does so under the same lock, and commits before this reads.
        """
        if not client_ids:
            return 0
        ids = sorted(client_ids)
        history = await load_history(conn, ids)
        rows = (
            await conn.execute(
                select(
                    EventRow.event_id,
                    EventRow.client_id,
                    EventRow.occurred_at,
                    EventRow.manager_id,
                    EventRow.branch_id,
                    EventRow.day,
                    EventRow.weighted_profit,
                    EventRow.value,
                    EventRow.topic,
                    EventRow.partition,
                    EventRow.offset,
                    EventRow.event_type,
                ).where(
                    EventRow.client_id.in_(ids),
                    EventRow.status == "applied",
                    EventRow.event_type.in_(("transaction.posted", "account.opened")),
                )
            )
        ).all()
        candidates = []
        for r in rows:
            target, index = attribution(history.get(r.client_id, []), r.occurred_at)
            if target is None or target == r.manager_id:
                continue
            ev = decode_event(r.value.encode(), self.policy)
            if getattr(ev.payload, "manager_id", None):  # an explicit override never moves
                continue
            candidates.append((r, ev, target, index > 0))
        if not candidates:
            return 0
        targets = sorted({c[2] for c in candidates})
        managers = await self._managers(conn, targets)
        clients = {
            c.client_id: c
            for c in (
                await conn.execute(select(ClientRow).where(ClientRow.client_id.in_(ids)))
            ).all()
        }
        entries = []
        moved = []
        rehold = []
        now = datetime.now(UTC)
        for r, ev, target, handed_over in candidates:
            # take back exactly what was credited; credit the new holder by today's rules
            # (its claim ratio may differ: a handed-over client's defaults)
            taken = fact_delta(ev, None, self.policy)
            if r.weighted_profit is not None:
                taken["weighted_profit"] = r.weighted_profit
            entries.append((r.manager_id, r.branch_id, r.day, {k: -v for k, v in taken.items()}))
            delta = fact_delta(ev, clients.get(r.client_id), self.policy, handed_over=handed_over)
            mgr = managers.get(target)
            if mgr is None:
                # the new manager is not known yet: the fact leaves the previous manager now
                # and waits, held, for the new one (released like any held event)
                msg = Incoming(r.topic, r.partition, r.offset, None, r.value.encode())
                reason = f"held: manager {target} is not known yet (client transferred)"
                rehold.append(
                    _problem_row(
                        msg, "held", reason, r.event_id, r.event_type, now, wait_manager=target
                    )
                )
                continue
            entries.append((mgr.manager_id, mgr.branch_id, r.day, delta))
            moved.append(
                {
                    "eid": r.event_id,
                    "mid": mgr.manager_id,
                    "bid": mgr.branch_id,
                    "wp": delta.get("weighted_profit"),
                }
            )
        await self._add_entries(conn, entries)
        if moved:
            await conn.execute(
                update(EventRow)
                .where(EventRow.event_id == bindparam("eid"))
                .values(
                    manager_id=bindparam("mid"),
                    branch_id=bindparam("bid"),
                    weighted_profit=bindparam("wp"),
                ),
                moved,
            )
        if rehold:
            await conn.execute(
                update(EventRow)
                .where(EventRow.event_id == bindparam("eid"))
                .values(status="held", manager_id=None, branch_id=None, weighted_profit=None),
                [{"eid": row["event_id"]} for row in rehold],
            )
            # it may have been held (and released) before: same position, same row
            stmt = self._insert(RejectedRow)
            stmt = stmt.on_conflict_do_update(
                index_elements=["topic", "partition", "offset"],
                set_={
                    c: stmt.excluded[c]
                    for c in (
                        "status",
                        "reason",
                        "waiting_client_id",
                        "waiting_manager_id",
                        "released_at",
                        "value_b64",
                    )
                },
            )
            await conn.execute(stmt, rehold)
        return len(moved) + len(rehold)

    async def _upsert_buckets(
        self,
        conn: AsyncConnection,
        model: type[ManagerDayRow] | type[BranchDayRow],
        key_col: str,
        deltas: dict[tuple[str, date], dict[str, Any]],
    ) -> None:
        if not deltas:
            return
        keys = sorted(deltas)  # one lock order for every worker: no deadlocks
        cols = (*MONEY_COLUMNS, *COUNT_COLUMNS)
        stmt = self._bucket_stmts[model]
        if self.dialect == "postgresql":
            await conn.execute(stmt, [{key_col: k[0], "day": k[1], **deltas[k]} for k in keys])
            return
        # SQLite keeps decimals as text, so add in Python under the write lock it holds
        table = model.__table__
        existing: dict[tuple[str, date], Any] = {}
        wanted = set(keys)
        # a superset (every key's rows on every day of the batch), narrowed here: two bound
        # lists instead of a placeholder pair per key
        res = await conn.execute(
            select(table).where(
                one_of(table.c[key_col], sorted({k[0] for k in keys}), self.dialect),
                one_of(table.c.day, sorted({k[1].isoformat() for k in keys}), self.dialect),
            )
        )
        for r in res.mappings():
            k = (r[key_col], r["day"])
            if k in wanted:
                existing[k] = r
        rows = []
        for k in keys:
            row = {key_col: k[0], "day": k[1]}
            old = existing.get(k)
            for c in cols:
                row[c] = deltas[k][c] + (old[c] if old is not None else 0)
            rows.append(row)
        await conn.execute(stmt, rows)

    async def _record_visits(self, conn: AsyncConnection, facts: list[_Fact]) -> set[str]:
        """Move the clients' last visit (and last post-loan check) forward; returns the
        visited clients. A late visit older than the last one changes nothing."""
        last: dict[str, datetime] = {}
        last_check: dict[str, datetime] = {}
        for f in facts:
            p = f.event.payload
            if not isinstance(p, VisitLogged):
                continue
            at = f.event.occurred_at
            if p.client_id not in last or at > last[p.client_id]:
                last[p.client_id] = at
            if resets_post_loan_clock(p.method, p.kind) and (
                p.client_id not in last_check or at > last_check[p.client_id]
            ):
                last_check[p.client_id] = at
        # one statement each, run with a parameter list (one round trip, cached compile)
        if last:
            await conn.execute(
                self._last_visit_stmt, [{"cid": c, "at": last[c]} for c in sorted(last)]
            )
        if last_check:
            await conn.execute(
                self._last_check_stmt,
                [{"cid": c, "at": last_check[c]} for c in sorted(last_check)],
            )
        return set(last)
