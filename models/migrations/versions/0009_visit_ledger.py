"""visit ledger (notes encrypted) and calendar feed tokens; notes out of stored raw messages

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-03 16:50:00
"""

import base64
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import models.tables

revision: str = "0009"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "visits",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("manager_id", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("notes_sealed", sa.Text(), nullable=True),
        sa.Column("received_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_visits_client", "visits", ["client_id", "occurred_at"])
    op.create_index("ix_visits_manager", "visits", ["manager_id", "occurred_at"])
    op.create_table(
        "feed_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("manager_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("revoked_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_feed_tokens_manager_id", "feed_tokens", ["manager_id"])
    _backfill()


def _backfill() -> None:
    """Visits already stored: into the ledger with their notes sealed, and their notes out
    of ``events.value`` and ``rejected_events.value_b64`` (key: the process's settings)."""
    from models import visit_ledger
    from models.decode import decode_event
    from models.events import InvalidEvent

    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT event_id, value FROM events WHERE event_type = 'visit.logged'")
    ).all()
    if rows:
        cipher = visit_ledger.current()
        now = datetime.now(UTC)
        visits = sa.insert(models.tables.VisitRow)
        for event_id, value in rows:
            raw = value.encode()
            try:
                ev = decode_event(raw)
            except InvalidEvent:
                continue
            bind.execute(visits, visit_ledger.visit_rows([ev], now, cipher))
            kept = visit_ledger.stored_value(ev, raw)
            if kept is not None and kept is not raw:
                bind.execute(
                    sa.text("UPDATE events SET value = :v WHERE event_id = :e"),
                    {"v": kept.decode(), "e": event_id},
                )
    for rid, b64 in bind.execute(
        sa.text("SELECT id, value_b64 FROM rejected_events WHERE value_b64 IS NOT NULL")
    ).all():
        raw = base64.b64decode(b64)
        kept = visit_ledger.stored_raw(raw)
        if kept is not None and kept is not raw:
            bind.execute(
                sa.text("UPDATE rejected_events SET value_b64 = :v WHERE id = :i"),
                {"v": base64.b64encode(kept).decode(), "i": rid},
            )


def downgrade() -> None:
    op.drop_index("ix_feed_tokens_manager_id", table_name="feed_tokens")
    op.drop_table("feed_tokens")
    op.drop_index("ix_visits_manager", table_name="visits")
    op.drop_index("ix_visits_client", table_name="visits")
    op.drop_table("visits")
