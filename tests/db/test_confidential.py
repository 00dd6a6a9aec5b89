"""Visit notes and client names are confidential: they never reach logs or reasons."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from crmtracker.cli import configure_logging
from models.policy import Policy
from models.tables import ManagerRow
from streams.apply import Applier, Incoming
from streams.worker import Pipeline
from testkit.db import Engines
from testkit.feed import Feed, env

NOTE = "CONFIDENTIAL-NOTE-" + "n" * 30
NAME = "CONFIDENTIAL-NAME-Acme Holdings"


async def test_database_errors_never_carry_statement_parameters(
    db_url: str, engines: Engines
) -> None:
    engine = engines(db_url, writer=True)
    row = {
        "manager_id": "m1",
        "name": NAME,
        "branch_id": "b1",
        "active": True,
        "updated_at": __import__("datetime").datetime.now(__import__("datetime").UTC),
    }
    async with engine.begin() as conn:
        await conn.execute(insert(ManagerRow).values(**row))
    with pytest.raises(IntegrityError) as err:
        async with engine.begin() as conn:
            await conn.execute(insert(ManagerRow).values(**row))
    assert NAME not in str(err.value)


async def test_worker_logs_and_reasons_hold_no_notes_or_names(
    db_url: str, caplog: pytest.LogCaptureFixture, engines: Engines
) -> None:
    configure_logging("DEBUG")  # as `CRM_LOG_LEVEL=DEBUG crm-tracker worker` would
    caplog.set_level(logging.DEBUG)
    engine = engines(db_url, writer=True)
    dead: list[tuple[Incoming, str]] = []

    async def deadletter(m: Incoming, reason: str) -> None:
        dead.append((m, reason))

    pipeline = Pipeline(Applier(engine, Policy()), deadletter, max_backoff=0.05)
    feed = Feed()
    visit = dict(client_id="c1", manager_id="m1", method="on_site", kind="routine")
    await pipeline.handle(
        [
            feed.msg(
                "crm.clients",
                env(
                    "c",
                    "client.upserted",
                    "2026-11-01T09:00:00+08:00",
                    client_id="c1",
                    manager_id="m1",
                    name=NAME,
                ),
            ),
            # held (manager unknown), too long, and of the wrong type
            feed.msg(
                "crm.visits",
                env("v1", "visit.logged", "2026-11-02T09:00:00+08:00", **visit, notes=NOTE),
            ),
            feed.msg(
                "crm.visits",
                env("v2", "visit.logged", "2026-11-02T09:00:00+08:00", **visit, notes=NOTE * 200),
            ),
            feed.msg(
                "crm.visits",
                env("v3", "visit.logged", "2026-11-02T09:00:00+08:00", **visit, notes=[NOTE]),
            ),
            feed.msg(
                "crm.clients",
                env(
                    "c2",
                    "client.upserted",
                    "2026-11-01T09:00:00+08:00",
                    client_id="c2",
                    manager_id="m1",
                    name=[NAME],
                ),
            ),
        ]
    )
    assert len(dead) == 3
    for _, reason in dead:
        assert NOTE not in reason and NAME not in reason
    assert NOTE not in caplog.text and NAME not in caplog.text
