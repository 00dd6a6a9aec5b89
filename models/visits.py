"""Visit rules (DOMAIN.md "Visits") as plain functions: what a visit resets, a client's
visit interval, how overdue it is (the due dates themselves: reminders/rules.py). No
database, no broker, no clock of their own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from models.policy import Policy

REMINDER_KINDS = ("visit", "post_loan_check")
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


def overdue_days(due_at: datetime, now: datetime) -> int:
    """Whole days since the due instant (floor); 0 on the due day, negative before it."""
    return (now - due_at) // _DAY
