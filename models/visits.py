"""Visit rules (DOMAIN.md "Visits") as plain functions: what a visit resets, when a client
is next due, how overdue it is. No database, no broker, no clock of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from models.policy import Policy

REMINDER_KINDS = ("visit", "post_loan_check")
REMINDER_STATUSES = ("open", "acked", "snoozed", "escalated", "resolved")
ACTIVE_STATUSES = ("open", "acked", "snoozed", "escalated")
"""Every status but ``resolved``: the reminder still asks for a visit."""

_DAY = timedelta(days=1)


def resets_post_loan_clock(method: str, kind: str) -> bool:
    """Only an on-site post-loan check or surprise visit counts as a post-loan check."""
    return method == "on_site" and kind in ("post_loan_check", "surprise")


def visit_interval_days(tier: str | None, override: int | None, policy: Policy) -> int:
    """The client's own interval if set, else the policy's interval for its tier."""
    if override is not None:
        return override
    if tier is None:
        return policy.default_visit_interval_days
    return policy.visit_interval_days.get(tier, policy.default_visit_interval_days)


@dataclass(frozen=True, slots=True)
class ClientClock:
    """What the due dates of one client depend on."""

    tier: str | None
    credit_client: bool
    visit_interval_days: int | None
    assigned_at: datetime
    last_visit_at: datetime | None
    last_post_loan_at: datetime | None


@dataclass(frozen=True, slots=True)
class DueDates:
    visit: datetime
    post_loan_check: datetime | None

    def of(self, kind: str) -> datetime | None:
        return self.visit if kind == "visit" else self.post_loan_check


def due_dates(client: ClientClock, policy: Policy) -> DueDates:
    """Due = last qualifying visit (its occurred_at) + interval; never visited: the
    assignment in force + interval. Post-loan checks are due for credit clients only."""
    interval = visit_interval_days(client.tier, client.visit_interval_days, policy)
    visit = (client.last_visit_at or client.assigned_at) + timedelta(days=interval)
    post_loan = None
    if client.credit_client:
        start = client.last_post_loan_at or client.assigned_at
        post_loan = start + timedelta(days=policy.post_loan_interval_days)
    return DueDates(visit=visit, post_loan_check=post_loan)


def overdue_days(due_at: datetime, now: datetime) -> int:
    """Whole days since the due instant (floor); 0 on the due day, negative before it."""
    return (now - due_at) // _DAY


def escalation_due(due_at: datetime, policy: Policy) -> datetime:
    """The instant an unresolved reminder is escalated to the supervisor."""
    return due_at + timedelta(days=policy.escalation_grace_days)


def snooze_bound(now: datetime, policy: Policy) -> datetime:
    """The latest instant a snooze may run to."""
    return now + timedelta(days=policy.max_snooze_days)
