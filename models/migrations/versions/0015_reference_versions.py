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

# what each table's trigger watches: None for every column (the columns of the terms only,
# so that due dates and tiers written per batch do not move the counter)
WATCHED: dict[str, tuple[str, ...] | None] = {
    "clients": ("manager_id", "claim_ratio", "origin"),
    "client_assignments": None,
    "managers": ("branch_id", "active"),
}

# one bump: PostgreSQL per statement, on a shard chosen by backend (as data_versions, 0006);
# SQLite per row (it has row triggers only), on one shard (one writer at a time)
BUMP = (
    "INSERT INTO reference_versions (shard, version) VALUES ({shard}, 1) "
    "ON CONFLICT (shard) DO UPDATE SET version = reference_versions.version + 1;"
)
PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION crm_bump_reference_version() RETURNS trigger LANGUAGE plpgsql"
    f" AS $$ BEGIN {BUMP.format(shard='pg_backend_pid() % 16')} RETURN NULL; END $$"
)


def _update(columns: tuple[str, ...] | None) -> str:
    return "UPDATE" if columns is None else f"UPDATE OF {', '.join(columns)}"


def _sqlite_triggers() -> list[tuple[str, str]]:
    """SQLite's row triggers: (name, what it follows)."""
    return [
        (f"crm_reference_version_{table}_{what.split()[0].lower()}", f"AFTER {what} ON {table}")
        for table, columns in WATCHED.items()
        for what in ("INSERT", _update(columns), "DELETE")
    ]


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
        op.execute(
            f"CREATE TRIGGER crm_reference_version AFTER INSERT OR {_update(columns)} "
            f"OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION crm_bump_reference_version()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name, _event in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for table in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS crm_reference_version ON {table}")
        op.execute("DROP FUNCTION IF EXISTS crm_bump_reference_version()")
    op.drop_table("reference_versions")
