"""Database tables (SQLAlchemy 2, typed declarative).

Money columns are exact on both databases: NUMERIC on PostgreSQL, the decimal's text on
SQLite (whose NUMERIC affinity would round through a float). Timestamps are stored in UTC
and always come back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Dialect,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.policy import ACCOUNT_TYPES, BUSINESS_LINES, VISIT_KINDS, VISIT_METHODS


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC on PostgreSQL; text on SQLite so no digit is ever lost."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return str(Decimal(value))
        return Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value) if not isinstance(value, Decimal) else value


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware (UTC) datetimes out, on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    """Every valid event ever accepted: the dedupe key, the audit trail, the replay source."""

    __tablename__ = "events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))  # applied | held
    client_id: Mapped[str | None] = mapped_column(String(128))
    manager_id: Mapped[str | None] = mapped_column(String(128))
    """The manager the event was credited to (facts) or the subject (reference data)."""
    branch_id: Mapped[str | None] = mapped_column(String(128))
    day: Mapped[date | None] = mapped_column(Date)
    """The bank-time-zone day the event counts in."""
    weighted_profit: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    """The exact weighted profit credited (transactions), so a move can take back the same."""
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_events_client", "client_id", "occurred_at"),
        Index("ix_events_manager_day", "manager_id", "day"),
        # a manager's upserts only (migration 0013): hired_at for every tally answer
        Index(
            "ix_events_manager_upserts",
            "manager_id",
            "occurred_at",
            "event_id",
            postgresql_where=text("event_type = 'manager.upserted'"),
            sqlite_where=text("event_type = 'manager.upserted'"),
        ),
    )


class RejectedRow(Base):
    """Messages that could not be applied: rejected for good, or held for reference data."""

    __tablename__ = "rejected_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str | None] = mapped_column(Text)
    value_b64: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # rejected | held | released
    reason: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String(128))
    event_type: Mapped[str | None] = mapped_column(String(64))
    waiting_client_id: Mapped[str | None] = mapped_column(String(128))
    waiting_manager_id: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("topic", "partition", "offset", name="uq_rejected_position"),
        Index("ix_rejected_status", "status", "id"),
        Index("ix_rejected_wait_client", "waiting_client_id"),
        Index("ix_rejected_wait_manager", "waiting_manager_id"),
    )


class ManagerRow(Base):
    __tablename__ = "managers"

    manager_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    branch_id: Mapped[str] = mapped_column(String(128), index=True)
    supervisor_id: Mapped[str | None] = mapped_column(String(128))
    level: Mapped[str | None] = mapped_column(String(16))
    annual_profit_target: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    active: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """occurred_at of the upsert in force (an older upsert arriving late never wins)."""
    # reminder channels (migration 0011): the manager's address and robot @-mentions
    email: Mapped[str | None] = mapped_column(String(254))
    wecom_userid: Mapped[str | None] = mapped_column(String(64))
    dingtalk_userid: Mapped[str | None] = mapped_column(String(64))


class ClientRow(Base):
    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    segment: Mapped[str | None] = mapped_column(String(16))
    tier: Mapped[str | None] = mapped_column(String(16))
    manager_id: Mapped[str] = mapped_column(String(128), index=True)
    branch_id: Mapped[str | None] = mapped_column(String(128))
    credit_client: Mapped[bool] = mapped_column(default=False)
    claim_ratio: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    origin: Mapped[str | None] = mapped_column(String(16))
    """marketed | natural | handed_over: picks the default claim ratio when none is set."""
    visit_interval_days: Mapped[int | None] = mapped_column(Integer)
    bad_credit: Mapped[bool] = mapped_column(default=False, server_default=false())
    """A bad-credit record or a pending lawsuit (tier review: bronze)."""
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_visit_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_post_loan_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_visit_due: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    """When the ordinary visit clock runs out (reminders/rules.py); the scheduler scans it."""
    next_post_loan_due: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    """Credit clients only: when the post-loan check clock runs out."""


DERIVED_CLIENT_COLUMNS = (
    "last_visit_at",
    "last_post_loan_at",
    "next_visit_due",
    "next_post_loan_due",
)
"""Client columns kept by the apply step and the scheduler, never by a client upsert."""

DUE_COLUMN = {"visit": ClientRow.next_visit_due, "post_loan_check": ClientRow.next_post_loan_due}
"""The client column holding each reminder clock's due instant (``REMINDER_KINDS``)."""


