"""Reading tallies: a period's figures are the sum of its daily buckets.

Sums are exact (``Decimal``) and rounded half-up to two places only when shown.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import list_value, one_of_param
from models.policy import (
    ACCOUNT_TYPES,
    BUSINESS_LINES,
    VISIT_KINDS,
    VISIT_METHODS,
    AccountTarget,
    AccountUnit,
    completion_ratio,
    money,
    prorated_annual_target,
)
from models.tables import (
    COUNT_COLUMNS,
    MONEY_COLUMNS,
    BranchDayRow,
    EventRow,
    ExactDecimal,
    ManagerDayRow,
    ManagerTargetRow,
    UTCDateTime,
)

if TYPE_CHECKING:
    from models.balances import Fact, HandOver, Snapshot, Term

RATIO_PLACES = Decimal("0.0001")


def zero_totals() -> dict[str, Any]:
    totals: dict[str, Any] = {c: Decimal(0) for c in MONEY_COLUMNS}
    totals.update({c: 0 for c in COUNT_COLUMNS})
    return totals


def sum_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    totals = zero_totals()
    for r in rows:
        for c in MONEY_COLUMNS:
            totals[c] += r[c]
        for c in COUNT_COLUMNS:
            totals[c] += r[c]
    return totals


def tally_document(
    owner: tuple[str, str], start: date, end: date, totals: Mapping[str, Any], tz: ZoneInfo
) -> dict[str, Any]:
    """The tally object of CONTRACT.md §3 (zero counts are left out, as in the contract)."""
    accounts = {t: totals[f"accounts_{t}"] for t in ACCOUNT_TYPES if totals[f"accounts_{t}"]}
    visits: dict[str, int] = {"total": totals["visits_total"]}
    for k in (*VISIT_METHODS, *VISIT_KINDS):
        if totals[f"visits_{k}"]:
            visits[k] = totals[f"visits_{k}"]
    return {
        owner[0]: owner[1],
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "transactions": totals["transactions"],
        "volume": {line: money(totals[f"volume_{line}"]) for line in BUSINESS_LINES},
        "simulated_profit": {line: money(totals[f"profit_{line}"]) for line in BUSINESS_LINES},
        "weighted_profit": money(totals["weighted_profit"]),
        "accounts_opened": accounts,
        "accounts_by_origin": {
            "natural": totals["accounts_natural"],
            "marketed": totals["accounts_marketed"],
        },
        "visits": visits,
        "as_of": as_of_now(tz),
    }


def as_of_now(tz: ZoneInfo) -> str:
    return datetime.now(tz).isoformat(timespec="seconds")


def _exact_sum(col: Any, dialect: str) -> Any:
    """SUM that stays exact: NUMERIC on PostgreSQL; on SQLite (money kept as text, which its
    own SUM would turn into a float) the ``decimal_sum`` aggregate of ``models.db``."""
    if col.name in COUNT_COLUMNS:
        return func.sum(col).label(col.name)
    fn = func.sum if dialect == "postgresql" else func.decimal_sum
    return fn(col, type_=ExactDecimal()).label(col.name)


@lru_cache(maxsize=256)
def _sums_statement(
    table: Any, key_col: str, cols: tuple[str, ...], dialect: str, keys: str
) -> Any:
    """The per-key sums over [:lo, :hi], built once per shape: building and cache-keying a
    30-column statement cost more than PostgreSQL's answer. ``keys``: ``all``, ``one`` (``:key``)
    or ``many`` (``:keys``, a ``one_of`` list)."""
    key = table.c[key_col]
    q = (
        select(key, *(_exact_sum(table.c[c], dialect) for c in cols))
        .where(table.c.day >= bindparam("lo"), table.c.day <= bindparam("hi"))
        .group_by(key)
    )
    if keys == "one":
        q = q.where(key == bindparam("key"))
    elif keys == "many":
        q = q.where(one_of_param(key, "keys", dialect))
    return q


async def _sums(
    conn: AsyncConnection,
    table: Any,
    key_col: str,
    keys: Iterable[str] | None,
    start: date,
    end: date,
    cols: Iterable[str],
) -> dict[str, dict[str, Any]]:
    """Per key, the sums of ``cols`` over the days [start, end], added up by the database
    (one row per key instead of one per day); keys without a bucket in the range are absent."""
    dialect = conn.dialect.name
    cols = tuple(cols)
    params: dict[str, Any] = {"lo": start, "hi": end}
    shape = "all"
    if keys is not None:
        ids = sorted(set(keys))
        if not ids:
            return {}
        # one id stays a plain index lookup
        shape = "one" if len(ids) == 1 else "many"
        if shape == "one":
            params["key"] = ids[0]
        else:
            params["keys"] = list_value(ids, dialect)
    q = _sums_statement(table, key_col, cols, dialect, shape)
    rows = (await conn.execute(q, params)).all()
    return {r[0]: dict(zip(cols, r[1:], strict=True)) for r in rows}


_ALL_COLUMNS = (*MONEY_COLUMNS, *COUNT_COLUMNS)
_COUNTS = frozenset(COUNT_COLUMNS)


async def manager_totals(
    conn: AsyncConnection, manager_id: str, start: date, end: date
) -> dict[str, Any]:
    found = await _sums(
        conn, ManagerDayRow.__table__, "manager_id", [manager_id], start, end, _ALL_COLUMNS
    )
    return found.get(manager_id) or zero_totals()


async def branch_totals(
    conn: AsyncConnection, branch_id: str, start: date, end: date
) -> dict[str, Any]:
    found = await _sums(
        conn, BranchDayRow.__table__, "branch_id", [branch_id], start, end, _ALL_COLUMNS
    )
    return found.get(branch_id) or zero_totals()


async def managers_totals(
    conn: AsyncConnection, manager_ids: Iterable[str] | None, start: date, end: date
) -> dict[str, dict[str, Any]]:
    """Totals per manager over [start, end] (``None``: every manager), exact; the stored
    buckets as they are (``period_totals`` adds the hand-over split)."""
    return await _sums(
        conn, ManagerDayRow.__table__, "manager_id", manager_ids, start, end, _ALL_COLUMNS
    )


async def period_totals(
    conn: AsyncConnection,
    scope: str,
    owner_ids: Iterable[str],
    start: date,
    end: date,
    policy: Any,
) -> dict[str, dict[str, Any]]:
    """Per manager or branch (``scope``) of ``owner_ids``, its totals over [start, end] as
    every view shows them (tallies, leaderboard, reports, assessment): the exact sums of the
    stored day buckets, with the 增量认领 split of the weighted profit of deposit business
    (``models.balances.handover_profit_moves``). An owner without a bucket gets zeros (and
    its share of a split)."""
    return (await spans_totals(conn, scope, owner_ids, [(start, end)], policy))[0]


async def spans_totals(
    conn: AsyncConnection,
    scope: str,
    owner_ids: Iterable[str],
    spans: Sequence[tuple[date, date]],
    policy: Any,
) -> list[dict[str, dict[str, Any]]]:
    """``period_totals`` for each of several spans (first, last), the split's moves read
    once over all of them (a move belongs to its bank day, whatever span it is read in)."""
    from models.balances import handover_profit_moves

    ids = sorted(set(owner_ids))
    if not spans:
        return []
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    moves = await handover_profit_moves(conn, scope, ids, (lo, hi), policy)
    table, key = (
        (ManagerDayRow.__table__, "manager_id")
        if scope == "manager"
        else (BranchDayRow.__table__, "branch_id")
    )
    out = []
    for start, end in spans:
        found = await _sums(conn, table, key, ids, start, end, _ALL_COLUMNS)
        totals = {o: found.get(o) or zero_totals() for o in ids}
        for (owner, _client, day), v in moves.items():
            if owner in totals and start <= day <= end:
                totals[owner]["weighted_profit"] += v
        out.append(totals)
    return out


# --- leaderboard metrics ---------------------------------------------------------------------
def _metric_table() -> dict[str, tuple[str, Any]]:
    """metric name → (kind, totals → value); kind is ``money`` or ``count``."""
    m: dict[str, tuple[str, Any]] = {
        "weighted_profit": ("money", lambda t: t["weighted_profit"]),
        "transactions": ("count", lambda t: t["transactions"]),
        "volume": ("money", lambda t: sum((t[f"volume_{x}"] for x in BUSINESS_LINES), Decimal(0))),
        "simulated_profit": (
            "money",
            lambda t: sum((t[f"profit_{x}"] for x in BUSINESS_LINES), Decimal(0)),
        ),
        "accounts_opened": ("count", lambda t: sum(t[f"accounts_{x}"] for x in ACCOUNT_TYPES)),
        "new_basic_accounts": ("count", lambda t: t["accounts_basic_settlement"]),
        "visits": ("count", lambda t: t["visits_total"]),
    }
    for line in BUSINESS_LINES:
        m[f"volume.{line}"] = ("money", lambda t, c=f"volume_{line}": t[c])
        m[f"simulated_profit.{line}"] = ("money", lambda t, c=f"profit_{line}": t[c])
    for a in ACCOUNT_TYPES:
        m[f"accounts_opened.{a}"] = ("count", lambda t, c=f"accounts_{a}": t[c])
    for origin in ("natural", "marketed"):
        m[f"accounts_opened.{origin}"] = ("count", lambda t, c=f"accounts_{origin}": t[c])
    for k in (*VISIT_METHODS, *VISIT_KINDS):
        m[f"visits.{k}"] = ("count", lambda t, c=f"visits_{k}": t[c])
    return m


METRICS = _metric_table()


def metric_value(totals: Mapping[str, Any], metric: str) -> Decimal | int:
    return METRICS[metric][1](totals)


def show_metric(metric: str, value: Decimal | int) -> str | int:
    """Money as a two-place string (half-up), counts as integers."""
    # a "money" metric's value is a Decimal (money() wants one), a count's an int
    return money(value) if METRICS[metric][0] == "money" else int(value)  # type: ignore[arg-type]


def rank(values: Mapping[str, Decimal | int]) -> list[tuple[int, str, Decimal | int]]:
    """Highest first on the exact value, ties by manager_id; ranks are positions 1..n."""
    order = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(i + 1, mid, v) for i, (mid, v) in enumerate(order)]


# --- targets ---------------------------------------------------------------------------------
async def target_history(
    conn: AsyncConnection, manager_ids: Iterable[str]
) -> dict[str, list[tuple[datetime, Decimal]]]:
    ids = sorted(set(manager_ids))
    out: dict[str, list[tuple[datetime, Decimal]]] = {m: [] for m in ids}
    if not ids:
        return out
    res = await conn.execute(
        select(
            ManagerTargetRow.manager_id,
            ManagerTargetRow.effective_at,
            ManagerTargetRow.annual_profit_target,
        )
        .where(ManagerTargetRow.manager_id.in_(ids))
        .order_by(ManagerTargetRow.manager_id, ManagerTargetRow.effective_at)
    )
    for mid, at, target in res.all():
        out[mid].append((at, target))
    return out


def _hired_from(value: str) -> date | None:
    """``hired_at`` of a stored ``manager.upserted`` message (None when it gives none)."""
    try:
        hired = json.loads(value).get("payload", {}).get("hired_at")
        return date.fromisoformat(hired) if isinstance(hired, str) else None
    except (ValueError, AttributeError):
        return None


async def hired_dates(conn: AsyncConnection, manager_ids: Iterable[str]) -> dict[str, date | None]:
    """Each manager's ``hired_at`` (first day as a manager), from the upsert in force: the
    manager's newest ``manager.upserted`` by occurred_at (None when it gives none)."""
    ids = sorted(set(manager_ids))
    out: dict[str, date | None] = {m: None for m in ids}
    if not ids:
        return out
    rows = await conn.execute(
        select(EventRow.manager_id, EventRow.occurred_at, EventRow.event_id, EventRow.value)
        .where(EventRow.event_type == "manager.upserted", EventRow.manager_id.in_(ids))
        .order_by(EventRow.manager_id, EventRow.occurred_at, EventRow.event_id)
    )
    for mid, _at, _eid, value in rows.all():
        if mid is None:  # (the query selects the given managers' records)
            continue
        out[mid] = _hired_from(value)
    return out


