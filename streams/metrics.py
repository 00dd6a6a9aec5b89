"""Prometheus metrics of the worker (prometheus-client, default registry).

The worker counts what it applies and serves these on ``CRM_METRICS_PORT``; counters are per
process, so Prometheus sums them over the workers (``sum(rate(...))``). The API does not
import this module (its ``/metrics`` would show these at zero): it exports the consumer lag
(streams/lag.py) and totals from the database (api/routes/ops.py).
"""

from __future__ import annotations

import json
import logging
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streams.apply import BatchResult, Incoming

log = logging.getLogger("crmtracker.metrics")

EVENTS_APPLIED = Counter(
    "crm_events_applied", "Events applied to the tallies, by event type", ["event_type"]
)
EVENTS_REJECTED = Counter(
    "crm_events_rejected",
    "Messages rejected (dead-lettered), by event type ('unknown' when unreadable)",
    ["event_type"],
)
EVENTS_HELD = Counter("crm_events_held", "Events held until their client or manager is known")
EVENTS_RELEASED = Counter("crm_events_released", "Held events applied once their reference came")
EVENTS_DUPLICATE = Counter("crm_events_duplicate", "Redelivered events skipped (already applied)")
BATCH_APPLY = Histogram(
    "crm_batch_apply_seconds",
    "Time to apply one batch in one database transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END = Histogram(
    "crm_end_to_end_seconds",
    "Apply time minus the event's occurred_at (includes producer and broker delay)",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
)
REBALANCES = Counter("crm_worker_rebalances", "Partition assignments received by this worker")
ASSIGNED_PARTITIONS = Gauge("crm_worker_assigned_partitions", "Partitions this worker holds")
DB_HEALTHY = Gauge("crm_worker_database_healthy", "1 when the last batch reached the database")


def _event_type(msg: Incoming) -> str:
    # Rejected messages are rare: reading their type back is cheap enough.
    try:
        value = json.loads(msg.value or b"")
        kind = value.get("event_type") if isinstance(value, dict) else None
    except (ValueError, UnicodeDecodeError):
        kind = None
    return kind if isinstance(kind, str) and len(kind) <= 64 else "unknown"


def count_rejected(msg: Incoming) -> None:
    EVENTS_REJECTED.labels(_event_type(msg)).inc()


def observe_batch(result: BatchResult, seconds: float) -> None:
    """Count one applied batch (called by the worker's pipeline after the commit)."""
    BATCH_APPLY.observe(seconds)
    DB_HEALTHY.set(1)
    for event_type, n in result.applied.items():
        EVENTS_APPLIED.labels(event_type).inc(n)
    for msg, _reason in result.rejected:
        count_rejected(msg)
    if result.held:
        EVENTS_HELD.inc(result.held)
    if result.released:
        EVENTS_RELEASED.inc(result.released)
    if result.duplicates:
        EVENTS_DUPLICATE.inc(result.duplicates)
    observe_end_to_end(result.latest_occurred)


def observe_end_to_end(occurred: Iterable[datetime], now: datetime | None = None) -> None:
    """One observation per applied event, counted per bucket and added once per batch:
    ``Histogram.observe`` takes a lock per call (about 1.1 µs, 5 % of the worker's CPU on
    up_e2e's mix); the same counts and sum, in a few calls per batch."""
    now = now or datetime.now(UTC)
    bulk_observe(END_TO_END, [max(0.0, (now - at).total_seconds()) for at in occurred])


def bulk_observe(hist: Histogram, amounts: Sequence[float]) -> None:
    """``hist.observe(a)`` for each amount (no labels, no exemplars), bucket by bucket: the
    bucket of an amount is the first upper bound at or above it, as ``observe`` says."""
    if not amounts:
        return
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another prometheus-client
        for a in amounts:
            hist.observe(a)
        return
    counts = [0] * len(bounds)
    for a in amounts:
        counts[bisect_left(bounds, a)] += 1  # the last bound is +Inf
    total.inc(math.fsum(amounts))
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)


def serve(port: int, addr: str = "0.0.0.0") -> bool:
    """Start the worker's metrics endpoint (``CRM_METRICS_PORT``); 0 leaves it off."""
    if not port:
        return False
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:  # e.g. the port is taken: keep applying events, say so loudly
        log.error("cannot serve metrics on port %d: %s; the worker runs without them", port, exc)
        return False
    log.info("metrics on :%d/metrics", port)
    return True


__all__ = ["observe_batch", "serve"]
