"""data versions: triggers move a counter on every write the API's read cache depends on

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# the tables of models.tables.VERSIONED_TABLES when this migration was written (a table
# added there later gets its triggers in a migration of its own)
VERSIONED_TABLES = ("managers", "manager_targets", "manager_daily", "branch_daily")

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# PostgreSQL: one bump per statement, on a shard chosen by backend, so that two writers
# (two workers, a replay) rarely wait on each other's row lock until commit.
PG_FUNCTION = """
CREATE OR REPLACE FUNCTION crm_bump_data_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO data_versions (shard, version) VALUES (pg_backend_pid() % 16, 1)
    ON CONFLICT (shard) DO UPDATE SET version = data_versions.version + 1;
    RETURN NULL;
END
$$
"""
# SQLite has row triggers only (and one writer at a time: one shard).
SQLITE_BUMP = (
    "INSERT INTO data_versions (shard, version) VALUES (0, 1) "
    "ON CONFLICT (shard) DO UPDATE SET version = version + 1;"
)


def upgrade() -> None:
    op.create_table(
        "data_versions",
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for table in VERSIONED_TABLES:
            op.execute(
                f"CREATE TRIGGER crm_data_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION crm_bump_data_version()"
            )
        return
    for table in VERSIONED_TABLES:
        for what in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER crm_data_version_{table}_{what.lower()} AFTER {what} "
                f"ON {table} BEGIN {SQLITE_BUMP} END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in VERSIONED_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS crm_data_version ON {table}")
        op.execute("DROP FUNCTION IF EXISTS crm_bump_data_version()")
    else:
        for table in VERSIONED_TABLES:
            for what in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS crm_data_version_{table}_{what}")
    op.drop_table("data_versions")
