"""balances: end-of-day snapshots, per-account newest, holders, day deltas, year openings

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-03 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.tables

revision: str = "0010"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the read cache's data version moves with every write to these (as migration 0006 does for
# the tally buckets)
VERSIONED = ("balance_daily", "balance_openings")
SQLITE_BUMP = (
    "INSERT INTO data_versions (shard, version) VALUES (0, 1) "
    "ON CONFLICT (shard) DO UPDATE SET version = version + 1;"
)


def _money(name: str) -> sa.Column:
    return sa.Column(name, models.tables.ExactDecimal(), nullable=False)


def upgrade() -> None:
    # client.upserted's bad_credit (a bad-credit record or a lawsuit): bronze in the tier review
    if "bad_credit" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("clients")}:
        with op.batch_alter_table("clients") as batch:
            batch.add_column(
                sa.Column("bad_credit", sa.Boolean(), server_default=sa.false(), nullable=False)
            )
    op.create_table(
        "balance_snapshots",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("business_line", sa.String(length=16), nullable=False),
        sa.Column("balance", models.tables.ExactDecimal(), nullable=False),
        sa.Column("occurred_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "as_of_date"),
    )
    op.create_index("ix_balance_snapshots_client", "balance_snapshots", ["client_id", "as_of_date"])
    op.create_table(
        "balance_accounts",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("business_line", sa.String(length=16), nullable=False),
        sa.Column("last_date", sa.Date(), nullable=False),
        sa.Column("last_balance", models.tables.ExactDecimal(), nullable=False),
        sa.Column("last_occurred_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_index(
        op.f("ix_balance_accounts_client_id"), "balance_accounts", ["client_id"], unique=False
    )
    op.create_table(
        "balance_holders",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("segments", sa.Text(), nullable=False),
        sa.Column("handed_over", sa.Boolean(), nullable=False),
        sa.Column("computed_tier", sa.String(length=16), nullable=True),
        sa.Column("tier_checked", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_index(
        op.f("ix_balance_holders_handed_over"), "balance_holders", ["handed_over"], unique=False
    )
    op.create_table(
        "balance_daily",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        _money("liability"),
        _money("asset"),
        sa.PrimaryKeyConstraint("scope", "owner_id", "day"),
    )
    op.create_table(
        "balance_openings",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        _money("liability"),
        _money("asset"),
        sa.PrimaryKeyConstraint("scope", "owner_id", "year"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in VERSIONED:
            op.execute(
                f"CREATE TRIGGER crm_data_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION crm_bump_data_version()"
            )
        return
    for table in VERSIONED:
        for what in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER crm_data_version_{table}_{what.lower()} AFTER {what} "
                f"ON {table} BEGIN {SQLITE_BUMP} END"
            )


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("bad_credit")
    for table in ("balance_openings", "balance_daily", "balance_holders", "balance_accounts"):
        op.drop_table(table)
    op.drop_index("ix_balance_snapshots_client", table_name="balance_snapshots")
    op.drop_table("balance_snapshots")
