"""Fixtures of the database tests: the client book behind the API, the reminder world."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from config import Settings
from crmtracker.compose import api_app as create_app
from models.db import make_engine
from models.policy import Policy
from scheduler.service import ReminderScheduler
from streams.apply import Applier
from testkit.api import asgi_client
from testkit.book import NOW, SECRET, fill_book
from testkit.reminders import DAY0, Clock, World


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API over the client book of ``testkit.book`` on its frozen day (tokens:
    ``testkit.book.auth``)."""
    await fill_book(db_url)
    app = create_app(
        Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET, lag_sample_seconds=0)
    )
    app.state.now = lambda: NOW
    async with asgi_client(app) as c:
        yield c


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    """Managers m1 (branch b1) and m2 (b2) in a fresh database, the clock at ``DAY0``."""
    engine = make_engine(db_url, writer=True)
    clock = Clock(DAY0)
    settings = Settings(database_url=db_url, data_dir=tmp_path)
    # the stories send visits dated after the frozen clock (the clock stands still while the
    # story moves on): the future-date check of the apply step (a skew of minutes) would
    # refuse them, so this world allows a year of skew
    policy = Policy(max_future_skew=timedelta(days=366))
    w = World(
        engine=engine,
        applier=Applier(engine, policy, now=clock),
        scheduler=ReminderScheduler(settings, engine, policy=policy, now=clock, targets=[]),
        clock=clock,
    )
    await w.manager("m1")
    await w.manager("m2", branch="b2", supervisor="s2")
    yield w
    await engine.dispose()
