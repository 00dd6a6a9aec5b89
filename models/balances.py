"""Balances and daily averages (日均): the rules, and the period queries.

Core banking sends each account's end-of-day balance (``balance.snapshot``). A day without a
snapshot carries the account's last known balance forward (0 before its first one). The
average daily balance of a period is Σ over its days of the end-of-day balance ÷ its days.

What is stored (streams/balances.py writes it): per manager and per branch, the **change** of
the carried balance on the days it changes (``balance_daily``), and the carried balance at the
start of each year (``balance_openings``). With B(d) = opening + Σ changes up to d, a period
[a, b] of n days sums to

    Σ_{d=a..b} B(d) = B(a-1) · n + Σ_{e=a..b} change(e) · (b - e + 1)

so a year's average reads one opening row and at most 366 change rows, and a night's batch
writes one change row per manager and branch instead of rewriting every later day.

Each day is credited to the manager holding the client at the end of that day (the
assignment history; before the first assignment, the first manager): a transfer on
15 November credits the 15th to the new manager.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import one_of
from models.policy import bank_day, money
from models.tables import BalanceDayRow, BalanceOpeningRow, BalanceSnapshotRow, ExactDecimal

LINES = ("liability", "asset")
ZERO = Decimal(0)

Segment = tuple[date | None, str, str | None]
"""(first bank day or None for 'since always', manager_id, branch_id): the holder from that
day until the next segment's first day."""


def holder_segments(
    history: Sequence[tuple[datetime, str]], branches: dict[str, str | None], tz: ZoneInfo
) -> list[Segment]:
    """Who holds the client on each bank day, from its assignment history (oldest first).

    The holder of day d is the manager of the last assignment made before day d ended; days
    before the first assignment go to the first manager. Several assignments on one day: the
    last one holds that day.
    """
    out: list[Segment] = []
    for i, (at, manager_id) in enumerate(history):
        first = None if i == 0 else bank_day(at, tz)
        while out and out[-1][0] is not None and first is not None and out[-1][0] >= first:
            out.pop()  # superseded the same day
        if out and out[-1][1] == manager_id:
            continue  # the same holder goes on
        out.append((first, manager_id, branches.get(manager_id)))
    return out


def dump_segments(segments: Sequence[Segment]) -> str:
    return json.dumps([[s.isoformat() if s else None, m, b] for s, m, b in segments])


@lru_cache(maxsize=8192)
def load_segments(text: str) -> tuple[Segment, ...]:
    """Stored segments, parsed once per distinct text: a client never handed over has one
    segment, so a bank's clients share as many texts as it has managers."""
    return tuple((date.fromisoformat(s) if s else None, m, b) for s, m, b in json.loads(text))


Deltas = dict[tuple[str, str, date], dict[str, Decimal]]
"""(scope, owner_id, day) → {line: change of the carried balance}."""


def add_change(
    out: Deltas,
    segments: Sequence[Segment],
    line: str,
    amount: Decimal,
    start: date,
    stop: date | None,
) -> None:
    """Credit a change of ``amount`` to the client's ``line`` balance on the days
    [start, stop) (stop None: from then on) to whoever holds the client on those days."""
    if not amount:
        return
    for i, (first, manager_id, branch_id) in enumerate(segments):
        end = segments[i + 1][0] if i + 1 < len(segments) else None
        lo = start if first is None else max(start, first)
        hi = stop if end is None else (end if stop is None else min(stop, end))
        if hi is not None and lo >= hi:
            continue
        for scope, owner in (("manager", manager_id), ("branch", branch_id)):
            if owner is None:
                continue
            _bump(out, (scope, owner, lo), line, amount)
            if hi is not None:
                _bump(out, (scope, owner, hi), line, -amount)


def _bump(out: Deltas, key: tuple[str, str, date], line: str, amount: Decimal) -> None:
    row = out.get(key)
    if row is None:
        row = out[key] = {line: ZERO for line in LINES}
    row[line] += amount


def drop_zeros(deltas: Deltas) -> Deltas:
    return {k: v for k, v in deltas.items() if any(v.values())}


ALERT_KINDS = ("outflow", "tier_drop")
"""Reminder kinds raised by balances (大额资金流出, 客户等级下降); a visit after one answers it."""


