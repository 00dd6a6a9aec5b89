"""The worker's metric bookkeeping, without a broker."""

from __future__ import annotations

import json
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from streams import metrics
from streams.apply import BatchResult, Incoming


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
