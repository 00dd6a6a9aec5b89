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


def test_the_head_read_from_the_scripts_is_alembics(tmp_path: Any) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from models.db import MIGRATIONS, head_revision

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()
    # two heads, or a script that does not say its revision plainly: no answer
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f'revision = "{name[0]}"\ndown_revision = None\n')
    assert head_revision(tmp_path) is None
    (tmp_path / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    assert head_revision(tmp_path) == "b"
    (tmp_path / "c.py").write_text('revision = REVISION\ndown_revision = "b"\n')
    assert head_revision(tmp_path) is None


def test_upgrade_skips_alembic_only_at_the_head(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from models.db import MIGRATIONS, _at_head, head_revision, upgrade

    assert _at_head(db_url)  # the fixture's database is migrated
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    command.downgrade(cfg, "-1")
    assert not _at_head(db_url)
    upgrade(db_url)  # behind the head: Alembic's path, back at the head
    assert _at_head(db_url)
    assert head_revision() is not None
