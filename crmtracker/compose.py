"""The composition root: the one place that builds the product's parts from the settings.

Engines, the token signing secret, the visit notes cipher, the worker's pipeline and
consumer, the API and the scheduler are made here, each from its component's config
(``config.Settings.worker``, ``.api``, ``.scheduler``, ``.lag``); the packages below
(``models``, ``streams``, ``api``, ``scheduler``) take what they are given and never import
this package.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from config import Settings
from models import visit_ledger
from models.db import is_sqlite, make_engine

if TYPE_CHECKING:
    import faust
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncEngine

    from streams.lag import LagMonitor


# --- database -------------------------------------------------------------------------------
def engine(settings: Settings, *, writer: bool = False, pool_size: int = 5) -> AsyncEngine:
    """The database engine of these settings (``writer``: takes SQLite's write lock)."""
    return make_engine(settings.db_url, writer=writer, pool_size=pool_size)


@asynccontextmanager
async def engine_scope(settings: Settings, *, writer: bool = False) -> AsyncIterator[AsyncEngine]:
    """An engine for the time of a command, disposed of after it."""
    built = engine(settings, writer=writer)
    try:
        yield built
    finally:
        await built.dispose()


# --- secrets --------------------------------------------------------------------------------
def signing_secret(settings: Settings) -> str:
    """The token secret: configured, or generated once in the data directory."""
    if settings.auth_secret is not None:
        return settings.auth_secret.get_secret_value()
    path = settings.data_dir / "signing-secret"
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def seal_notes_with(settings: Settings) -> None:
    """This process seals visit notes with these settings' key (``CRM_NOTES_KEYS`` or the
    data directory's key file)."""
    visit_ledger.use_settings(settings)


# --- worker ---------------------------------------------------------------------------------
def worker_app(settings: Settings) -> faust.App:
    """The worker: its faust app, engine, pipeline and consumer (``settings.consumer``);
    nothing connects until the app starts."""
    from streams import metrics, worker
    from streams.apply import Applier

    cfg = settings.worker
    app = worker.faust_app(cfg)
    # PostgreSQL: up to ``apply_concurrency`` groups of a batch applied at once, each on its
    # own connection (+ the positions timer and the rejected-message checks); SQLite has one
    # writer: one group
    lanes = 1 if is_sqlite(settings.db_url) else cfg.apply_concurrency
    db = engine(settings, writer=True, pool_size=max(5, lanes + 3))
    seal_notes_with(settings)  # notes sealed with this deployment's key
    dlt = worker.faust_topic(app, cfg.topics.spec(cfg.topics.deadletter))
    sender = worker.deadletter_sender(app, dlt)
    # one Applier (and its kept terms) per group: a transaction's reads are kept only once
    # it commits, so concurrent transactions must not share them (like workers of their own)
    pipelines = [
        worker.Pipeline(
            Applier(db, cfg.policy),
            sender,
            max_backoff=cfg.db_retry_max_backoff,
            on_result=metrics.observe_batch,
        )
        for _ in range(lanes)
    ]
    pipeline = pipelines[0]
    app.pipeline = pipeline  # type: ignore[attr-defined]  # our attribute on faust's App
    inputs = [
        worker.faust_topic(app, cfg.topics.spec(name), acks=True) for name in cfg.topics.inputs
    ]
    if cfg.consumer == "direct":
        consumer = worker.DirectConsumer(cfg, pipelines, [dlt, *inputs], loop=app.loop)
        worker.serve_direct(app, consumer, db, cfg.kafka.group_id)
    else:
        worker.serve_agents(app, inputs, pipeline, db, cfg)
    return app


def run_worker(settings: Settings) -> None:
    """``crm-tracker worker``: migrate, then run the worker until signalled."""
    from models.db import upgrade
    from streams import metrics, worker

    upgrade(settings.db_url)
    metrics.serve(settings.metrics_port)
    worker.run(worker_app(settings))


# --- API ------------------------------------------------------------------------------------
def api_app(settings: Settings) -> FastAPI:
    """The HTTP API with its engine (made when it starts), signing secret and notes cipher."""
    from api.main import create_app

    return create_app(
        settings.api,
        # 20 (+20 overflow) connections: under 50 concurrent readers a pool of 5 made most
        # requests open and close an overflow connection of their own
        engine=lambda: engine(settings, pool_size=20),
        secret=signing_secret(settings),
        notes_cipher=visit_ledger.cipher_for(settings),
    )


def lag_monitor(settings: Settings, db: AsyncEngine | None = None) -> LagMonitor:
    from streams.lag import LagMonitor

    return LagMonitor(settings.lag, db)


# --- scheduler ------------------------------------------------------------------------------
async def run_scheduler(settings: Settings, stop: asyncio.Event | Any = None) -> None:
    """The reminder scheduler until ``stop`` is set (``crm-tracker scheduler``, ``up``)."""
    from scheduler.service import run_scheduler as run

    async with engine_scope(settings, writer=True) as db:
        await run(settings.scheduler, db, stop)
