"""The reminder service: what the worker and the scheduler call.

- The worker, in its apply transaction: :func:`recompute_due` (visits and reference changes
  move the clients' clocks; reminders no longer due are resolved, those of a transferred
  client follow it) and :func:`fire_alerts` (the balance alerts ``outflow``, ``tier_drop``).
- The scheduler: :func:`scan` (wake expired snoozes, fire what is due, heads-ups, the tier
  check, escalate, the morning digests) and :func:`recompute_all` (after a policy change).

Each scan step is a state query ("due and no reminder row yet", "open past the grace
period", "snooze ran out") run page by page by :func:`drain`, one transaction per page, so a
scan missed while the scheduler was down is made up by the next one, and two instances over
one database fire each reminder once (the unique key (client, kind, due_at) and ON CONFLICT
DO NOTHING decide who fires). Every change writes its envelope (reminders/outbox.py) in the
transaction that makes it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple, Protocol

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.digest import (
    DIGEST,
    ESCALATION,
    Item,
    NoticeRules,
    Recipient,
    compose_digest,
    compose_escalation,
    routes,
)
from models.policy import Policy
from models.tables import DUE_COLUMN, HeadsUpRow, ReminderRow
from models.visits import REMINDER_KINDS, overdue_days
from reminders import store
from reminders.outbox import digest_event_id, notice_row, write_events, write_notices
from reminders.rules import (
    alert_due_at,
    digest_day,
    escalation_cutoff,
    heads_up_horizon,
    settlement,
)

SCHEDULER_SOURCE = "crm-tracker-scheduler"
CHUNK = 2000
"""Clients per statement when the worker recomputes due dates."""

# Prometheus counters (default registry; ``/metrics`` exposes them)
REMINDERS_FIRED = Counter(
    "crm_reminders_fired_total", "Reminders fired (new overdue reminders)", ["kind"]
)
REMINDERS_ESCALATED = Counter(
    "crm_reminders_escalated_total", "Reminders escalated to the supervisor", ["kind"]
)
NOTICES = Counter(
    "crm_reminder_notices_total",
    "Messages to people written (notice.digest, notice.escalation)",
    ["type"],
)


# --- one drain loop ------------------------------------------------------------------------
class Page(NamedTuple):
    """What one step of a scan did in its transaction."""

    rows: list[dict[str, Any]]
    """The reminders (or heads-ups) it changed."""
    after: Any = None
    """Where the next step continues; None: nothing left."""
    notices: int = 0
    """Messages to people written with them."""


Step = Callable[[AsyncConnection, Any], Awaitable[Page]]


async def drain(
    engine: AsyncEngine, step: Step, on_page: Callable[[Page], None] | None = None
) -> int:
    """Run ``step`` one transaction after another, each from where the previous one stopped
    (None at first), until it has nothing left; ``on_page`` sees each page once it is
    committed. Returns the rows changed in all."""
    n = 0
    after = None
    while True:
        async with engine.begin() as conn:
            page = await step(conn, after)
        n += len(page.rows)
        if on_page is not None:
            on_page(page)
        if page.after is None:
            return n
        after = page.after


def _more(rows: Sequence[Any], limit: int) -> bool | None:
    """The ``after`` of a step that takes the first ``limit`` rows meeting its condition
    (which changing them ends): go on while a page is full."""
    return True if len(rows) >= limit else None


def _cursor(due: Sequence[Any]) -> store.Cursor | None:
    return (due[-1].due_at, due[-1].client_id) if due else None


# --- the worker's entry points -------------------------------------------------------------
@dataclass
class RecomputeResult:
    changed: int = 0
    resolved: int = 0
    reassigned: int = 0

    def add(self, other: RecomputeResult) -> None:
        self.changed += other.changed
        self.resolved += other.resolved
        self.reassigned += other.reassigned


async def recompute_due(
    conn: AsyncConnection,
    client_ids: Iterable[str],
    policy: Policy,
    now: datetime,
    *,
    source: str,
    visits: Mapping[str, tuple[datetime | None, datetime | None]] | None = None,
) -> RecomputeResult:
    """Recompute the due dates of these clients and settle their reminders accordingly.

    A reminder that no longer asks for anything (reminders/rules.py ``settlement``) is
    resolved and a ``reminder.resolved`` event goes to the outbox; a reminder of a
    transferred client follows the client to its new manager. ``visits``: client → (latest
    visit, latest post-loan check) of the visits being applied; the clients' clocks move
    forward to them (never back) in the same statement.
    """
    out = RecomputeResult()
    ids = sorted(set(client_ids))
    for start in range(0, len(ids), CHUNK):
        part = ids[start : start + CHUNK]
        clocks = await store.move_clocks(conn, part, policy, visits or {})
        out.changed += clocks.changed
        resolve: list[Any] = []
        moved: list[tuple[Any, str | None]] = []
        for rem in await store.active_reminders(conn, part):
            due, manager_id = clocks.dues.get(rem.client_id, (None, None))
            latest = clocks.latest_visit.get(rem.client_id)
            what = settlement(rem.kind, rem.due_at, rem.manager_id, due, manager_id, latest)
            if what == "resolve":
                resolve.append(rem)
            elif what == "move":
                moved.append((rem, manager_id))
        done = await store.resolve(conn, resolve, now)
        out.resolved += await write_events(conn, "reminder.resolved", done, now, policy.tz, source)
        out.reassigned += await store.reassign(conn, moved, now)
    return out


async def fire_alerts(
    conn: AsyncConnection,
    kind: str,
    found: Sequence[tuple[str, date]],
    policy: Policy,
    now: datetime,
    *,
    source: str,
) -> list[dict[str, Any]]:
    """Alert reminders (``outflow``, ``tier_drop``) for (client, bank date): due when that
    bank date closed, to the client's manager now; one per (client, kind, due instant), with
    the visit reminders' lifecycle and delivery (outbox → topic and webhooks)."""
    who = await store.holders(conn, (cid for cid, _d in found))
    rows = [
        store.new_reminder(cid, kind, alert_due_at(day, policy.tz), who[cid], now)
        for cid, day in found
        if cid in who
    ]
    created = await store.add_reminders(conn, rows)
    await write_events(conn, "reminder.fired", created, now, policy.tz, source)
    return created


