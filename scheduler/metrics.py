"""Prometheus counters of the delivery (default registry; ``/metrics`` exposes them; the
reminders' own: reminders/service.py)."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOK_FAILURES = Counter(
    "crm_webhook_failures_total", "Failed webhook delivery attempts (each retry counts)"
)
DELIVERY_FAILURES = Counter(
    "crm_reminder_delivery_failures_total",
    "Failed reminder delivery attempts by target kind",
    ["target"],
)