def outflow(before: Decimal, after: Decimal, policy: Any) -> bool:
    """A fall of a client's deposits past the policy's share (of ``before``) or amount."""
    fall = before - after
    return fall > 0 and (fall > before * policy.outflow_share or fall > policy.outflow_amount)


# --- period sums -----------------------------------------------------------------------------
def period_sum(
    opening: Decimal, changes: Iterable[tuple[date, Decimal]], start: date, end: date
) -> Decimal:
    """Σ over the days [start, end] of the carried balance, given the balance carried into
    the first change row (``opening``) and the change rows up to ``end`` (any order)."""
    total = ZERO
    carried = opening
    for day, change in changes:
        if day < start:
            carried += change
        elif day <= end:
            total += change * ((end - day).days + 1)
    return carried * ((end - start).days + 1) + total


def average(total: Decimal, days: int) -> Decimal:
    return total / days if days > 0 else ZERO


def counted_days(start: date, end: date, today: date) -> tuple[date, int]:
    """The last day a period's average counts (a running period: today) and how many days."""
    last = min(end, today)
    return last, max((last - start).days + 1, 0)


async def average_balances(
    conn: AsyncConnection,
    scope: str,
    owner_ids: Iterable[str],
    start: date,
    end: date,
    today: date,
    policy: Any = None,
) -> dict[str, dict[str, Decimal]]:
    """Per owner (manager or branch), the exact average daily balance per line over
    [start, end] (its days up to ``today`` for a running period). Owners without balances
    get zeros. Reads one opening row and the change rows of [1 January, end] per owner;
    with the policy's ``increment`` hand-over mode, the base of handed-over clients moves
    back to their previous managers (``handover_split``)."""
    ids = sorted(set(owner_ids))
    last, days = counted_days(start, end, today)
    if not ids or days == 0:
        return {o: {line: ZERO for line in LINES} for o in ids}
    sums = await _period_sums(conn, scope, ids, start, last)
    if policy is None:
        from models.policy import Policy

        policy = Policy()
    if policy.handover_mode == "increment":
        for owner, moved in (await handover_split(conn, scope, ids, start, last, policy)).items():
            if owner in sums:  # the other side of a hand-over may not be asked for
                sums[owner]["liability"] += moved
    return {o: {line: average(sums[o][line], days) for line in LINES} for o in ids}


async def _period_sums(
    conn: AsyncConnection, scope: str, ids: list[str], start: date, last: date
) -> dict[str, dict[str, Decimal]]:
    """Per owner, Σ over [start, last] of the carried end-of-day balances per line."""
    out = {o: {line: ZERO for line in LINES} for o in ids}
    dialect = conn.dialect.name
    openings: dict[str, tuple[int, dict[str, Decimal]]] = {}
    rows = await conn.execute(
        select(
            BalanceOpeningRow.owner_id,
            BalanceOpeningRow.year,
            BalanceOpeningRow.liability,
            BalanceOpeningRow.asset,
        ).where(
            BalanceOpeningRow.scope == scope,
            one_of(BalanceOpeningRow.owner_id, ids, dialect),
            BalanceOpeningRow.year <= start.year,
        )
    )
    for owner, year, liability, asset in rows.all():
        if owner not in openings or year > openings[owner][0]:
            openings[owner] = (year, {"liability": liability, "asset": asset})
    # the earliest year start any owner needs (an owner without an opening reads from its
    # first change: it has none before a year it has no opening for, see streams/balances.py)
    lo = min((date(y, 1, 1) for y, _ in openings.values()), default=None)
    if len(openings) < len(ids):
        lo = None
    q = select(
        BalanceDayRow.owner_id, BalanceDayRow.day, BalanceDayRow.liability, BalanceDayRow.asset
    ).where(
        BalanceDayRow.scope == scope,
        one_of(BalanceDayRow.owner_id, ids, dialect),
        BalanceDayRow.day <= last,
    )
    if lo is not None:
        q = q.where(BalanceDayRow.day >= lo)
    changes: dict[str, list[tuple[date, Decimal, Decimal]]] = defaultdict(list)
    for owner, day, liability, asset in (await conn.execute(q)).all():
        changes[owner].append((day, liability, asset))
    for owner in ids:
        out[owner] = carried_sums(openings.get(owner), changes.get(owner, []), start, last)
    return out