class VisitRow(Base):
    """The visit ledger (拜访记录台账): one row per visit event, written when it is claimed;
    the notes only encrypted (models/visit_ledger.py), never in clear text."""

    __tablename__ = "visits"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    manager_id: Mapped[str] = mapped_column(String(128))
    """The visitor (payload.manager_id)."""
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    method: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    duration_minutes: Mapped[int | None] = mapped_column(Integer)
    notes_sealed: Mapped[str | None] = mapped_column(Text)
    """The sealed notes (``models.visit_ledger.NotesCipher``: ``n2.`` + AES-256-GCM, or a
    Fernet token sealed before it; re-sealed under the newest key by ``crm-tracker notes
    rotate``)."""
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_visits_client", "client_id", "occurred_at"),
        Index("ix_visits_manager", "manager_id", "occurred_at"),
    )


class FeedTokenRow(Base):
    """A manager's calendar feed token (the plan as iCalendar); revoked ones are kept."""

    __tablename__ = "feed_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the token: the token itself is shown once, when it is made."""
    manager_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(255))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AssignmentRow(Base):
    """Who held a client from when: attribution of late events follows this history."""

    __tablename__ = "client_assignments"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    manager_id: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(128))


class AccountRow(Base):
    """Each account's opening (from ``account.opened``): the hand-over rule (增量认领) tells a
    client's existing accounts from the ones opened after a hand-over by it."""

    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    """The earliest ``occurred_at`` of the account's openings."""


class ManagerTargetRow(Base):
    """Every annual profit target a manager was given, from when (years are assessed
    against the target in force at their end, so a new target never rewrites old years)."""

    __tablename__ = "manager_targets"

    manager_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    annual_profit_target: Mapped[Decimal] = mapped_column(ExactDecimal())
    event_id: Mapped[str] = mapped_column(String(128))


class EvaluationRow(Base):
    """Comprehensive evaluation points (综合评价) a supervisor entered; every change is a
    new version, so what a manager was scored on can always be shown."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    manager_id: Mapped[str] = mapped_column(String(128))
    period: Mapped[str] = mapped_column(String(16))
    """The period label: ``2026``, ``2026-Q4`` or ``2026-11``."""
    version: Mapped[int] = mapped_column(Integer)
    points: Mapped[Decimal] = mapped_column(ExactDecimal())
    parts: Mapped[str | None] = mapped_column(Text)
    """Optional breakdown as JSON (work log, post-loan discipline, professional quality)."""
    reasons: Mapped[str] = mapped_column(Text)
    entered_by: Mapped[str] = mapped_column(String(255))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("manager_id", "period", "version", name="uq_evaluation_version"),
    )


class AuditRow(Base):
    """Who did what, when, from where: actions people take through the API or the CLI."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)
    remote_addr: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_at", "at"),)


class StreamEventRow(Base):
    """Changes for live clients (``GET /v1/stream``), written in the transaction that makes
    them; ids follow commit order (the writer serialises the insert up to its commit), so a
    reader that resumes after an id misses nothing. Old rows are pruned."""

    __tablename__ = "stream_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    """``tally`` or ``reminder``."""
    manager_id: Mapped[str | None] = mapped_column(String(128))
    branch_id: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_stream_events_at", "at"),)


MONEY_COLUMNS: tuple[str, ...] = (
    *(f"volume_{line}" for line in BUSINESS_LINES),
    *(f"profit_{line}" for line in BUSINESS_LINES),
    "weighted_profit",
)
COUNT_COLUMNS: tuple[str, ...] = (
    "transactions",
    *(f"accounts_{t}" for t in ACCOUNT_TYPES),
    "accounts_natural",
    "accounts_marketed",
    "visits_total",
    *(f"visits_{m}" for m in VISIT_METHODS),
    *(f"visits_{k}" for k in VISIT_KINDS),
)


def _money() -> Mapped[Decimal]:
    return mapped_column(ExactDecimal(), default=Decimal(0), nullable=False)


def _count() -> Mapped[int]:
    return mapped_column(Integer, default=0, nullable=False)


class _TallyColumns:
    """One day of activity; a period's tally is the sum of its days."""

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    transactions: Mapped[int] = _count()
    volume_asset: Mapped[Decimal] = _money()
    volume_liability: Mapped[Decimal] = _money()
    volume_intermediary: Mapped[Decimal] = _money()
    volume_off_balance: Mapped[Decimal] = _money()
    profit_asset: Mapped[Decimal] = _money()
    profit_liability: Mapped[Decimal] = _money()
    profit_intermediary: Mapped[Decimal] = _money()
    profit_off_balance: Mapped[Decimal] = _money()
    weighted_profit: Mapped[Decimal] = _money()
    accounts_basic_settlement: Mapped[int] = _count()
    accounts_general_settlement: Mapped[int] = _count()
    accounts_special: Mapped[int] = _count()
    accounts_temporary: Mapped[int] = _count()
    accounts_usd_settlement: Mapped[int] = _count()
    accounts_payroll: Mapped[int] = _count()
    accounts_ebanking: Mapped[int] = _count()
    accounts_personal: Mapped[int] = _count()
    accounts_natural: Mapped[int] = _count()
    accounts_marketed: Mapped[int] = _count()
    visits_total: Mapped[int] = _count()
    visits_on_site: Mapped[int] = _count()
    visits_phone: Mapped[int] = _count()
    visits_sms: Mapped[int] = _count()
    visits_online: Mapped[int] = _count()
    visits_routine: Mapped[int] = _count()
    visits_business: Mapped[int] = _count()
    visits_post_loan_check: Mapped[int] = _count()
    visits_surprise: Mapped[int] = _count()


