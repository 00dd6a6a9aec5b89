"""reminders: due dates on clients, reminders, heads-ups, their outbox and deliveries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_visit_due", models.tables.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("next_post_loan_due", models.tables.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_clients_next_visit_due"), ["next_visit_due"])
        batch_op.create_index(batch_op.f("ix_clients_next_post_loan_due"), ["next_post_loan_due"])

    op.create_table(
        "reminders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("due_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("manager_id", sa.String(length=128), nullable=False),
        sa.Column("supervisor_id", sa.String(length=128), nullable=True),
        sa.Column("branch_id", sa.String(length=128), nullable=True),
        sa.Column("fired_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("escalated_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acked_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acked_by", sa.String(length=128), nullable=True),
        sa.Column("snoozed_until", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_id", "kind", "due_at", name="uq_reminder_client_kind_due"),
    )
    with op.batch_alter_table("reminders", schema=None) as batch_op:
        batch_op.create_index("ix_reminders_status_due", ["status", "due_at"])
        batch_op.create_index("ix_reminders_manager", ["manager_id", "id"])
        batch_op.create_index("ix_reminders_branch", ["branch_id", "id"])

    op.create_table(
        "reminder_heads_ups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("due_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("manager_id", sa.String(length=128), nullable=False),
        sa.Column("sent_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_id", "kind", "due_at", name="uq_heads_up_client_kind_due"),
    )

    op.create_table(
        "reminder_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("reminder_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("dispatched", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("reminder_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_dispatched", ["dispatched", "id"])
        batch_op.create_index(batch_op.f("ix_reminder_outbox_reminder_id"), ["reminder_id"])

    op.create_table(
        "reminder_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_until", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("outbox_id", "target", name="uq_delivery_outbox_target"),
    )
    with op.batch_alter_table("reminder_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_status_next", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("reminder_deliveries")
    op.drop_table("reminder_outbox")
    op.drop_table("reminder_heads_ups")
    op.drop_table("reminders")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clients_next_post_loan_due"))
        batch_op.drop_index(batch_op.f("ix_clients_next_visit_due"))
        batch_op.drop_column("next_post_loan_due")
        batch_op.drop_column("next_visit_due")
