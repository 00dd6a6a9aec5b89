"""Reminder rules (DOMAIN.md "Visits", README "Visits and reminders", "Reminder channels") as
plain functions: when a client is due, what settles a reminder, when it escalates, how long a
snooze may run, when a message to people may go out. No database, no broker, no clock of
their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo

from models.balances import ALERT_KINDS
from models.digest import DIGEST, NoticeRules
from models.policy import Policy
from models.visits import visit_interval_days

OVERDUE_STATUSES = ("open", "acked", "escalated")
"""What a digest lists as overdue (a snoozed reminder sleeps until its snooze runs out)."""
ESCALATING_STATUSES = ("open", "acked")
"""What escalates once its grace is over (a snoozed one when it wakes, if still unanswered)."""


# --- due dates -----------------------------------------------------------------------------
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


@cache
def _days(n: int) -> timedelta:
    """``timedelta(days=n)``, built once per interval (the worker asks for it per client)."""
    return timedelta(days=n)


def due_dates(client: ClientClock, policy: Policy) -> DueDates:
    """Due = last qualifying visit (its occurred_at) + interval; never visited: the
    assignment in force + interval. Post-loan checks are due for credit clients only."""
    interval = visit_interval_days(client.tier, client.visit_interval_days, policy)
    visit = (client.last_visit_at or client.assigned_at) + _days(interval)
    post_loan = None
    if client.credit_client:
        start = client.last_post_loan_at or client.assigned_at
        post_loan = start + _days(policy.post_loan_interval_days)
    return DueDates(visit=visit, post_loan_check=post_loan)


def later(stored: datetime | None, seen: datetime | None) -> datetime | None:
    """A clock moves forward, never back: the later of the stored and the new instant."""
    if seen is not None and (stored is None or stored < seen):
        return seen
    return stored


def alert_due_at(day: date, tz: ZoneInfo) -> datetime:
    """An alert (``outflow``, ``tier_drop``) about a bank date is due when that date closed."""
    return datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(days=1)


# --- what becomes of an active reminder ----------------------------------------------------
Settlement = Literal["resolve", "move"] | None


def settlement(
    kind: str,
    due_at: datetime,
    manager_id: str,
    due: DueDates | None,
    client_manager: str | None,
    latest_visit: datetime | None,
) -> Settlement:
    """An active reminder after its client's due dates were recomputed: ``resolve`` when it
    no longer asks for anything (a visit reminder whose due instant is no longer the client's:
    a qualifying visit, a tier or override change, credit withdrawn; an alert answered by a
    visit made after it), ``move`` when the client now has another manager, else None."""
    if kind in ALERT_KINDS:
        if latest_visit is not None and latest_visit >= due_at:
            return "resolve"
    elif due is None or due.of(kind) != due_at:
        return "resolve"
    if due is not None and manager_id != client_manager:
        return "move"
    return None


def escalation_cutoff(now: datetime, policy: Policy) -> datetime:
    """Reminders due at or before this instant and still unanswered have outlived their
    grace period (``escalation_grace_days``) and go to the supervisor."""
    return now - timedelta(days=policy.escalation_grace_days)


def heads_up_horizon(now: datetime, policy: Policy) -> datetime:
    """ "Due in N days" notices cover the due instants after ``now`` up to this one."""
    return now + timedelta(days=policy.heads_up_days)


def snooze_bound(now: datetime, policy: Policy) -> datetime:
    """The latest instant a snooze may run to."""
    return now + timedelta(days=policy.max_snooze_days)


# --- when messages to people may go out ----------------------------------------------------
def in_quiet_hours(t: datetime, rules: NoticeRules) -> bool:
    """True when ``t`` (any zone) falls in the bank's quiet hours."""
    local = t.astimezone(rules.tz)
    if rules.quiet_weekends and local.weekday() >= 5:
        return True
    start, end = rules.quiet_start, rules.quiet_end
    if start is None or end is None or start == end:
        return False
    now = local.time()
    if start < end:  # e.g. 12:00-13:30
        return start <= now < end
    return now >= start or now < end  # across midnight, e.g. 21:00-08:00


def quiet_ends(t: datetime, rules: NoticeRules) -> datetime:
    """The first instant at or after ``t`` outside quiet hours (``t`` itself if not quiet)."""
    if not in_quiet_hours(t, rules):
        return t
    local = t.astimezone(rules.tz)
    for step in range(9):  # at most a weekend plus a night
        d = local.date() + timedelta(days=step)
        candidates = [datetime.combine(d, time(0), rules.tz)]
        if rules.quiet_end is not None:
            candidates.append(datetime.combine(d, rules.quiet_end, rules.tz))
        for c in sorted(candidates):
            if c > local and not in_quiet_hours(c, rules):
                return c
    return t  # every hour quiet (a misconfiguration): do not hold forever


def release_at(event_type: str, t: datetime, rules: NoticeRules) -> datetime:
    """When a message of this type may go out, earliest ``t``: escalations (and machine
    events) at once, anything else not before quiet hours end."""
    if event_type != DIGEST:
        return t
    return quiet_ends(t, rules)


def digest_day(now: datetime, rules: NoticeRules) -> date | None:
    """The local day whose digest is due at ``now``, or None (before the digest time, or in
    quiet hours: a digest time inside quiet hours is reached when they end)."""
    if in_quiet_hours(now, rules):
        return None
    local = now.astimezone(rules.tz)
    if local.time() < rules.digest_time:
        return None
    return local.date()