# --- the scan ------------------------------------------------------------------------------
class TierCheck(Protocol):
    """The balances' tier check (streams/balances.py ``check_tiers``): fires ``tier_drop``
    alerts through :func:`fire_alerts` and returns them."""

    async def __call__(
        self, conn: AsyncConnection, policy: Policy, now: datetime, *, limit: int
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Scan:
    """What one scan needs: its instant and the settings it runs under."""

    now: datetime
    policy: Policy
    rules: NoticeRules
    channels: Sequence[str] = ()
    """The channels that reach people (target names: ``wecom:<branch>``, ``email``, ...)."""
    chunk: int = 5000
    source: str = SCHEDULER_SOURCE
    check_tiers: TierCheck | None = None
    """Run once per scan, on one chunk of clients, before escalation."""


async def fire_due(conn: AsyncConnection, s: Scan, kind: str, after: Any) -> Page:
    """Fire reminders for the next ``chunk`` clients (in due order, after ``after``) whose
    clock of this kind has run out and that have no reminder for that due instant yet; the
    clients stay locked until the reminders commit (store.due_clients).

    The page holds the reminders this call created (another scheduler may have created the
    rest: ON CONFLICT DO NOTHING keeps one per (client, kind, due_at))."""
    due = await store.due_clients(
        conn,
        kind,
        after_due=None,
        until=s.now,
        sent=ReminderRow,
        after=after,
        limit=s.chunk,
        lock=True,
    )
    rows = [store.new_reminder(d.client_id, kind, d.due_at, d, s.now) for d in due]
    created = await store.add_reminders(conn, rows)
    await write_events(conn, "reminder.fired", created, s.now, s.policy.tz, s.source)
    return Page(created, _cursor(due))


async def heads_up_due(conn: AsyncConnection, s: Scan, kind: str, after: Any) -> Page:
    """ "Due in N days" notices (``reminder.heads_up``, policy ``heads_up_enabled``): one per
    (client, kind, due instant) coming due within ``heads_up_days``; same paging as
    :func:`fire_due`. The payload has no reminder yet (``reminder_id`` null, status
    ``upcoming``, negative ``overdue_days``)."""
    due = await store.due_clients(
        conn,
        kind,
        after_due=s.now,
        until=heads_up_horizon(s.now, s.policy),
        sent=HeadsUpRow,
        after=after,
        limit=s.chunk,
        lock=False,
    )
    sent = await store.add_heads_ups(conn, kind, due, s.now)
    await write_events(conn, "reminder.heads_up", sent, s.now, s.policy.tz, s.source)
    return Page(sent, _cursor(due))


async def unsnooze_due(conn: AsyncConnection, s: Scan, _after: Any = None) -> Page:
    """Wake snoozed reminders whose snooze ran out; they fire again (``reminder.fired``)."""
    woken = await store.unsnooze(conn, s.now, limit=s.chunk)
    await write_events(conn, "reminder.fired", woken, s.now, s.policy.tz, s.source)
    return Page(woken, _more(woken, s.chunk))


async def escalate_due(conn: AsyncConnection, s: Scan, _after: Any = None) -> Page:
    """Escalate reminders still unanswered a grace period after their due instant (a departed
    manager's at once), and push one message per supervisor about them, quiet hours or not,
    in the same transaction."""
    done = await store.escalate(conn, s.now, escalation_cutoff(s.now, s.policy), limit=s.chunk)
    await write_events(conn, "reminder.escalated", done, s.now, s.policy.tz, s.source)
    pushes = await write_escalation_notices(conn, done, s.now, s.rules, s.channels, source=s.source)
    return Page(done, _more(done, s.chunk), pushes)


async def tier_drops_due(conn: AsyncConnection, s: Scan, _after: Any = None) -> Page:
    """One chunk of the balances' tier check (``tier_drop`` alerts), if the scan has one."""
    if s.check_tiers is None:
        return Page([])
    return Page(await s.check_tiers(conn, s.policy, s.now, limit=s.chunk))


@dataclass
class ScanResult:
    fired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REMINDER_KINDS, 0))
    escalated: int = 0
    woken: int = 0
    heads_up: int = 0
    escalation_notices: int = 0
    digests: int = 0
    tier_drops: int = 0

    @property
    def total_fired(self) -> int:
        return sum(self.fired.values())


