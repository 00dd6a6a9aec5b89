"""The Alembic migrations build exactly the schema the tables in models/tables.py describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from models.tables import Base


def test_migrations_match_the_models(db_url: str) -> None:
    import asyncio

    from models.db import make_engine

    async def diff() -> list[Any]:
        engine = make_engine(db_url)
        async with engine.connect() as conn:

            def compare(sync_conn: Any) -> list[Any]:
                ctx = MigrationContext.configure(sync_conn, opts={"compare_type": False})
                return list(compare_metadata(ctx, Base.metadata))

            result = await conn.run_sync(compare)
        await engine.dispose()
        return result

    changes = asyncio.run(diff())
    assert changes == [], changes
