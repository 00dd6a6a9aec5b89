"""manager upserts index: a manager's upsert in force without reading all their events

Every manager tally answer reads ``hired_at`` from the manager's newest ``manager.upserted``
message. Through ``ix_events_manager_day`` that read visited every event of the manager
(1.4 ms on SQLite at 1,300 events per manager, and growing with the history); this partial
index holds the upserts only, so it costs the write path nothing for the other events.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_events_manager_upserts ON events (manager_id, occurred_at, event_id) "
        "WHERE event_type = 'manager.upserted'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_events_manager_upserts")
