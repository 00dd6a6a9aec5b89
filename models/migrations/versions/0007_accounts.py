"""accounts: each account's opening instant, for the hand-over rule (增量认领)

Revision ID: 0007
Revises: 0011
Create Date: 2026-12-03 18:00:00
"""

import json
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

import models.tables

revision: str = "0007"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    accounts = op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("opened_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_index("ix_accounts_client_id", "accounts", ["client_id"])
    # openings already stored: the earliest per account
    rows = op.get_bind().execute(
        sa.text("SELECT value FROM events WHERE event_type = 'account.opened'")
    )
    opened: dict[str, tuple[datetime, str]] = {}
    for (value,) in rows:
        env = json.loads(value)
        p = env.get("payload") or {}
        at = datetime.fromisoformat(env["occurred_at"])
        aid = p.get("account_id")
        if aid and (aid not in opened or at < opened[aid][0]):
            opened[aid] = (at, p["client_id"])
    if opened:
        op.bulk_insert(
            accounts,
            [
                {"account_id": a, "client_id": c, "opened_at": at}
                for a, (at, c) in sorted(opened.items())
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_accounts_client_id", table_name="accounts")
    op.drop_table("accounts")
