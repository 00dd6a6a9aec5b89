"""balance accounts fillfactor: a night updates every account's newest row in place

A night's batch rewrites each account's ``balance_accounts`` row (its newest day and
balance; the indexed ``account_id`` and ``client_id`` stay). With free room on the page,
PostgreSQL updates the row on its own page without touching either index (a HOT update).
Pages written from now on keep that room; ``VACUUM FULL balance_accounts`` rewrites the old
ones. SQLite has no such setting.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 18:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE balance_accounts SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE balance_accounts RESET (fillfactor)")