def carried_sums(
    opening: tuple[int, dict[str, Decimal]] | None,
    changes: Iterable[tuple[date, Decimal, Decimal]],
    start: date,
    last: date,
) -> dict[str, Decimal]:
    """One owner's Σ over [start, last] of the carried end-of-day balances per line, from its
    opening in force (year, lines; None: none) and its change rows (day, liability, asset) up
    to ``last`` (rows before the opening's year are left out)."""
    floor = None if opening is None else date(opening[0], 1, 1)
    kept = [c for c in changes if floor is None or c[0] >= floor]
    carried = opening[1] if opening is not None else {line: ZERO for line in LINES}
    return {
        "liability": period_sum(carried["liability"], ((c[0], c[1]) for c in kept), start, last),
        "asset": period_sum(carried["asset"], ((c[0], c[2]) for c in kept), start, last),
    }


def daily_balances(
    snapshots: Iterable[Snapshot], line: str, start: date, end: date
) -> list[Decimal]:
    """A client's carried end-of-day balance of ``line`` on each day of [start, end]."""
    per_account: dict[str, list[Snapshot]] = defaultdict(list)
    for s in snapshots:
        if s.as_of_date <= end and s.business_line == line:
            per_account[s.account_id].append(s)
    n = (end - start).days + 1
    out = [ZERO] * n
    for series in per_account.values():
        series.sort(key=lambda s: s.as_of_date)
        for i, s in enumerate(series):
            nxt = series[i + 1].as_of_date if i + 1 < len(series) else end + timedelta(days=1)
            lo, hi = max((s.as_of_date - start).days, 0), min((nxt - start).days, n)
            for k in range(lo, hi):
                out[k] += s.balance
    return out


def handover_base_window(handed: date, policy: Any) -> tuple[date, date]:
    """The half-year before a hand-over day (``standard_window_days`` days, the day before
    the hand-over last): its average daily deposits are the base."""
    return handed - timedelta(days=policy.standard_window_days), handed - timedelta(days=1)


Span = tuple[date, date]
"""The first and last day of a period."""


class HandOver(NamedTuple):
    """Days [lo, hi] of a period on which a handed-over client is held by its new manager."""

    client_id: str
    lo: date
    hi: date
    handed: date
    """The hand-over day (the new holder's first)."""
    previous: Segment
    current: Segment
    previous_index: int
    """The previous holder's segment: 0 for the client's first manager."""


async def _hand_overs(
    conn: AsyncConnection, scope: str, owner_ids: Iterable[str], start: date, last: date
) -> tuple[list[HandOver], dict[str, list[Snapshot]]]:
    """增量认领 applies: the hand-overs of [start, last] whose previous or new holder is one
    of ``owner_ids`` (in ``scope``) and whose previous manager is still active, with the
    deposit snapshots of their clients up to ``last``."""
    from models.tables import BalanceHolderRow

    rows = (
        await conn.execute(
            select(BalanceHolderRow.client_id, BalanceHolderRow.segments).where(
                BalanceHolderRow.handed_over.is_(True)
            )
        )
    ).all()
    found = hand_overs_of(rows, scope, owner_ids, start, last)
    return await with_snapshots(conn, found, last)


def hand_overs_of(
    rows: Iterable[Sequence[Any]], scope: str, owner_ids: Iterable[str], start: date, last: date
) -> list[HandOver]:
    """The hand-overs of [start, last] in the holder rows (client_id, segments) whose
    previous or new holder is one of ``owner_ids`` (in ``scope``)."""
    wanted = set(owner_ids)
    key = 1 if scope == "manager" else 2
    found: list[HandOver] = []
    for cid, text in rows:
        segs = load_segments(text)
        for i in range(1, len(segs)):
            prev, cur = segs[i - 1], segs[i]
            first = cur[0]
            assert first is not None
            stop = segs[i + 1][0] if i + 1 < len(segs) else None
            lo = max(first, start)
            hi = last if stop is None else min(last, stop - timedelta(days=1))
            if lo > hi or (prev[key] not in wanted and cur[key] not in wanted):
                continue
            found.append(HandOver(cid, lo, hi, first, prev, cur, i - 1))
    return found