class ManagerDayRow(_TallyColumns, Base):
    __tablename__ = "manager_daily"
    manager_id: Mapped[str] = mapped_column(String(128), primary_key=True, sort_order=-1)


class BranchDayRow(_TallyColumns, Base):
    __tablename__ = "branch_daily"
    branch_id: Mapped[str] = mapped_column(String(128), primary_key=True, sort_order=-1)


class BalanceSnapshotRow(Base):
    """One end-of-day balance per (account, bank date): the one with the latest occurred_at."""

    __tablename__ = "balance_snapshots"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    as_of_date: Mapped[date] = mapped_column(Date, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    business_line: Mapped[str] = mapped_column(String(16))  # liability | asset
    balance: Mapped[Decimal] = mapped_column(ExactDecimal())
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_id: Mapped[str] = mapped_column(String(128))

    __table_args__ = (Index("ix_balance_snapshots_client", "client_id", "as_of_date"),)


class BalanceAccountRow(Base):
    """Each account's newest snapshot: a night's batch (dates past it) reads only this."""

    __tablename__ = "balance_accounts"
    # room on each page: a night's update of the newest day stays on its page and leaves
    # both indexes alone (migration 0014)
    __table_args__ = ({"postgresql_with": {"fillfactor": 50}},)

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    business_line: Mapped[str] = mapped_column(String(16))
    last_date: Mapped[date] = mapped_column(Date)
    last_balance: Mapped[Decimal] = mapped_column(ExactDecimal())
    last_occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BalanceHolderRow(Base):
    """Who holds a client on which days, as the stored day deltas credit it: a JSON list of
    [first bank day or null, manager_id, branch_id]. A transfer moves the client's carried
    balance from the old list to the new one."""

    __tablename__ = "balance_holders"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    segments: Mapped[str] = mapped_column(Text)
    handed_over: Mapped[bool] = mapped_column(default=False, index=True)
    """More than one holder: the hand-over increment split applies (models/balances.py)."""
    computed_tier: Mapped[str | None] = mapped_column(String(16))
    """The tier its standard deposits gave when last checked (客户等级下降 alerts)."""
    tier_checked: Mapped[date | None] = mapped_column(Date)


class BalanceDayRow(Base):
    """Per manager or branch and bank day, the change of the carried end-of-day balance of
    its clients' accounts (liability = deposits, asset = loans). The balance on day d is the
    sum of the changes up to d; a period's sum of daily balances is a weighted sum of the
    changes in it (models/balances.py)."""

    __tablename__ = "balance_daily"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)  # manager | branch
    owner_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    liability: Mapped[Decimal] = _money()
    asset: Mapped[Decimal] = _money()


class BalanceOpeningRow(Base):
    """The carried balance at the start of a year (the sum of every change before 1 January),
    so that no period query reads days before its own year."""

    __tablename__ = "balance_openings"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    liability: Mapped[Decimal] = _money()
    asset: Mapped[Decimal] = _money()