async def scan(engine: AsyncEngine, s: Scan) -> ScanResult:
    """Wake expired snoozes, fire every reminder that is due, heads-ups, the tier check, then
    escalate (a reminder fired late, e.g. after downtime, escalates in the same pass if its
    grace is over), then the morning digests due at ``s.now``."""
    out = ScanResult()
    out.woken = await drain(engine, _step(unsnooze_due, s))
    for kind in REMINDER_KINDS:
        out.fired[kind] = await drain(engine, _step(fire_due, s, kind), _count_fired(kind))
    if s.policy.heads_up_enabled:
        for kind in REMINDER_KINDS:
            out.heads_up += await drain(engine, _step(heads_up_due, s, kind))
    out.tier_drops = await drain(engine, _step(tier_drops_due, s))

    def escalated(page: Page) -> None:
        out.escalation_notices += page.notices
        NOTICES.labels(ESCALATION).inc(page.notices)
        for r in page.rows:
            REMINDERS_ESCALATED.labels(r["kind"]).inc()

    out.escalated = await drain(engine, _step(escalate_due, s), escalated)
    out.digests = await digest(engine, s)
    return out


def _step(fn: Callable[..., Awaitable[Page]], s: Scan, *args: Any) -> Step:
    """A scan step as :func:`drain` runs it: ``fn(conn, s, *args, after)``."""

    def step(conn: AsyncConnection, after: Any) -> Awaitable[Page]:
        return fn(conn, s, *args, after)

    return step


def _count_fired(kind: str) -> Callable[[Page], None]:
    def count(page: Page) -> None:
        if page.rows:
            REMINDERS_FIRED.labels(kind).inc(len(page.rows))

    return count


async def digest(engine: AsyncEngine, s: Scan) -> int:
    """The morning digests due at ``s.now`` (none outside the digest hours, none twice a day
    for one person); their contents are read from the state at this moment."""
    day = digest_day(s.now, s.rules)
    if day is None or not s.channels:
        return 0
    async with engine.begin() as conn:
        n = await write_digests(conn, day, s.now, s.rules, s.channels, source=s.source)
    NOTICES.labels(DIGEST).inc(n)
    return n


async def recompute_all(
    engine: AsyncEngine, policy: Policy, now: datetime, *, source: str, chunk: int = 5000
) -> RecomputeResult:
    """Recompute every client's due dates (after a policy change), one transaction per chunk."""
    out = RecomputeResult()

    async def step(conn: AsyncConnection, last: str | None) -> Page:
        ids = await store.client_ids_after(conn, last or "", chunk)
        if ids:
            out.add(await recompute_due(conn, ids, policy, now, source=source))
        return Page([], ids[-1] if ids else None)

    await drain(engine, step)
    return out


# --- messages to people --------------------------------------------------------------------
def _supervisor_recipient(
    supervisor_id: str | None, branch_id: str | None, known: dict[str, Recipient]
) -> tuple[str, Recipient]:
    """Who receives a branch's escalations: the supervisor (their own channels when they are
    a known manager, else the branch's robots), or the branch's robots when nobody supervises."""
    if supervisor_id is None:
        key = f"branch:{branch_id}"
        return key, Recipient(manager_id=key, branch_id=branch_id)
    r = known.get(supervisor_id) or Recipient(manager_id=supervisor_id, branch_id=branch_id)
    return supervisor_id, r