def hand_overs_until(found: Iterable[HandOver], last: date) -> list[HandOver]:
    """``found`` (hand-overs of [start, end]) as ``hand_overs_of`` gives them for
    [start, last], ``last`` <= end: each one's days cut at ``last``."""
    out = []
    for h in found:
        hi = min(h.hi, last)
        if h.lo <= hi:
            out.append(h._replace(hi=hi))
    return out


async def with_snapshots(
    conn: AsyncConnection, found: list[HandOver], last: date
) -> tuple[list[HandOver], dict[str, list[Snapshot]]]:
    """Of ``found``, those whose previous manager is still active (增量认领 applies), with the
    deposit snapshots of their clients up to ``last``."""
    from models.tables import ManagerRow

    if not found:
        return [], {}
    dialect = conn.dialect.name
    active = dict(
        (
            await conn.execute(
                select(ManagerRow.manager_id, ManagerRow.active).where(
                    one_of(ManagerRow.manager_id, sorted({h.previous[1] for h in found}), dialect)
                )
            )
        ).all()
    )
    # the previous manager has left: a full transfer (the credit rule's own answer)
    found = [h for h in found if active.get(h.previous[1], True)]
    snaps: dict[str, list[Snapshot]] = defaultdict(list)
    if not found:
        return [], snaps
    for cid, acc, day, line, bal in (
        await conn.execute(
            select(
                BalanceSnapshotRow.client_id,
                BalanceSnapshotRow.account_id,
                BalanceSnapshotRow.as_of_date,
                BalanceSnapshotRow.business_line,
                BalanceSnapshotRow.balance,
            ).where(
                one_of(BalanceSnapshotRow.client_id, sorted({h.client_id for h in found}), dialect),
                BalanceSnapshotRow.business_line == "liability",
                BalanceSnapshotRow.as_of_date <= last,
            )
        )
    ).all():
        snaps[cid].append(Snapshot(acc, day, line, bal))
    return found, snaps


def handover_base(snaps: Iterable[Snapshot], handed: date, policy: Any) -> Decimal:
    """The base of a hand-over: the client's average daily deposits over the half-year
    before it."""
    b0, b1 = handover_base_window(handed, policy)
    return average(sum(daily_balances(snaps, "liability", b0, b1), ZERO), (b1 - b0).days + 1)


def increment_share(deposits: Decimal, base: Decimal) -> Decimal:
    """s(d) = (D − min(D, base)) ÷ D: the new manager's share of a day's deposit business
    (0 when the client has no deposits that day)."""
    if deposits <= 0:
        return ZERO
    return (deposits - min(deposits, base)) / deposits


async def handover_split(
    conn: AsyncConnection,
    scope: str,
    owner_ids: Iterable[str],
    start: date,
    last: date,
    policy: Any,
) -> dict[str, Decimal]:
    """增量认领 (increment mode): on each day a handed-over client is held by its new
    manager, the part of its deposits up to the base (its average daily deposits over the
    half-year before the hand-over) stays with the previous manager; the new one keeps the
    increment above it. Returns, per owner of ``owner_ids``, the change of its Σ daily
    deposits over [start, last]. A previous manager who has left (inactive) hands over
    everything (a full transfer)."""
    found, snaps = await _hand_overs(conn, scope, owner_ids, start, last)
    return split_balances(scope, found, snaps, policy)


def split_balances(
    scope: str, found: Iterable[HandOver], snaps: dict[str, list[Snapshot]], policy: Any
) -> dict[str, Decimal]:
    """``handover_split`` of the hand-overs ``found`` (and their clients' snapshots)."""
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    key = 1 if scope == "manager" else 2
    for h in found:
        prev_owner, new_owner = h.previous[key], h.current[key]
        if prev_owner == new_owner:
            continue  # the same branch on both sides: nothing moves between branches
        base = handover_base(snaps[h.client_id], h.handed, policy)
        days = daily_balances(snaps[h.client_id], "liability", h.lo, h.hi)
        kept = sum((min(d, base) for d in days), ZERO)
        out[prev_owner] += kept  # type: ignore[index]
        out[new_owner] -= kept  # type: ignore[index]
    return out