def target_for_year(
    history: list[tuple[datetime, Decimal]], year: int, tz: ZoneInfo
) -> Decimal | None:
    """The annual target issued for ``year`` (年初下达): the one in force on 1 January (bank
    time; a target given during 1 January counts), else, for a manager whose first target
    came later in the year, that first target. A raise during the year never rewrites it.
    None for a year that ended before any target was given."""
    first_day_over = datetime(year, 1, 2, tzinfo=tz)
    year_end = datetime(year + 1, 1, 1, tzinfo=tz)
    in_force = None
    for at, target in history:
        if at < first_day_over:
            in_force = target
        elif in_force is None and at < year_end:
            return target
    return in_force


def period_target(
    history: list[tuple[datetime, Decimal]],
    start: date,
    end: date,
    tz: ZoneInfo,
    hired_at: date | None = None,
) -> Decimal | None:
    """The profit target for [start, end]: each year's annual target pro-rated by days; for
    a manager hired during the period, only the days from ``hired_at`` on (None when the
    period ended before the manager started)."""
    if hired_at is not None:
        if hired_at > end:
            return None
        start = max(start, hired_at)
    total: Decimal | None = None
    for year in range(start.year, end.year + 1):
        annual = target_for_year(history, year, tz)
        if annual is None:
            continue
        lo, hi = max(start, date(year, 1, 1)), min(end, date(year, 12, 31))
        part = prorated_annual_target(annual, lo, hi)
        total = part if total is None else total + part
    return total