async def write_escalation_notices(
    conn: AsyncConnection,
    escalated: Sequence[dict[str, Any]],
    now: datetime,
    rules: NoticeRules,
    channels: Iterable[str],
    *,
    source: str,
) -> int:
    """One immediate message per supervisor for the reminders that just escalated (in the
    caller's transaction: the escalation and its message commit together)."""
    channels = set(channels)
    if not escalated or not channels:
        return 0
    names = await store.client_names(conn, (r["client_id"] for r in escalated))
    groups: dict[tuple[str | None, str | None], list[Item]] = defaultdict(list)
    for r in escalated:
        groups[(r["supervisor_id"], r["branch_id"])].append(
            Item(
                client_id=r["client_id"],
                client_name=names.get(r["client_id"]),
                kind=r["kind"],
                due_at=r["due_at"],
                days=overdue_days(r["due_at"], now),
                escalated=False,
                manager_id=r["manager_id"],
            )
        )
    known = await store.recipients(conn, (sup for sup, _b in groups))
    # one message per supervisor: their branches' escalations together
    per_key: dict[str, tuple[Recipient, list[Item]]] = {}
    for (sup, branch), items in sorted(groups.items(), key=lambda kv: str(kv[0])):
        key, recipient = _supervisor_recipient(sup, branch, known)
        per_key.setdefault(key, (recipient, []))[1].extend(items)
    rows = []
    for key, (recipient, items) in sorted(per_key.items()):
        route = routes(recipient, channels)
        if not route:
            continue
        msg = compose_escalation(recipient, items, rules)
        rows.append(
            notice_row(
                ESCALATION, str(uuid.uuid4()), key, recipient, msg, route, now, rules, source
            )
        )
    return await write_notices(conn, rows)


async def write_digests(
    conn: AsyncConnection,
    day: date,
    now: datetime,
    rules: NoticeRules,
    channels: Iterable[str],
    *,
    source: str,
) -> int:
    """The day's digest for everyone who has something in it and has not had it yet (a manager:
    their overdue and coming clients; a supervisor: also what escalated in their branch).

    The day's digests are written in one pass, the first scan at or after the digest time
    outside quiet hours (``digest_days`` records it, so however many schedulers run and
    however often they restart, a day has one pass); whoever has nothing to report then gets
    nothing."""
    channels = set(channels)
    if not channels:
        return 0
    if not await store.claim_digest_day(conn, day, now):
        return 0
    done = await store.digested_since(conn, DIGEST, datetime.combine(day, time(0), rules.tz))
    managers = {m: b for m, b in (await store.active_managers(conn)).items() if m not in done}
    overdue: dict[str, list[Item]] = defaultdict(list)
    team: dict[tuple[str, str | None], list[Item]] = defaultdict(list)
    for r in await store.overdue_reminders(conn, now):
        item = Item(
            client_id=r.client_id,
            client_name=r.name,
            kind=r.kind,
            due_at=r.due_at,
            days=overdue_days(r.due_at, now),
            escalated=r.status == "escalated",
            manager_id=r.manager_id,
        )
        if r.manager_id in managers:
            overdue[r.manager_id].append(item)
        if r.status == "escalated" and r.supervisor_id and r.supervisor_id not in done:
            team[(r.supervisor_id, r.branch_id)].append(item)
    coming: dict[str, list[Item]] = defaultdict(list)
    horizon = now + timedelta(days=rules.coming_days)
    for kind in DUE_COLUMN:
        for cid, name, mid, due in await store.coming_due(conn, kind, now, horizon):
            if mid in managers and due is not None:  # (col > now: never None)
                coming[mid].append(Item(cid, name, kind, due, (due - now).days, manager_id=mid))
    team_by_sup: dict[str, tuple[str | None, list[Item]]] = {}
    for (sup, branch), items in sorted(team.items(), key=lambda kv: str(kv[0])):
        team_by_sup.setdefault(sup, (branch, []))[1].extend(items)
    keys = sorted(set(overdue) | set(coming) | set(team_by_sup))
    known = await store.recipients(conn, keys)
    out = []
    for key in keys:
        recipient = known.get(key) or Recipient(
            manager_id=key, branch_id=team_by_sup.get(key, (managers.get(key), []))[0]
        )
        route = routes(recipient, channels)
        if not route:
            continue
        msg = compose_digest(
            recipient,
            day,
            overdue.get(key, ()),
            coming.get(key, ()),
            rules,
            team=team_by_sup.get(key, (None, []))[1],
        )
        out.append(
            notice_row(
                DIGEST, digest_event_id(key, day), key, recipient, msg, route, now, rules, source
            )
        )
    if not out:
        return 0
    written = await write_notices(conn, out, once=True)
    await store.record_digest_day(conn, day, written)
    return written