ProfitMoves = dict[tuple[str, str, date], Decimal]
"""(owner, client_id, bank day) → the change of the owner's weighted profit."""


async def handover_profit_moves(
    conn: AsyncConnection, scope: str, owner_ids: Iterable[str], span: Span, policy: Any
) -> ProfitMoves:
    """增量认领, the weighted profit of deposit business: a liability transaction of a
    handed-over client on a day d held by its new manager N (increment mode, the previous
    manager P still active) is credited in the proportion of that day's deposits,

        N: profit × coefficient × s(d) × N's claim ratio (the hand-over ratio unless the
           client has its own)
        P: profit × coefficient × (1 − s(d)) × P's claim ratio for the client

    with s(d) = ``increment_share``(D(d), base). Returns, per owner (``scope``), client and
    bank day of the days ``span`` (first, last), the change of the owner's weighted profit
    against what the transaction rule credited (stored with each event), for the
    transactions credited to P or N; the other owners of a hand-over of ``owner_ids`` are
    in it too. The one computation of the split: every view's figures fold these moves
    (``handover_profit_split``, ``add_handover_profit``, ``handover_profit_days``,
    ``handover_profit_clients``)."""
    if policy.handover_mode != "increment":
        return defaultdict(lambda: ZERO)
    start, last = span
    found, snaps = await _hand_overs(conn, scope, owner_ids, start, last)
    return await profit_moves(conn, scope, found, snaps, last, policy)


class Term(NamedTuple):
    """A handed-over client's own claim ratio and origin (what the credit rule reads)."""

    claim_ratio: Decimal | None
    origin: str | None


class Fact(NamedTuple):
    """An applied transaction of a handed-over client, as stored with its credit."""

    day: date
    manager_id: str | None
    branch_id: str | None
    weighted_profit: Decimal | None
    value: str


async def profit_moves(
    conn: AsyncConnection,
    scope: str,
    found: list[HandOver],
    snaps: dict[str, list[Snapshot]],
    last: date,
    policy: Any,
) -> ProfitMoves:
    """``handover_profit_moves`` of the hand-overs ``found`` (of days up to ``last``, their
    previous managers active) and their clients' snapshots."""
    from models.tables import ClientRow, EventRow

    if not found:
        return defaultdict(lambda: ZERO)
    dialect = conn.dialect.name
    ids = sorted({h.client_id for h in found})
    terms = {
        r.client_id: Term(r.claim_ratio, r.origin)
        for r in (
            await conn.execute(
                select(ClientRow.client_id, ClientRow.claim_ratio, ClientRow.origin).where(
                    one_of(ClientRow.client_id, ids, dialect)
                )
            )
        ).all()
    }
    facts: dict[str, list[Fact]] = defaultdict(list)
    for r in (
        await conn.execute(
            select(
                EventRow.client_id,
                EventRow.day,
                EventRow.manager_id,
                EventRow.branch_id,
                EventRow.weighted_profit,
                EventRow.value,
            ).where(
                one_of(EventRow.client_id, ids, dialect),
                EventRow.event_type == "transaction.posted",
                EventRow.status == "applied",
                EventRow.day >= min(h.lo for h in found),
                EventRow.day <= last,
            )
        )
    ).all():
        facts[r.client_id].append(Fact(*r[1:]))  # type: ignore[arg-type]  # (day in range)
    return moves_of(scope, found, snaps, terms, facts, policy)


