"""The configuration and the composition root without servers: frozen settings, the child
environment's one rule, topics created by one spec, the worker composed both ways."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config import Settings
from crmtracker import compose


def test_settings_are_frozen_and_replaced_builds_a_new_value(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    with pytest.raises(ValidationError):
        s.batch_size = 3
    assert s.worker.db_url.startswith("sqlite+aiosqlite://")
    t = s.replaced(database_url="postgresql://u@h/db", reminder_scan_seconds=10)
    assert t.db_url == t.worker.db_url == "postgresql+asyncpg://u@h/db"
    assert t.scheduler.reminder_scan_seconds == 10 and "reminder_scan_seconds" in t.model_fields_set
    assert s.db_url.startswith("sqlite+aiosqlite://") and s.scheduler.reminder_scan_seconds == 60


def test_child_env_carries_every_setting_but_the_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("CRM_"):
            monkeypatch.delenv(name)
    s = Settings(
        data_dir=tmp_path,
        batch_size=77,
        api_read_cache=False,
        webhook_urls=["https://hook.example/x"],
        quiet_hours="off",
        topic_prefix="t.",
        fx_rates={"USD": "7.10"},
        auth_secret="s" * 40,
        smtp_password="pw",
    )
    env = s.child_env()
    assert "CRM_AUTH_SECRET" not in env and "CRM_SMTP_PASSWORD" not in env
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    child = Settings()
    secret = {"auth_secret", "smtp_password"}
    same = {n for n in Settings.model_fields if n not in secret}
    assert {n: getattr(child, n) for n in same if n != "data_dir"} == {
        n: getattr(s, n) for n in same if n != "data_dir"
    } | {
        "kafka_bootstrap": s.bootstrap,
        "kafka_session_timeout": s.session_timeout,
        "kafka_heartbeat_interval": s.heartbeat_interval,
        "database_url": s.db_url,
    }
    assert child.data_dir == tmp_path.resolve() and child.policy == s.policy
    assert child.child_env() == env


def test_reference_topics_are_compacted_by_every_creator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmtracker import broker
    from streams import worker

    s = Settings(data_dir=tmp_path, topic_partitions=3)
    specs = {spec.name: spec for spec in s.topics.specs}
    assert {n for n, spec in specs.items() if spec.compacted} == {"crm.clients", "crm.managers"}

    # the worker's faust topics declare (when missing) what the spec says
    app = worker.faust_app(s.worker)
    for spec in specs.values():
        topic = worker.faust_topic(app, spec)
        assert (topic.partitions, topic.replicas, dict(topic.config)) == (
            spec.partitions,
            spec.replication,
            dict(spec.config),
        )

    # and so does the admin client of `up`
    created: list[Any] = []

    class Admin:
        def __init__(self, **kwargs: Any) -> None:
            pass

        async def start(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return []

        async def create_topics(self, topics: list[Any]) -> None:
            created.extend(topics)

        async def close(self) -> None:
            pass

    monkeypatch.setattr(broker, "AIOKafkaAdminClient", Admin)
    asyncio.run(broker.ensure_topics(s))
    assert {t.name: (t.num_partitions, t.topic_configs) for t in created} == {
        n: (3, dict(spec.config)) for n, spec in specs.items()
    }


@pytest.mark.parametrize("consumer", ["direct", "agents"])
def test_the_worker_is_composed_either_way(tmp_path: Path, consumer: str) -> None:
    from streams.worker import DirectConsumer, Pipeline

    app = compose.worker_app(Settings(data_dir=tmp_path, consumer=consumer, batch_size=9))
    pipeline = app.pipeline  # type: ignore[attr-defined]
    assert isinstance(pipeline, Pipeline) and pipeline.max_backoff == 30.0
    direct = [s for s in app._extra_services if isinstance(s, DirectConsumer)]
    assert len(direct) == (consumer == "direct")
    assert all(d.settings.batch_size == 9 and d.pipeline is pipeline for d in direct)
    assert len(app.agents) == (0 if consumer == "direct" else 6)


def test_the_signing_secret_is_made_once(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    first = compose.signing_secret(s)
    assert len(first) >= 48 and compose.signing_secret(s) == first
    assert compose.signing_secret(Settings(data_dir=tmp_path, auth_secret="x" * 40)) == "x" * 40


@pytest.mark.parametrize(
    ("url", "lanes"), [(None, 1), ("postgresql://u@127.0.0.1:9/db", 3)], ids=["sqlite", "pg"]
)
def test_the_direct_consumer_gets_a_pipeline_per_group(
    tmp_path: Path, url: str | None, lanes: int
) -> None:
    """PostgreSQL: ``apply_concurrency`` pipelines, each with an applier (and kept terms) of
    its own; SQLite has one writer: one, whatever the setting."""
    from streams.worker import DirectConsumer

    settings = Settings(data_dir=tmp_path, database_url=url, apply_concurrency=3)
    app = compose.worker_app(settings)
    (direct,) = [s for s in app._extra_services if isinstance(s, DirectConsumer)]
    assert len(direct.pipelines) == lanes
    assert len({id(p.applier) for p in direct.pipelines}) == lanes
    assert len({id(p.applier.ledger) for p in direct.pipelines}) == lanes
    assert direct.pipelines[0] is app.pipeline  # type: ignore[attr-defined]
