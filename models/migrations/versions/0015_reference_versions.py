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
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the columns the terms read of each table: an update moves the counter only when one of them
# changes (a record sent again as it was, due dates and tiers written per batch: no move)
WATCHED: dict[str, tuple[str, ...]] = {
    "clients": ("manager_id", "claim_ratio", "origin"),
    "client_assignments": ("client_id", "assigned_at", "manager_id"),
    "managers": ("branch_id", "active"),
}

# one bump, on a shard chosen by backend on PostgreSQL (as data_versions, 0006), on one shard
# on SQLite (one writer at a time)
BUMP = (
    "INSERT INTO reference_versions (shard, version) VALUES ({shard}, 1) "
    "ON CONFLICT (shard) DO UPDATE SET version = reference_versions.version + 1;"
)
PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION crm_bump_reference_version() RETURNS trigger LANGUAGE plpgsql"
    f" AS $$ BEGIN {BUMP.format(shard='pg_backend_pid() % 16')} RETURN NULL; END $$"
)


def _changed(columns: tuple[str, ...], differ: str) -> str:
    return " OR ".join(f"OLD.{c} {differ} NEW.{c}" for c in columns)


def _sqlite_triggers() -> list[tuple[str, str]]:
    """SQLite's row triggers: (name, what it follows)."""
    out = []
    for table, columns in WATCHED.items():
        out.append((f"crm_reference_version_{table}_insert", f"AFTER INSERT ON {table}"))
        out.append((f"crm_reference_version_{table}_delete", f"AFTER DELETE ON {table}"))
        out.append(
            (
                f"crm_reference_version_{table}_update",
                f"AFTER UPDATE OF {', '.join(columns)} ON {table} FOR EACH ROW"
                f" WHEN {_changed(columns, 'IS NOT')}",
            )
        )
    return out


def upgrade() -> None:
    op.create_table(
        "reference_versions",
        sa.Column("shard", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard"),
    )
    if op.get_bind().dialect.name != "postgresql":
        for name, event in _sqlite_triggers():
            op.execute(f"CREATE TRIGGER {name} {event} BEGIN {BUMP.format(shard=0)} END")
        return
    op.execute(PG_FUNCTION)
    for table, columns in WATCHED.items():
        # rows in or out: once per statement; an update: per row whose terms changed
        op.execute(
            f"CREATE TRIGGER crm_reference_version AFTER INSERT OR DELETE OR TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION crm_bump_reference_version()"
        )
        op.execute(
            f"CREATE TRIGGER crm_reference_version_update AFTER UPDATE OF {', '.join(columns)}"
            f" ON {table} FOR EACH ROW WHEN ({_changed(columns, 'IS DISTINCT FROM')})"
            " EXECUTE FUNCTION crm_bump_reference_version()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name, _event in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for table in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS crm_reference_version ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS crm_reference_version_update ON {table}")
        op.execute("DROP FUNCTION IF EXISTS crm_bump_reference_version()")
    op.drop_table("reference_versions")