def moves_of(
    scope: str,
    found: Iterable[HandOver],
    snaps: dict[str, list[Snapshot]],
    terms: dict[str, Term],
    facts: dict[str, list[Fact]],
    policy: Any,
) -> ProfitMoves:
    """``profit_moves`` from what it read: the clients' terms and their transactions of the
    hand-overs' days (any others are left out here)."""
    from models.decode import decode_event
    from models.events import TransactionPosted
    from models.policy import claim_ratio, to_cny, weighted_profit

    out: ProfitMoves = defaultdict(lambda: ZERO)
    key = 1 if scope == "manager" else 2
    line = "liability"
    for h in found:
        term = terms.get(h.client_id)
        if term is None:
            continue
        mine = [
            r
            for r in facts.get(h.client_id, ())
            if h.lo <= r.day <= h.hi and r.manager_id in (h.previous[1], h.current[1])
        ]
        if not mine:
            continue
        base = handover_base(snaps[h.client_id], h.handed, policy)
        deposits = daily_balances(snaps[h.client_id], line, h.lo, h.hi)
        new_ratio = claim_ratio(term.claim_ratio, term.origin, True, line, policy)
        old_ratio = claim_ratio(term.claim_ratio, term.origin, h.previous_index > 0, line, policy)
        for r in mine:
            p = decode_event(r.value.encode(), policy).payload
            if not isinstance(p, TransactionPosted) or p.business_line != line:
                continue
            profit = to_cny(p.simulated_profit, p.currency, policy)
            share = increment_share(deposits[(r.day - h.lo).days], base)
            stored = r.manager_id if scope == "manager" else r.branch_id
            at = (h.client_id, r.day)
            out[(stored, *at)] -= r.weighted_profit or ZERO  # type: ignore[index]
            out[(h.current[key], *at)] += weighted_profit(  # type: ignore[index]
                profit * share, line, new_ratio, policy
            )
            out[(h.previous[key], *at)] += weighted_profit(  # type: ignore[index]
                profit * (1 - share), line, old_ratio, policy
            )
    return out


async def handover_profit_split(
    conn: AsyncConnection, scope: str, owner_ids: Iterable[str], span: Span, policy: Any
) -> dict[str, Decimal]:
    """Per owner, the change of its weighted profit over the days ``span`` by the 增量认领
    split (``handover_profit_moves`` summed over clients and days)."""
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for (owner, _client, _day), v in (
        await handover_profit_moves(conn, scope, owner_ids, span, policy)
    ).items():
        out[owner] += v
    return out


async def handover_profit_days(
    conn: AsyncConnection, scope: str, owner_id: str, span: Span, policy: Any
) -> dict[date, Decimal]:
    """One owner's change of weighted profit per bank day of ``span`` by the split (the
    trend's points: ``handover_profit_moves`` summed over clients)."""
    out: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for (owner, _client, day), v in (
        await handover_profit_moves(conn, scope, [owner_id], span, policy)
    ).items():
        if owner == owner_id:
            out[day] += v
    return out


async def handover_profit_clients(
    conn: AsyncConnection, manager_ids: Iterable[str], span: Span, policy: Any
) -> dict[tuple[str, str], Decimal]:
    """(manager, client) → the change of the weighted profit credited to the manager for the
    client over ``span`` by the split (the client book: ``handover_profit_moves`` summed
    over days)."""
    ids = set(manager_ids)
    out: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for (owner, client, _day), v in (
        await handover_profit_moves(conn, "manager", ids, span, policy)
    ).items():
        if owner in ids:
            out[(owner, client)] += v
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    account_id: str
    as_of_date: date
    business_line: str
    balance: Decimal


def client_daily_sums(snapshots: Iterable[Snapshot], start: date, end: date) -> dict[str, Decimal]:
    """Σ over [start, end] of a client's carried end-of-day balance per line, from all the
    snapshots of its accounts up to ``end`` (the pure oracle of the stored day deltas)."""
    per_account: dict[str, list[Snapshot]] = defaultdict(list)
    for s in snapshots:
        if s.as_of_date <= end:
            per_account[s.account_id].append(s)
    totals = {line: ZERO for line in LINES}
    for series in per_account.values():
        series.sort(key=lambda s: s.as_of_date)
        for i, s in enumerate(series):
            nxt = series[i + 1].as_of_date if i + 1 < len(series) else end + timedelta(days=1)
            lo, hi = max(s.as_of_date, start), min(nxt, end + timedelta(days=1))
            if hi > lo:
                totals[s.business_line] += s.balance * (hi - lo).days
    return totals


