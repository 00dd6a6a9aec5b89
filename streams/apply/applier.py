"""The idempotent batch apply: one database transaction per batch of Kafka messages.

Kafka delivers at least once, so this step makes redelivery harmless: the batch's event ids
are claimed in ``events`` (one statement; ON CONFLICT DO NOTHING on PostgreSQL) and only the
ids that were new change anything. Rejected messages are recorded by their (topic,
partition, offset), so a redelivered bad message is recorded once. Offsets are committed by
the caller only after this transaction commits.

Per event, Python only decodes (``models.decode.decode_event``) and credits
(``streams.apply.credit``); everything else is a handful of statements per batch.

Where each event type goes (add a new type's handler next to these):
- ``manager.upserted``, ``client.upserted``: ``ReferenceWriter`` (then due dates, late
  transfers ``Transfers``, held events ``HeldEvents``);
- ``transaction.posted``, ``account.opened``, ``visit.logged``: credited facts, summed into
  the daily buckets (``Tally``); visits also move the clients' clocks (``Visits``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models import visit_ledger
from models.decode import decode_event
from models.events import Event, InvalidEvent, ManagerUpserted, VisitLogged
from models.policy import Policy
from models.stream import publish, tally_changes
from models.tables import RejectedRow
from reminders.service import recompute_due
from streams.apply.accounts import Accounts
from streams.apply.buckets import Tally
from streams.apply.facts import Fact, resolve
from streams.apply.held import HeldEvents
from streams.apply.ledger import Ledger
from streams.apply.messages import BatchResult, Incoming, problem_row, raw_text
from streams.apply.reference import REFERENCE_ORDER, ReferenceWriter, Written
from streams.apply.terms import handed_over, handed_over_clients_of
from streams.apply.transfer import Transfers
from streams.apply.visits import REMINDER_SOURCE, Visits
from streams.balances import apply_snapshots, move_clients

Decoded = list[tuple[Incoming, Event]]
SNAP = "balance.snapshot"


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
        self.ledger = Ledger.for_dialect(engine.dialect.name)
        self.reference = ReferenceWriter(self.ledger)
        self.held = HeldEvents(self.ledger, policy)
        self.transfers = Transfers(self.ledger, policy)
        self.visits = Visits(policy)
        self.accounts = Accounts(self.ledger)
        self._rejected_stmt = self.ledger.insert(RejectedRow).on_conflict_do_nothing()

    # --- entry point ---------------------------------------------------------------------
    async def apply(self, messages: Sequence[Incoming]) -> BatchResult:
        result = BatchResult()
        unique: Decoded = []
        rejected: list[tuple[Incoming, InvalidEvent]] = []
        seen: set[str] = set()
        received = self.now()  # future dates: occurred_at beyond the skew of this clock
        for msg in messages:
            try:
                ev = decode_event(msg.value, self.policy, now=received)
            except InvalidEvent as exc:
                # a copy never raised: the exception's traceback (and its context's) leads
                # back to this frame, whose locals hold the list that holds the exception;
                # that cycle kept the whole batch (every decoded event) alive until the
                # cyclic collector's next pass, about 3 µs per event of collection
                rejected.append((msg, InvalidEvent(exc.reason, exc.event_id, exc.event_type)))
                continue
            if ev.event_id in seen:  # a resend inside the same batch: keep the first copy
                result.duplicates += 1
                continue
            seen.add(ev.event_id)
            unique.append((msg, ev))
        async with self.ledger.writing(), self.engine.begin() as conn:
            await self._apply_in_tx(conn, unique, rejected, result)
        return result

    async def record_rejected(self, rejected: list[tuple[Incoming, InvalidEvent]]) -> None:
        """Record messages rejected outside a batch (e.g. ones the apply step cannot take)."""
        async with self.ledger.writing(), self.engine.begin() as conn:
            await self._record_rejected(conn, rejected, datetime.now(UTC))

    async def _record_rejected(
        self, conn: AsyncConnection, rejected: list[tuple[Incoming, InvalidEvent]], now: datetime
    ) -> None:
        rows = [
            problem_row(m, "rejected", f"{m.position}: {e.reason}", e.event_id, e.event_type, now)
            for m, e in rejected
        ]
        await conn.execute(self._rejected_stmt, rows)

    async def _apply_in_tx(
        self,
        conn: AsyncConnection,
        decoded: Decoded,
        rejected: list[tuple[Incoming, InvalidEvent]],
        result: BatchResult,
    ) -> None:
        now = self.now()
        if rejected:
            await self._record_rejected(conn, rejected, now)
            result.rejected = [(m, e.reason) for m, e in rejected]
        refs = sorted(
            ((m, e) for m, e in decoded if e.event_type in REFERENCE_ORDER),
            key=lambda me: (REFERENCE_ORDER[me[1].event_type], me[1].occurred_at),
        )
        facts = [Fact(e, m) for m, e in decoded if e.event_type not in REFERENCE_ORDER]
        # several workers (PostgreSQL): 'is the client known? else hold' must not interleave
        # with 'the client arrives, release what waits for it'
        keys = _entity_keys(decoded)
        # 增量认领: whose credit a manager's active flag decides (locked with the batch's own)
        recredit = await self._handed_over_clients_of(conn, refs)
        keys.update("c:" + cid for cid in recredit)
        await self.ledger.lock_keys(conn, keys)
        tally = Tally()
        released: list[Fact] = []
        if refs:
            released = await self._apply_reference(conn, refs, tally, now, result, recredit)
        if facts or released:
            await self._apply_facts(conn, facts, released, tally, now, result)
        await tally.write(self.ledger, conn)
        # last, so the stream lock is held only from here to the commit
        await publish(conn, tally_changes(tally.stream_entries(), now))

    # --- reference data ------------------------------------------------------------------
    async def _handed_over_clients_of(self, conn: AsyncConnection, refs: Decoded) -> set[str]:
        """Increment mode: the handed-over clients of the batch's managers, whose facts a
        change of a manager's active flag moves (a full transfer once the previous manager
        has left, back when active again)."""
        if self.policy.handover_mode != "increment":
            return set()
        mids = {p.manager_id for _m, e in refs if isinstance(p := e.payload, ManagerUpserted)}
        return await handed_over_clients_of(conn, mids)

    async def _apply_reference(
        self,
        conn: AsyncConnection,
        refs: Decoded,
        tally: Tally,
        now: datetime,
        result: BatchResult,
        recredit: set[str],
    ) -> list[Fact]:
        """Write the records; move facts a late transfer (or a manager's active flag, see
        ``recredit``) takes; return the held facts the records may release."""
        new_ids = await self.ledger.claim(conn, [self._row(m, e, now) for m, e in refs])
        result.duplicates += len(refs) - len(new_ids)
        fresh = [e for _m, e in refs if e.event_id in new_ids]
        written = await self._write_reference(conn, fresh)
        # tier, credit status, override or manager may have changed: due dates follow
        await recompute_due(conn, written.clients, self.policy, now, source=REMINDER_SOURCE)
        for e in fresh:
            result.applied[e.event_type] += 1
        await self.ledger.lock_hold_release(conn)
        # under the lock: a fact another worker is releasing right now was credited by the
        # history before this transfer; once it commits, it is found here
        await self.transfers.move(conn, written.transferred | recredit, tally, now)
        # a transfer also moves the clients' carried balances to the new holder's days
        result.changed_managers |= await move_clients(
            conn, written.transferred, self.policy, now.astimezone(self.tz).date()
        )
        return await self.held.load(conn, written.clients, written.managers)

    async def _write_reference(self, conn: AsyncConnection, fresh: list[Event]) -> Written:
        """The records' write, on its own so that a test can stop a worker right after it
        (tests/db/test_apply.py, a transfer racing a release)."""
        return await self.reference.write(conn, fresh)

    # --- facts ---------------------------------------------------------------------------
    async def _apply_facts(
        self,
        conn: AsyncConnection,
        new: list[Fact],
        released: list[Fact],
        tally: Tally,
        now: datetime,
        result: BatchResult,
    ) -> None:
        terms = await resolve(self.ledger, conn, new + released, self.policy, self.tz)
        waiting = [f for f in new if f.wait is not None]
        if waiting:
            # under the hold/release lock, with what committed while we waited for it
            await self.ledger.lock_hold_release(conn)
            await resolve(self.ledger, conn, waiting, self.policy, self.tz)
        # end-of-day balances of known clients are not claimed in ``events``: their record
        # is their ``balance_snapshots`` row (streams/balances.py), where a resend changes
        # nothing (one row per account and date; an equally old one never replaces it)
        balances = [f.event for f in new if f.credit is not None and f.event.event_type == SNAP]
        if balances:
            new = [f for f in new if f.credit is None or f.event.event_type != SNAP]
        # dedupe: claim the batch's ids with the credit they get now
        new_ids = await self.ledger.claim(conn, [self._fact_row(f, now) for f in new])
        result.duplicates += len(new) - len(new_ids)
        fresh = [f for f in new if f.event.event_id in new_ids]
        # the visit ledger: claimed visits with their notes sealed (models/visit_ledger.py)
        await visit_ledger.record(conn, [f.event for f in fresh], now)
        to_hold = [f for f in fresh if f.wait is not None]
        if to_hold:
            await self.held.hold(conn, to_hold, now)
            result.held += len(to_hold)
        if released:
            result.released += await self.held.settle(conn, released, now)
        applied = [f for f in (*fresh, *released) if f.credit is not None]
        # end-of-day balances: held and released like every fact, written as one list by
        # streams/balances.py (they add nothing to the day buckets)
        snapshots = balances + [f.event for f in applied if f.event.event_type == SNAP]
        if snapshots:
            applied = [f for f in applied if f.event.event_type != SNAP]
            kept = await apply_snapshots(conn, snapshots, self.policy, now)
            result.changed_managers |= kept.managers
            result.applied[SNAP] += len(snapshots) - kept.duplicates
            result.duplicates += kept.duplicates
            result.latest_occurred.extend(e.occurred_at for e in snapshots)
        # per fact: its credit into the tally, its type, time and manager into the result
        # (the three lists summed by C loops: Counter.update, extend, set.update)
        add = tally.add_columns
        types: list[str] = []
        occurred: list[datetime] = []
        managers: list[str] = []
        for f in applied:
            c = f.credit
            assert c is not None
            e = f.event
            add(c.manager_id, c.branch_id, c.day, c.columns)
            types.append(e.event_type)
            occurred.append(e.occurred_at)
            managers.append(c.manager_id)
        result.applied.update(types)
        result.latest_occurred.extend(occurred)
        result.changed_managers.update(managers)
        await self.visits.record(conn, applied, now)
        # account openings: recorded, and (增量认领) a late one re-credits its client's business
        opened = await self.accounts.record(conn, [f.event for f in fresh])
        if opened and terms is not None and self.policy.handover_mode == "increment":
            late = opened & handed_over(terms.history)
            if late:
                await self.ledger.lock_hold_release(conn)
                await self.transfers.move(conn, late, tally, now)

    # --- event rows ----------------------------------------------------------------------
    def _row(self, m: Incoming, e: Event, now: datetime) -> tuple[Any, ...]:
        """The ``events`` row of a reference record (client or manager): it names its
        subject."""
        p = e.payload
        day = e.occurred_at.astimezone(self.tz).date()
        return _claim_row(
            m,
            e,
            now,
            ("applied", getattr(p, "manager_id", None), getattr(p, "branch_id", None), None, day),
            getattr(p, "client_id", None),
            visit_ledger.stored_value(e, m.value),
        )

    def _fact_row(self, f: Fact, now: datetime) -> tuple[Any, ...]:
        """The ``events`` row of a fact, with its credit (the claim builds one per fact of
        every batch: no lookups it can skip)."""
        m = f.msg
        assert m is not None
        e = f.event
        p = e.payload
        value = m.value
        if value is not None and isinstance(p, VisitLogged) and p.notes is not None:
            value = visit_ledger.stored_raw(value)  # visit notes are never stored here
        c = f.credit
        credited: tuple[str, Any, Any, Any, Any]
        if c is None:
            credited = ("held", None, None, None, e.occurred_at.astimezone(self.tz).date())
        else:
            credited = ("applied", c.manager_id, c.branch_id, c.weighted_profit, c.day)
        return _claim_row(m, e, now, credited, p.client_id, value)  # type: ignore[union-attr]


def _claim_row(
    m: Incoming,
    e: Event,
    now: datetime,
    credited: tuple[str, Any, Any, Any, Any],
    client_id: str | None,
    value: bytes | None,
) -> tuple[Any, ...]:
    """An ``events`` row in the ledger's claim order; ``credited`` is (status, manager,
    branch, weighted profit, bank day), ``value`` the message as stored (no visit notes)."""
    status, manager_id, branch_id, weighted, day = credited
    return (
        e.event_id,
        e.event_type,
        m.topic,
        m.partition,
        m.offset,
        e.occurred_at,
        now,
        status,
        client_id,
        manager_id,
        branch_id,
        day,
        weighted,
        raw_text(value),
    )


def _entity_keys(decoded: Decoded) -> set[str]:
    """The named locks a batch takes: its clients and the managers it names."""
    keys: set[str] = set()
    for _m, e in decoded:
        p = e.payload
        cid = getattr(p, "client_id", None)
        if cid is not None:
            keys.add("c:" + cid)
        mid = getattr(p, "manager_id", None)
        if mid is not None and (cid is None or e.event_type != "client.upserted"):
            keys.add("m:" + mid)
    return keys