def ratio_text(ratio: Decimal | None) -> str | None:
    return None if ratio is None else str(ratio.quantize(RATIO_PLACES, rounding=ROUND_HALF_UP))


def target_document(
    target: Decimal | None, actual: Decimal, start: date, end: date, today: date
) -> dict[str, Any]:
    """Target, actual, ratio and met/behind for a profit target (exact; rounded when shown).

    For a period still running, ``expected_to_date`` is the target pro-rated to today and
    ``on_track`` compares against it: being below the whole month's target on the 3rd is
    not falling behind.
    """
    if target is None:
        return {"target": None, "actual": money(actual), "ratio": None, "status": "no_target"}
    ratio = completion_ratio(actual, target)
    doc: dict[str, Any] = {
        "target": money(target),
        "actual": money(actual),
        "ratio": ratio_text(ratio),
        "met": actual >= target,
        "status": "met" if actual >= target else "behind",
    }
    if start <= today < end:
        days = Decimal((end - start).days + 1)
        elapsed = Decimal((today - start).days + 1)
        expected = target * elapsed / days
        doc["expected_to_date"] = money(expected)
        doc["on_track"] = actual >= expected
    return doc


def _unit_document(u: AccountUnit) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "from": u.start.isoformat(),
        "to": u.end.isoformat(),
        "target": money(u.target),
        "actual": u.actual,
        "met": u.met,
        "status": u.status,
    }
    expected = u.expected_to_date
    if expected is not None:
        doc["expected_to_date"] = money(expected)
    return doc


