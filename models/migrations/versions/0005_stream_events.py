"""stream events for live clients (GET /v1/stream)

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-24 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.tables

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stream_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("manager_id", sa.String(length=128), nullable=True),
        sa.Column("branch_id", sa.String(length=128), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stream_events_at", "stream_events", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_stream_events_at", table_name="stream_events")
    op.drop_table("stream_events")