# What the read cache of the API (api/reads.py) depends on: a write to any of these tables,
# by any writer, moves the data version (database triggers, migration 0006).
VERSIONED_TABLES: tuple[str, ...] = (
    "managers",
    "manager_targets",
    "manager_daily",
    "branch_daily",
    "balance_daily",
    "balance_openings",
)


class DataVersionRow(Base):
    """Counters that every write to ``VERSIONED_TABLES`` moves, in the writing transaction
    (triggers, so no writer can forget). The data version is their sum: it changes whenever
    committed data that the tallies and leaderboards read has changed. PostgreSQL spreads the
    counter over shards (by backend) so that concurrent writers do not queue on one row."""

    __tablename__ = "data_versions"

    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class ReferenceVersionRow(Base):
    """Counters that every write to what the credit rule reads moves (clients' manager, claim
    ratio and origin; assignment histories; managers' branch and active flag), in the writing
    transaction (triggers, migration 0015). Their sum changes whenever those committed terms
    have changed: the write path keeps the terms across batches while it stays the same.
    Sharded by backend on PostgreSQL, as ``data_versions``."""

    __tablename__ = "reference_versions"

    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class WorkerPositionRow(Base):
    """What the worker last saw of each partition: committed offset and high watermark.

    The worker writes it; /readyz and the lag view read it (the embedded broker's
    ListOffsets under-reports partition ends, a fetch's high watermark does not).
    """

    __tablename__ = "worker_positions"

    group_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    committed_offset: Mapped[int | None] = mapped_column(BigInteger)
    end_offset: Mapped[int | None] = mapped_column(BigInteger)
    worker: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReminderRow(Base):
    """One reminder per (client, kind, due instant): the unique key stops double-firing."""

    __tablename__ = "reminders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # visit | post_loan_check
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    """open | acked | snoozed | escalated | resolved"""
    manager_id: Mapped[str] = mapped_column(String(128))
    supervisor_id: Mapped[str | None] = mapped_column(String(128))
    branch_id: Mapped[str | None] = mapped_column(String(128))
    """The manager's branch (supervisors see their branches' reminders)."""
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acked_by: Mapped[str | None] = mapped_column(String(128))
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("client_id", "kind", "due_at", name="uq_reminder_client_kind_due"),
        Index("ix_reminders_status_due", "status", "due_at"),
        Index("ix_reminders_manager", "manager_id", "id"),
        Index("ix_reminders_branch", "branch_id", "id"),
    )


class HeadsUpRow(Base):
    """A "due in N days" notice sent (policy ``heads_up_enabled``): one per due instant."""

    __tablename__ = "reminder_heads_ups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    manager_id: Mapped[str] = mapped_column(String(128))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("client_id", "kind", "due_at", name="uq_heads_up_client_kind_due"),
    )


class OutboxRow(Base):
    """A reminder event to deliver, written in the transaction that changed the reminder."""

    __tablename__ = "reminder_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(32))
    reminder_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """None for a heads-up (no reminder exists before the due instant)."""
    key: Mapped[str] = mapped_column(String(128))
    """The Kafka message key: the manager id (a notice's: its recipient)."""
    body: Mapped[str] = mapped_column(Text)
    """The envelope JSON, exactly the bytes sent to the topic and to webhooks (for a
    ``notice.*`` row: the composed message and its routes, reminders/outbox.py)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    dispatched: Mapped[bool] = mapped_column(default=False)
    """True once one delivery row per target exists."""

    __table_args__ = (Index("ix_outbox_dispatched", "dispatched", "id"),)


class DigestDayRow(Base):
    """A day whose morning digests were written (once, whichever scheduler got there first)."""

    __tablename__ = "digest_days"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    """The local day, ``YYYY-MM-DD`` in the bank time zone."""
    written_at: Mapped[datetime] = mapped_column(UTCDateTime())
    digests: Mapped[int] = mapped_column(Integer, default=0)


class DeliveryRow(Base):
    """One outbox event to one target (``kafka``, a webhook URL, or a channel: ``email``,
    ``wecom:<branch>``, ``dingtalk:<branch>``), retried until done."""

    __tablename__ = "reminder_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """A delivering scheduler's lease, so two instances do not send the same row at once."""
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("outbox_id", "target", name="uq_delivery_outbox_target"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
    )


assert set(MONEY_COLUMNS) | set(COUNT_COLUMNS) <= set(ManagerDayRow.__table__.c.keys())