def account_targets_document(targets: list[AccountTarget]) -> list[dict[str, Any]]:
    """Each rule with its total, and its weeks or months one by one (``units``)."""
    return [
        {
            "name": t.name,
            "cadence": t.cadence,
            "target": money(t.target),
            "actual": t.actual,
            "ratio": ratio_text(t.ratio),
            "met": t.met,
            "status": t.status,
            "units": [_unit_document(u) for u in t.units],
        }
        for t in targets
    ]


def account_targets_status(targets: list[AccountTarget]) -> str:
    """``behind`` if any rule is, ``met`` if all are, else ``on_track``."""
    states = [t.status for t in targets]
    if "behind" in states:
        return "behind"
    return "met" if all(s == "met" for s in states) else "on_track"


async def branch_daily_accounts(
    conn: AsyncConnection, branch_id: str, start: date, end: date
) -> dict[date, dict[str, int]]:
    """New accounts by type per bank day of a branch over [start, end] (days with none left
    out), for the week-by-week account targets."""
    cols = [BranchDayRow.__table__.c[f"accounts_{t}"] for t in ACCOUNT_TYPES]
    rows = await conn.execute(
        select(BranchDayRow.day, *cols).where(
            BranchDayRow.branch_id == branch_id, BranchDayRow.day >= start, BranchDayRow.day <= end
        )
    )
    out: dict[date, dict[str, int]] = {}
    for day, *counts in rows.all():
        by_type = {t: int(n) for t, n in zip(ACCOUNT_TYPES, counts, strict=True) if n}
        if by_type:
            out[day] = by_type
    return out


