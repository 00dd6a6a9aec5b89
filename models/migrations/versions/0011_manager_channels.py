"""reminder channels: managers' e-mail address and WeCom / DingTalk user ids; digest days

Revision ID: 0011
Revises: 0006
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.tables

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("email", 254), ("wecom_userid", 64), ("dingtalk_userid", 64))


def upgrade() -> None:
    # plain ADD COLUMN (not a batch copy): SQLite keeps the table's data-version triggers
    for name, length in COLUMNS:
        op.add_column("managers", sa.Column(name, sa.String(length), nullable=True))
    op.create_table(
        "digest_days",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("written_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("digests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )


def downgrade() -> None:
    op.drop_table("digest_days")
    for name, _length in reversed(COLUMNS):
        op.drop_column("managers", name)