async def client_averages(
    conn: AsyncConnection, client_ids: Iterable[str], start: date, end: date, today: date
) -> dict[str, dict[str, Decimal]]:
    """Per client, the exact average daily balance per line over [start, end] (its days up
    to ``today`` for a running period), from the stored snapshots."""
    ids = sorted(set(client_ids))
    out = {c: {line: ZERO for line in LINES} for c in ids}
    last, days = counted_days(start, end, today)
    if not ids or days == 0:
        return out
    rows = await conn.execute(
        select(
            BalanceSnapshotRow.client_id,
            BalanceSnapshotRow.account_id,
            BalanceSnapshotRow.as_of_date,
            BalanceSnapshotRow.business_line,
            BalanceSnapshotRow.balance,
        ).where(
            one_of(BalanceSnapshotRow.client_id, ids, conn.dialect.name),
            BalanceSnapshotRow.as_of_date <= last,
        )
    )
    per_client: dict[str, list[Snapshot]] = defaultdict(list)
    for cid, acc, day, line, bal in rows.all():
        per_client[cid].append(Snapshot(acc, day, line, bal))
    for cid, snaps in per_client.items():
        sums = client_daily_sums(snaps, start, last)
        out[cid] = {line: average(sums[line], days) for line in LINES}
    return out


def exact_sum(col: Any, dialect: str) -> Any:
    fn = func.sum if dialect == "postgresql" else func.decimal_sum
    return fn(col, type_=ExactDecimal())


BALANCE_METRICS = {"average_deposits": "liability", "average_loans": "asset"}
"""Leaderboard metrics read from the balances: the period's average daily balance of a line."""


async def average_documents(
    conn: AsyncConnection,
    scope: str,
    owner_ids: Iterable[str],
    start: date,
    end: date,
    today: date,
    policy: Any = None,
) -> dict[str, dict[str, str]]:
    """The tally's ``average_balance`` per owner: {"liability": "...", "asset": "..."}."""
    found = await average_balances(conn, scope, owner_ids, start, end, today, policy)
    return {o: {line: money(v) for line, v in lines.items()} for o, lines in found.items()}


# --- standard deposits (标准存款) and tier review -----------------------------------------------
TIER_ORDER = ("diamond", "platinum", "gold", "silver", "bronze")


def standard_deposits(averages: dict[str, Decimal], policy: Any, fees: Decimal = ZERO) -> Decimal:
    """Σ line average daily balance × the policy's conversion coefficient, plus the fee
    income of the window (``fees``) × its coefficient (``fee_income``)."""
    coefficients = policy.standard_coefficients
    return sum(
        (averages.get(line, ZERO) * coefficients.get(line, ZERO) for line in LINES),
        fees * coefficients.get("fee_income", ZERO),
    )


async def fee_incomes(
    conn: AsyncConnection, client_ids: Sequence[str], start: date, end: date, policy: Any
) -> dict[str, Decimal]:
    """Per client, its fee income (中间业务收入) over the bank days [start, end]: the
    simulated profit (CNY) of its applied ``intermediary`` transactions."""
    from models.decode import decode_event
    from models.events import TransactionPosted
    from models.policy import to_cny
    from models.tables import EventRow

    out = {c: ZERO for c in client_ids}
    rows = await conn.execute(
        select(EventRow.value).where(
            one_of(EventRow.client_id, sorted(out), conn.dialect.name),
            EventRow.event_type == "transaction.posted",
            EventRow.status == "applied",
            EventRow.day >= start,
            EventRow.day <= end,
        )
    )
    for value in rows.scalars():
        p = decode_event(value.encode(), policy).payload
        if isinstance(p, TransactionPosted) and p.business_line == "intermediary":
            out[p.client_id] += to_cny(p.simulated_profit, p.currency, policy)
    return out


def computed_tier(
    standard: Decimal, bad_credit: bool, relationship_days: int, policy: Any
) -> str | None:
    """The tier standard deposits give: bad credit → bronze whatever the deposits; a
    relationship shorter than the policy's half-year → not classified (None)."""
    if bad_credit:
        return "bronze"
    if relationship_days < policy.relationship_min_days:
        return None
    for tier in TIER_ORDER[:-1]:
        if standard >= policy.tier_thresholds[tier]:
            return tier
    return "bronze"


def review_window(today: date, policy: Any) -> tuple[date, date]:
    """The last ``standard_window_days`` complete bank days (today's balance is not closed)."""
    end = today - timedelta(days=1)
    return end - timedelta(days=policy.standard_window_days - 1), end