def metric_columns(metric: str) -> tuple[str, ...]:
    """The bucket columns a metric reads (so a ranking loads only those)."""
    read: list[str] = []

    class _Recorder(dict):
        def __getitem__(self, key: str) -> Any:
            read.append(key)
            return 0

    METRICS[metric][1](_Recorder())
    return tuple(dict.fromkeys(read))


async def managers_metric(
    conn: AsyncConnection, manager_ids: Iterable[str] | None, start: date, end: date, metric: str
) -> dict[str, Decimal | int]:
    """One metric per manager over [start, end], exact, reading only its columns; managers
    without a bucket in the range are left out."""
    sums = await _sums(
        conn, ManagerDayRow.__table__, "manager_id", manager_ids, start, end, metric_columns(metric)
    )
    return {mid: metric_value(acc, metric) for mid, acc in sums.items()}


# --- one manager's tally on the driver ------------------------------------------------------
@dataclass(frozen=True)
class ManagerFigures:
    """What a manager's tally answer is built from: the period's totals, the target history
    and ``hired_at``."""

    totals: dict[str, Any]
    history: list[tuple[datetime, Decimal]]
    hired_at: date | None


def _figures_sql(dialect: str) -> tuple[str, ...]:
    """The reads of ``_manager_reads``, as driver SQL (positional parameters): the sums, the
    targets, the upsert in force; on SQLite also the balance opening, the change rows (from
    the opening's year, "" without one) and the handed-over holders naming a JSON string."""
    if dialect == "postgresql":
        mark = ["$1", "$2::date", "$3::date"]
        sums = [f"sum({c})" for c in MONEY_COLUMNS] + [f"sum({c})::bigint" for c in COUNT_COLUMNS]
        one = "$1"
    else:
        mark = ["?", "?", "?"]
        sums = [f"decimal_sum({c})" for c in MONEY_COLUMNS] + [f"sum({c})" for c in COUNT_COLUMNS]
        one = "?"
    balances = (
        "SELECT year, liability, asset FROM balance_openings"
        " WHERE scope = 'manager' AND owner_id = ? AND year <= ? ORDER BY year DESC LIMIT 1",
        "SELECT day, liability, asset FROM balance_daily"
        " WHERE scope = 'manager' AND owner_id = ? AND day <= ? AND day >= ?",
        "SELECT client_id, segments FROM balance_holders"
        " WHERE handed_over = 1 AND instr(segments, ?) > 0",
    )
    return (*_figure_reads(mark, sums, one), *(balances if dialect == "sqlite" else ()))


def _figure_reads(mark: list[str], sums: list[str], one: str) -> tuple[str, str, str]:
    return (
        f"SELECT {', '.join(sums)} FROM manager_daily "
        f"WHERE manager_id = {mark[0]} AND day >= {mark[1]} AND day <= {mark[2]}",
        f"SELECT effective_at, annual_profit_target FROM manager_targets "
        f"WHERE manager_id = {one} ORDER BY effective_at",
        # the upsert in force: the newest by occurred_at (then event id), as hired_dates
        f"SELECT value FROM events WHERE event_type = 'manager.upserted' AND manager_id = {one} "
        "ORDER BY occurred_at DESC, event_id DESC LIMIT 1",
    )


_FIGURES_SQL = {d: _figures_sql(d) for d in ("postgresql", "sqlite")}
_PG_READS = (
    ", (SELECT array_agg(effective_at ORDER BY effective_at) FROM manager_targets"
    " WHERE manager_id = $1),"
    " (SELECT array_agg(annual_profit_target ORDER BY effective_at) FROM manager_targets"
    " WHERE manager_id = $1),"
    " (SELECT value FROM events WHERE event_type = 'manager.upserted' AND manager_id = $1"
    " ORDER BY occurred_at DESC, event_id DESC LIMIT 1),"
    # the balance opening in force for the start's year ($4), the change rows from its year
    # to the last counted day ($5), the handed-over holders naming the manager ($6)
    + "".join(
        f" (SELECT {c} FROM balance_openings WHERE scope = 'manager' AND owner_id = $1"
        " AND year <= $4::int ORDER BY year DESC LIMIT 1),"
        for c in ("year", "liability", "asset")
    )
    + "".join(
        f" (SELECT array_agg({c} ORDER BY day) FROM balance_daily"
        " WHERE scope = 'manager' AND owner_id = $1 AND day <= $5::date"
        " AND day >= COALESCE(make_date((SELECT max(year) FROM balance_openings"
        " WHERE scope = 'manager' AND owner_id = $1 AND year <= $4::int), 1, 1),"
        " '-infinity'::date)),"
        for c in ("day", "liability", "asset")
    )
    + " (SELECT array_agg(client_id ORDER BY client_id) FROM balance_holders"
    " WHERE handed_over AND strpos(segments, $6::text) > 0),"
    " (SELECT array_agg(segments ORDER BY client_id) FROM balance_holders"
    " WHERE handed_over AND strpos(segments, $6::text) > 0)"
)
_PG_FIGURES = _FIGURES_SQL["postgresql"][0].replace(
    " FROM manager_daily", _PG_READS + " FROM manager_daily", 1
)
_UTC_TIME = UTCDateTime()
_EXACT = ExactDecimal()


