"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 16:04:03.745351
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "branch_daily",
        sa.Column("branch_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("transactions", sa.Integer(), nullable=False),
        sa.Column("volume_asset", models.tables.ExactDecimal(), nullable=False),
        sa.Column("volume_liability", models.tables.ExactDecimal(), nullable=False),
        sa.Column("volume_intermediary", models.tables.ExactDecimal(), nullable=False),
        sa.Column("volume_off_balance", models.tables.ExactDecimal(), nullable=False),
        sa.Column("profit_asset", models.tables.ExactDecimal(), nullable=False),
        sa.Column("profit_liability", models.tables.ExactDecimal(), nullable=False),
        sa.Column("profit_intermediary", models.tables.ExactDecimal(), nullable=False),
        sa.Column("profit_off_balance", models.tables.ExactDecimal(), nullable=False),
        sa.Column("weighted_profit", models.tables.ExactDecimal(), nullable=False),
        sa.Column("accounts_basic_settlement", sa.Integer(), nullable=False),
        sa.Column("accounts_general_settlement", sa.Integer(), nullable=False),
        sa.Column("accounts_special", sa.Integer(), nullable=False),
        sa.Column("accounts_temporary", sa.Integer(), nullable=False),
        sa.Column("accounts_usd_settlement", sa.Integer(), nullable=False),
        sa.Column("accounts_payroll", sa.Integer(), nullable=False),
        sa.Column("accounts_ebanking", sa.Integer(), nullable=False),
        sa.Column("accounts_personal", sa.Integer(), nullable=False),
        sa.Column("accounts_natural", sa.Integer(), nullable=False),
        sa.Column("accounts_marketed", sa.Integer(), nullable=False),
        sa.Column("visits_total", sa.Integer(), nullable=False),
        sa.Column("visits_on_site", sa.Integer(), nullable=False),
        sa.Column("visits_phone", sa.Integer(), nullable=False),
        sa.Column("visits_sms", sa.Integer(), nullable=False),
        sa.Column("visits_online", sa.Integer(), nullable=False),
        sa.Column("visits_routine", sa.Integer(), nullable=False),
        sa.Column("visits_business", sa.Integer(), nullable=False),
        sa.Column("visits_post_loan_check", sa.Integer(), nullable=False),
        sa.Column("visits_surprise", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("branch_id", "day"),
    )
    op.create_table(
        "client_assignments",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("assigned_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("manager_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "assigned_at"),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=True),
        sa.Column("segment", sa.String(length=16), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=True),
        sa.Column("manager_id", sa.String(length=128), nullable=False),
        sa.Column("branch_id", sa.String(length=128), nullable=True),
        sa.Column("credit_client", sa.Boolean(), nullable=False),
        sa.Column("claim_ratio", models.tables.ExactDecimal(), nullable=True),
        sa.Column("visit_interval_days", sa.Integer(), nullable=True),
        sa.Column("assigned_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_visit_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_post_loan_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("client_id"),
    )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clients_manager_id"), ["manager_id"], unique=False)

    op.create_table(
        "events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=True),
        sa.Column("manager_id", sa.String(length=128), nullable=True),
        sa.Column("branch_id", sa.String(length=128), nullable=True),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("weighted_profit", models.tables.ExactDecimal(), nullable=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_client", ["client_id", "occurred_at"], unique=False)
        batch_op.create_index("ix_events_manager_day", ["manager_id", "day"], unique=False)

    op.create_table(
        "manager_daily",
        sa.Column("manager_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("transactions", sa.Integer(), nullable=False),
        sa.Column("volume_asset", models.tables.ExactDecimal(), nullable=False),
        sa.Column("volume_liability", models.tables.ExactDecimal(), nullable=False),
        sa.Column("volume_intermediary", models.tables.ExactDecimal(), nullable=False),
        sa.Column("volume_off_balance", models.tables.ExactDecimal(), nullable=False),
        sa.Column("profit_asset", models.tables.ExactDecimal(), nullable=False),
        sa.Column("profit_liability", models.tables.ExactDecimal(), nullable=False),
        sa.Column("profit_intermediary", models.tables.ExactDecimal(), nullable=False),
        sa.Column("profit_off_balance", models.tables.ExactDecimal(), nullable=False),
        sa.Column("weighted_profit", models.tables.ExactDecimal(), nullable=False),
        sa.Column("accounts_basic_settlement", sa.Integer(), nullable=False),
        sa.Column("accounts_general_settlement", sa.Integer(), nullable=False),
        sa.Column("accounts_special", sa.Integer(), nullable=False),
        sa.Column("accounts_temporary", sa.Integer(), nullable=False),
        sa.Column("accounts_usd_settlement", sa.Integer(), nullable=False),
        sa.Column("accounts_payroll", sa.Integer(), nullable=False),
        sa.Column("accounts_ebanking", sa.Integer(), nullable=False),
        sa.Column("accounts_personal", sa.Integer(), nullable=False),
        sa.Column("accounts_natural", sa.Integer(), nullable=False),
        sa.Column("accounts_marketed", sa.Integer(), nullable=False),
        sa.Column("visits_total", sa.Integer(), nullable=False),
        sa.Column("visits_on_site", sa.Integer(), nullable=False),
        sa.Column("visits_phone", sa.Integer(), nullable=False),
        sa.Column("visits_sms", sa.Integer(), nullable=False),
        sa.Column("visits_online", sa.Integer(), nullable=False),
        sa.Column("visits_routine", sa.Integer(), nullable=False),
        sa.Column("visits_business", sa.Integer(), nullable=False),
        sa.Column("visits_post_loan_check", sa.Integer(), nullable=False),
        sa.Column("visits_surprise", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("manager_id", "day"),
    )
    op.create_table(
        "managers",
        sa.Column("manager_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=True),
        sa.Column("branch_id", sa.String(length=128), nullable=False),
        sa.Column("supervisor_id", sa.String(length=128), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("annual_profit_target", models.tables.ExactDecimal(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("manager_id"),
    )
    with op.batch_alter_table("managers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_managers_branch_id"), ["branch_id"], unique=False)

    op.create_table(
        "rejected_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("value_b64", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column("waiting_client_id", sa.String(length=128), nullable=True),
        sa.Column("waiting_manager_id", sa.String(length=128), nullable=True),
        sa.Column("received_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("released_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_rejected_position"),
    )
    with op.batch_alter_table("rejected_events", schema=None) as batch_op:
        batch_op.create_index("ix_rejected_status", ["status", "id"], unique=False)
        batch_op.create_index("ix_rejected_wait_client", ["waiting_client_id"], unique=False)
        batch_op.create_index("ix_rejected_wait_manager", ["waiting_manager_id"], unique=False)

    op.create_table(
        "worker_positions",
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("committed_offset", sa.BigInteger(), nullable=True),
        sa.Column("end_offset", sa.BigInteger(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("updated_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "topic", "partition"),
    )


def downgrade() -> None:
    op.drop_table("worker_positions")
    with op.batch_alter_table("rejected_events", schema=None) as batch_op:
        batch_op.drop_index("ix_rejected_wait_manager")
        batch_op.drop_index("ix_rejected_wait_client")
        batch_op.drop_index("ix_rejected_status")

    op.drop_table("rejected_events")
    with op.batch_alter_table("managers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_managers_branch_id"))

    op.drop_table("managers")
    op.drop_table("manager_daily")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_manager_day")
        batch_op.drop_index("ix_events_client")

    op.drop_table("events")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clients_manager_id"))

    op.drop_table("clients")
    op.drop_table("client_assignments")
    op.drop_table("branch_daily")
