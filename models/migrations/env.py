"""Alembic environment: runs migrations over the async engine."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from models.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    if connection.dialect.name == "postgresql":
        # several processes may start at once: one migrates, the others wait
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7235001)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "models.db.upgrade sets sqlalchemy.url"
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    loop: asyncio.AbstractEventLoop | None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        asyncio.run(_online())
    else:  # called from inside a running loop: run in a fresh thread's loop
        import threading

        t = threading.Thread(target=lambda: asyncio.run(_online()))
        t.start()
        t.join()