def _figures(sums: Any, targets: Any, upsert: Any, dialect: Any) -> ManagerFigures:
    totals: dict[str, Any] = {}
    for c, v in zip(_ALL_COLUMNS, sums, strict=True):
        if c in _COUNTS:
            totals[c] = 0 if v is None else int(v)
        else:
            totals[c] = Decimal(0) if v is None else v if isinstance(v, Decimal) else Decimal(v)
    history = [
        (
            _UTC_TIME.process_result_value(at, dialect),
            _EXACT.process_result_value(target, dialect),
        )
        for at, target in targets
    ]
    hired = _hired_from(upsert[0][0]) if upsert else None
    return ManagerFigures(totals, history, hired)  # type: ignore[arg-type]


async def manager_figures(
    conn: AsyncConnection, manager_id: str, start: date, end: date
) -> ManagerFigures:
    """``manager_totals``, ``target_history`` and ``hired_dates`` of one manager, read on the
    driver: SQLAlchemy's statement and result handling, and on SQLite a thread hop per call
    of aiosqlite, cost ten times the database's answer (three reads of a few rows). SQLite:
    the three in one hop to aiosqlite's thread; PostgreSQL: one statement (``_manager_reads``,
    which reads the balance rows with them). Each read starts now, so it sees every commit
    before the call."""
    return (await _manager_reads(conn, manager_id, start, end, end))[0]


@dataclass(frozen=True)
class ManagerParts:
    """Everything a manager's tally answer shows but the rounding: ``figures`` (the stored
    buckets' totals, target history, ``hired_at``), ``moved`` (the 增量认领 split's change of
    its weighted profit over the period) and ``averages`` (its exact average daily balance
    per line, the split included)."""

    figures: ManagerFigures
    moved: Decimal
    averages: dict[str, Decimal]


async def manager_parts(
    conn: AsyncConnection, manager_id: str, start: date, end: date, today: date, policy: Any
) -> ManagerParts:
    """What ``manager_figures``, ``models.balances.add_handover_profit`` and
    ``average_balances`` give for one manager, with one read on the driver for the figures,
    the balance rows and the handed-over clients it held or holds (the bank's other
    hand-overs are not read); the hand-overs' snapshots, clients and transactions are read
    once for both splits, only when the manager has one in the period."""
    from models.balances import (
        LINES,
        ZERO,
        average,
        carried_sums,
        counted_days,
        hand_overs_of,
        hand_overs_until,
        moves_of,
        split_balances,
    )

    last, days = counted_days(start, end, today)
    figures, opening, changes, holders = await _manager_reads(
        conn, manager_id, start, end, max(last, start)
    )
    increment = policy.handover_mode == "increment"
    found = hand_overs_of(holders, "manager", [manager_id], start, end) if increment else []
    moved = ZERO
    snaps: dict[str, list[Snapshot]] = {}
    if found:
        found, snaps, terms, facts = await _hand_over_reads(conn, found, end)
        for (owner, _client, _day), v in moves_of(
            "manager", found, snaps, terms, facts, policy
        ).items():
            if owner == manager_id:
                moved += v
    if days == 0:
        return ManagerParts(figures, moved, {line: ZERO for line in LINES})
    sums = carried_sums(opening, changes, start, last)
    if found:
        split = split_balances("manager", hand_overs_until(found, last), snaps, policy)
        if manager_id in split:
            sums["liability"] += split[manager_id]
    return ManagerParts(figures, moved, {line: average(sums[line], days) for line in LINES})


