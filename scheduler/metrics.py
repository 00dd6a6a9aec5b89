"""Prometheus counters of the scheduler (default registry; ``/metrics`` exposes them)."""

from __future__ import annotations

from prometheus_client import Counter

REMINDERS_FIRED = Counter(
    "crm_reminders_fired_total", "Reminders fired (new overdue reminders)", ["kind"]
)
REMINDERS_ESCALATED = Counter(
    "crm_reminders_escalated_total", "Reminders escalated to the supervisor", ["kind"]
)
WEBHOOK_FAILURES = Counter(
    "crm_webhook_failures_total", "Failed webhook delivery attempts (each retry counts)"
)
DELIVERY_FAILURES = Counter(
    "crm_reminder_delivery_failures_total",
    "Failed reminder delivery attempts by target kind",
    ["target"],
)
NOTICES = Counter(
    "crm_reminder_notices_total",
    "Messages to people written (notice.digest, notice.escalation)",
    ["type"],
)
