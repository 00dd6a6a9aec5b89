"""The worker's metric bookkeeping, without a broker."""

from __future__ import annotations

import json
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from streams import metrics
from streams.apply import BatchResult, Incoming
from testkit.db import Engines


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def msg(value: bytes) -> Incoming:
    return Incoming("bank.transactions", 0, 7, b"k", value)


def test_a_batch_is_counted_by_type() -> None:
    before = {
        "tx": value("crm_events_applied_total", event_type="transaction.posted"),
        "visit": value("crm_events_applied_total", event_type="visit.logged"),
        "bad_tx": value("crm_events_rejected_total", event_type="transaction.posted"),
        "bad_unknown": value("crm_events_rejected_total", event_type="unknown"),
        "held": value("crm_events_held_total"),
        "e2e": value("crm_end_to_end_seconds_count"),
        "e2e_sum": value("crm_end_to_end_seconds_sum"),
        "batches": value("crm_batch_apply_seconds_count"),
    }
    now = datetime.now(UTC)
    result = BatchResult(
        applied=Counter({"transaction.posted": 3, "visit.logged": 1}),
        rejected=[
            (msg(json.dumps({"event_type": "transaction.posted"}).encode()), "amount < 0"),
            (msg(b"\xff not json"), "not JSON"),
            (msg(b"[1, 2]"), "not an object"),
        ],
        held=2,
        latest_occurred=[now - timedelta(seconds=10), now - timedelta(seconds=20)],
    )
    metrics.observe_batch(result, 0.05)
    assert value("crm_events_applied_total", event_type="transaction.posted") == before["tx"] + 3
    assert value("crm_events_applied_total", event_type="visit.logged") == before["visit"] + 1
    assert (
        value("crm_events_rejected_total", event_type="transaction.posted") == before["bad_tx"] + 1
    )
    assert value("crm_events_rejected_total", event_type="unknown") == before["bad_unknown"] + 2
    assert value("crm_events_held_total") == before["held"] + 2
    assert value("crm_end_to_end_seconds_count") == before["e2e"] + 2
    assert 29 < value("crm_end_to_end_seconds_sum") - before["e2e_sum"] < 40
    assert value("crm_batch_apply_seconds_count") == before["batches"] + 1
    assert value("crm_worker_database_healthy") == 1


def test_metrics_port_taken_does_not_stop_the_worker() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert metrics.serve(port, addr="127.0.0.1") is False
    assert metrics.serve(0) is False


async def test_pipeline_counts_an_unappliable_message_as_rejected(
    sqlite_url: str, engines: Engines
) -> None:
    from models.policy import Policy
    from streams.worker import Pipeline
    from testkit.fakes import FlakyApplier
    from testkit.feed import Feed, env

    engine = engines(sqlite_url, writer=True)
    applier = FlakyApplier(engine, Policy(), failures=2, poison="POISON")
    healthy: list[float] = []

    async def deadletter(m: Incoming, reason: str) -> None:
        pass

    def on_result(result: BatchResult, seconds: float) -> None:
        healthy.append(value("crm_worker_database_healthy"))  # before this batch is counted
        metrics.observe_batch(result, seconds)

    pipeline = Pipeline(applier, deadletter, max_backoff=0.05, on_result=on_result)
    feed = Feed()
    batch = [
        feed.msg(
            "crm.managers",
            env(
                f"m{i}",
                "manager.upserted",
                "2026-08-01T00:00:00+08:00",
                manager_id=f"m{i}",
                branch_id="b",
                name="POISON" if i == 2 else f"n{i}",
            ),
        )
        for i in range(4)
    ]
    rejected = value("crm_events_rejected_total", event_type="manager.upserted")
    applied = value("crm_events_applied_total", event_type="manager.upserted")
    await pipeline.handle(batch)
    assert value("crm_events_rejected_total", event_type="manager.upserted") == rejected + 1
    assert value("crm_events_applied_total", event_type="manager.upserted") == applied + 3
    assert healthy[0] == 0  # the outage before the first success was visible
    assert value("crm_worker_database_healthy") == 1


def test_bulk_observe_gives_what_observe_gives() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    reg = CollectorRegistry()
    bounds = (0.1, 0.25, 1, 10)
    one = Histogram("one_by_one", "x", buckets=bounds, registry=reg)
    bulk = Histogram("in_bulk", "x", buckets=bounds, registry=reg)
    amounts = [0.0, 0.1, 0.1000001, 0.25, 0.3, 1.0, 9.99, 10.0, 10.5, 5000.0, 0.05]
    for a in amounts:
        one.observe(a)
    metrics.bulk_observe(bulk, amounts)
    metrics.bulk_observe(bulk, [])
    for le in ("0.1", "0.25", "1.0", "10.0", "+Inf"):
        got = reg.get_sample_value("in_bulk_bucket", {"le": le})
        assert got == reg.get_sample_value("one_by_one_bucket", {"le": le}), le
    assert reg.get_sample_value("in_bulk_count") == len(amounts)
    assert reg.get_sample_value("in_bulk_sum") == pytest.approx(sum(amounts))
    assert reg.get_sample_value("in_bulk_bucket", {"le": "0.1"}) == 3