_Opening = tuple[int, dict[str, Decimal]] | None
_Change = tuple[date, Decimal, Decimal]


async def _hand_over_reads(
    conn: AsyncConnection, found: list[HandOver], last: date
) -> tuple[list[HandOver], dict[str, list[Snapshot]], dict[str, Term], dict[str, list[Fact]]]:
    """What ``models.balances.with_snapshots`` and ``profit_moves`` read for the hand-overs
    ``found`` (days up to ``last``), on the driver: those whose previous manager is active,
    the deposit snapshots of their clients, the clients' terms and their applied
    transactions of the hand-overs' days. SQLite: one hop (and snapshot); PostgreSQL: four
    statements on the driver's connection."""
    from models.balances import Fact, Snapshot, Term

    ids = sorted({h.client_id for h in found})
    previous = sorted({h.previous[1] for h in found})
    lo = min(h.lo for h in found)
    driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg or aiosqlite
    if conn.dialect.name == "postgresql":
        active_rows = await driver.fetch(_PG_HAND_OVER_SQL[0], previous)
        snap_rows = await driver.fetch(_PG_HAND_OVER_SQL[1], ids, last)
        term_rows = await driver.fetch(_PG_HAND_OVER_SQL[2], ids)
        fact_rows = await driver.fetch(_PG_HAND_OVER_SQL[3], ids, lo, last)
        snap_list = [(r[0], Snapshot(r[1], r[2], r[3], r[4])) for r in snap_rows]
        terms = {r[0]: Term(r[1], r[2]) for r in term_rows}
        fact_list = [(r[0], Fact(r[1], r[2], r[3], r[4], r[5])) for r in fact_rows]
    else:
        people, clients = json.dumps(previous), json.dumps(ids)

        def read(db: Any) -> tuple[Any, ...]:  # the four in one hop
            return (
                db.execute(_SQLITE_HAND_OVER_SQL[0], (people,)).fetchall(),
                db.execute(_SQLITE_HAND_OVER_SQL[1], (clients, last.isoformat())).fetchall(),
                db.execute(_SQLITE_HAND_OVER_SQL[2], (clients,)).fetchall(),
                db.execute(
                    _SQLITE_HAND_OVER_SQL[3], (clients, lo.isoformat(), last.isoformat())
                ).fetchall(),
            )

        active_rows, snap_rows, term_rows, fact_rows = await _sqlite_snapshot(driver, read)
        snap_list = [
            (r[0], Snapshot(r[1], date.fromisoformat(r[2]), r[3], Decimal(r[4]))) for r in snap_rows
        ]
        terms = {r[0]: Term(None if r[1] is None else Decimal(r[1]), r[2]) for r in term_rows}
        fact_list = [
            (
                r[0],
                Fact(
                    date.fromisoformat(r[1]),
                    r[2],
                    r[3],
                    None if r[4] is None else Decimal(r[4]),
                    r[5],
                ),
            )
            for r in fact_rows
        ]
    active = {r[0]: bool(r[1]) for r in active_rows}
    # the previous manager has left: a full transfer (the credit rule's own answer)
    found = [h for h in found if active.get(h.previous[1], True)]
    snaps: dict[str, list[Snapshot]] = defaultdict(list)
    facts: dict[str, list[Fact]] = defaultdict(list)
    if not found:
        return [], snaps, {}, facts
    for cid, snap in snap_list:
        snaps[cid].append(snap)
    for cid, fact in fact_list:
        facts[cid].append(fact)
    return found, snaps, terms, facts


_HAND_OVER_SQL = (
    "SELECT manager_id, active FROM managers WHERE manager_id IN ({})",
    "SELECT client_id, account_id, as_of_date, business_line, balance FROM balance_snapshots"
    " WHERE client_id IN ({}) AND business_line = 'liability' AND as_of_date <= {}",
    "SELECT client_id, claim_ratio, origin FROM clients WHERE client_id IN ({})",
    "SELECT client_id, day, manager_id, branch_id, weighted_profit, value FROM events"
    " WHERE client_id IN ({}) AND event_type = 'transaction.posted' AND status = 'applied'"
    " AND day >= {} AND day <= {}",
)
_PG_HAND_OVER_SQL = tuple(
    q.format("SELECT unnest($1::varchar[])", "$2::date", "$3::date") for q in _HAND_OVER_SQL
)
_SQLITE_HAND_OVER_SQL = tuple(
    q.format("SELECT value FROM json_each(?)", "?", "?") for q in _HAND_OVER_SQL
)