async def client_tiers(
    conn: AsyncConnection, clients: Sequence[Any], policy: Any, today: date
) -> dict[str, dict[str, Any]]:
    """Per client row (client_id, bad_credit), its standard deposits and computed tier."""
    from models.tables import AssignmentRow

    ids = [c.client_id for c in clients]
    if not ids:
        return {}
    start, end = review_window(today, policy)
    averages = await client_averages(conn, ids, start, end, today)
    fees = await fee_incomes(conn, ids, start, end, policy)
    first = dict(
        (
            await conn.execute(
                select(AssignmentRow.client_id, func.min(AssignmentRow.assigned_at))
                .where(one_of(AssignmentRow.client_id, ids, conn.dialect.name))
                .group_by(AssignmentRow.client_id)
            )
        ).all()
    )
    out = {}
    for c in clients:
        since = first.get(c.client_id)
        days = (today - bank_day(since, policy.tz)).days if since is not None else 0
        standard = standard_deposits(averages[c.client_id], policy, fees[c.client_id])
        out[c.client_id] = {
            "standard_deposits": standard,
            "average_deposits": averages[c.client_id]["liability"],
            "average_loans": averages[c.client_id]["asset"],
            "relationship_days": days,
            "computed_tier": computed_tier(standard, bool(c.bad_credit), days, policy),
        }
    return out


async def tier_review_page(
    conn: AsyncConnection,
    policy: Any,
    today: date,
    *,
    manager_ids: Iterable[str] | None = None,
    branch_ids: Iterable[str] | None = None,
    after: str | None = None,
    limit: int = 100,
    chunk: int = 500,
) -> tuple[list[dict[str, Any]], str | None]:
    """Clients (in client_id order, after ``after``) whose sent tier differs from the one
    their standard deposits give; unclassified clients (too short a relationship) are left
    out. Clients are read in chunks until the page is full; returns the items and the last
    client id of the page when there may be more."""
    from models.tables import ClientRow, ManagerRow

    start, end = review_window(today, policy)
    items: list[dict[str, Any]] = []
    cursor = after
    while True:
        q = (
            select(
                ClientRow.client_id,
                ClientRow.name,
                ClientRow.tier,
                ClientRow.bad_credit,
                ClientRow.manager_id,
                ManagerRow.branch_id,
            )
            .select_from(ClientRow)
            .outerjoin(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
            .order_by(ClientRow.client_id)
            .limit(chunk)
        )
        if cursor is not None:
            q = q.where(ClientRow.client_id > cursor)
        if manager_ids is not None:
            q = q.where(ClientRow.manager_id.in_(sorted(manager_ids)))
        if branch_ids is not None:
            q = q.where(ManagerRow.branch_id.in_(sorted(branch_ids)))
        rows = (await conn.execute(q)).all()
        if not rows:
            return items, None
        tiers = await client_tiers(conn, rows, policy, today)
        for r in rows:
            t = tiers[r.client_id]
            cursor = r.client_id
            if t["computed_tier"] is None or t["computed_tier"] == r.tier:
                continue
            items.append(
                {
                    "client_id": r.client_id,
                    "name": r.name,
                    "manager_id": r.manager_id,
                    "branch_id": r.branch_id,
                    "tier": r.tier,
                    "computed_tier": t["computed_tier"],
                    "standard_deposits": money(t["standard_deposits"]),
                    "average_deposits": money(t["average_deposits"]),
                    "average_loans": money(t["average_loans"]),
                    "relationship_days": t["relationship_days"],
                    "bad_credit": bool(r.bad_credit),
                    "window": {"from": start.isoformat(), "to": end.isoformat()},
                }
            )
            if len(items) == limit:
                return items, cursor
        if len(rows) < chunk:
            return items, None


async def add_handover_profit(
    conn: AsyncConnection,
    scope: str,
    totals: dict[str, Any],
    start: date,
    end: date,
    policy: Any,
) -> None:
    """Per owner of ``totals`` (owner → its totals over [start, end], the stored buckets'
    sums), add the 增量认领 split of the weighted profit of deposit business
    (``handover_profit_split``) to its ``weighted_profit``, in place: what every view of a
    period's weighted profit shows (``models.tally.period_totals``, the tallies)."""
    moved = await handover_profit_split(conn, scope, totals, (start, end), policy)
    for owner, t in totals.items():
        if moved.get(owner):
            t["weighted_profit"] += moved[owner]
