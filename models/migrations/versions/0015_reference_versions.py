"""reference versions: triggers move a counter on every write the credit rule's terms read

The write path keeps the credit rule's terms (clients' manager, claim ratio and origin, their
assignment histories, managers' branch and active flag) across batches; a batch reads this
counter after taking its locks and drops what it kept when the counter moved. Triggers, so
that every writer (another worker, a replay, an operator's SQL) moves it.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-04 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# what each table's trigger watches: None for every column (the columns of the terms only,
# so that due dates and tiers written per batch do not move the counter)
WATCHED: dict[str, tuple[str, ...] | None] = {
    "clients": ("manager_id", "claim_ratio", "origin"),
    "client_assignments": None,
    "managers": ("branch_id", "active"),
}

# PostgreSQL: one bump per statement, on a shard chosen by backend (as data_versions, 0006)
PG_FUNCTION = """
CREATE OR REPLACE FUNCTION crm_bump_reference_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reference_versions (shard, version) VALUES (pg_backend_pid() % 16, 1)
    ON CONFLICT (shard) DO UPDATE SET version = reference_versions.version + 1;
    RETURN NULL;
END
$$
"""
SQLITE_BUMP = (
    "INSERT INTO reference_versions (shard, version) VALUES (0, 1) "
    "ON CONFLICT (shard) DO UPDATE SET version = version + 1;"
)


def _update(columns: tuple[str, ...] | None) -> str:
    return "UPDATE" if columns is None else f"UPDATE OF {', '.join(columns)}"


def upgrade() -> None:
    op.create_table(
        "reference_versions",
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for table, columns in WATCHED.items():
            op.execute(
                f"CREATE TRIGGER crm_reference_version AFTER INSERT OR {_update(columns)} "
                f"OR DELETE OR TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION crm_bump_reference_version()"
            )
        return
    for table, columns in WATCHED.items():
        for what in ("INSERT", _update(columns), "DELETE"):
            op.execute(
                f"CREATE TRIGGER crm_reference_version_{table}_{what.split()[0].lower()} "
                f"AFTER {what} ON {table} BEGIN {SQLITE_BUMP} END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS crm_reference_version ON {table}")
        op.execute("DROP FUNCTION IF EXISTS crm_bump_reference_version()")
    else:
        for table in WATCHED:
            for what in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS crm_reference_version_{table}_{what}")
    op.drop_table("reference_versions")