async def _manager_reads(
    conn: AsyncConnection, manager_id: str, start: date, end: date, last: date
) -> tuple[ManagerFigures, _Opening, list[_Change], list[tuple[str, str]]]:
    """The figures of [start, end], the balance opening in force for ``start``'s year and
    the change rows from its year to ``last`` (as ``models.balances._period_sums``), and the
    handed-over holder rows naming the manager (client_id, segments): SQLite, every read
    in one hop to aiosqlite's thread and one snapshot; PostgreSQL, one statement."""
    dialect = conn.dialect
    sql = _FIGURES_SQL[dialect.name]
    # the holders' segments are ``json.dumps`` of [day, manager, branch] lists: a manager's
    # id appears in them as its JSON string (``hand_overs_of`` then checks each segment)
    needle = json.dumps(manager_id)
    driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg or aiosqlite
    if dialect.name == "postgresql":
        # one round trip: everything as scalar subqueries of the sums
        row = await driver.fetchrow(_PG_FIGURES, manager_id, start, end, start.year, last, needle)
        n = len(_ALL_COLUMNS)
        ats, amounts, value, year, liability, asset, days, liabilities, assets, cids, texts = row[
            n:
        ]
        targets = list(zip(ats, amounts, strict=True)) if ats else []
        figures = _figures(row[:n], targets, [(value,)] if value is not None else [], dialect)
        opening = None if year is None else (year, {"liability": liability, "asset": asset})
        changes = list(zip(days, liabilities, assets, strict=True)) if days else []
        holders = list(zip(cids, texts, strict=True)) if cids else []
        return figures, opening, changes, holders
    lo, hi = start.isoformat(), end.isoformat()
    sums_sql, targets_sql, hired_sql, opening_sql, changes_sql, holders_sql = sql

    def read(db: Any) -> tuple[Any, ...]:  # every read in one hop
        opened = db.execute(opening_sql, (manager_id, start.year)).fetchone()
        floor = "" if opened is None else f"{opened[0]:04d}-01-01"
        return (
            db.execute(sums_sql, (manager_id, lo, hi)).fetchone(),
            db.execute(targets_sql, (manager_id,)).fetchall(),
            db.execute(hired_sql, (manager_id,)).fetchall(),
            opened,
            db.execute(changes_sql, (manager_id, last.isoformat(), floor)).fetchall(),
            db.execute(holders_sql, (needle,)).fetchall(),
        )

    sums, targets, upsert, opened, rows, holders = await _sqlite_snapshot(driver, read)
    figures = _figures(sums, targets, upsert, dialect)
    opening = (
        None
        if opened is None
        else (opened[0], {"liability": Decimal(opened[1]), "asset": Decimal(opened[2])})
    )
    changes = [(date.fromisoformat(d), Decimal(li), Decimal(a)) for d, li, a in rows]
    return figures, opening, changes, holders


async def _sqlite_snapshot(driver: Any, read: Callable[[Any], Any]) -> Any:
    """``read(sqlite3 connection)`` in aiosqlite's thread, in one hop, its reads in one
    snapshot (a read transaction of its own unless one is open); ``decimal_sum`` is
    registered on that connection."""

    def run() -> Any:
        db = driver._conn
        own = not db.in_transaction
        if own:
            db.execute("BEGIN")
        try:
            return read(db)
        finally:
            if own:
                db.execute("ROLLBACK")

    return await driver._execute(run)


async def driver_row(conn: AsyncConnection, sql: str, *params: Any) -> Any:
    """The first row of one read on the driver (``sql`` with ``?`` marks, made ``$n`` on
    PostgreSQL), or None: a plain lookup without SQLAlchemy's statement and result work,
    in one thread hop on SQLite."""
    driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg or aiosqlite
    if conn.dialect.name == "postgresql":
        return await driver.fetchrow(_numbered(sql), *params)

    def read() -> Any:
        return driver._conn.execute(sql, params).fetchone()

    return await driver._execute(read)


@lru_cache(maxsize=64)
def _numbered(sql: str) -> str:
    parts = sql.split("?")
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))
