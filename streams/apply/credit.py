"""The credit rule: who is credited with a fact, for which branch, on which bank day, at
which claim ratio and weighted profit, or that the fact must wait (be held).

Pure: plain data in, plain data out; no database, no clock. The live apply, the move of
facts after a late transfer and the replay (``streams/replay.py``) all call ``credit``;
nothing else decides credit.

Inputs
------
- the event (``models.events.Event``: a transaction, an account opening or a visit);
- the client's terms (``ClientTerms``: current manager, claim ratio, origin), or None when
  the client is not known yet;
- the client's assignment history, oldest first: ``[(assigned_at, manager_id), ...]``;
- the managers that may be credited (``ManagerTerms``: branch, active flag), by id;
- the policy (coefficients, claim-ratio defaults, FX rates, time zone).

The hand-over rule of DOMAIN.md (增量认领) plugs in here: it needs, per fact, the opening
instant of the fact's account (``account_opened_at``) and whether the previous manager is
still active (``ManagerTerms.active``), both inputs of this function.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from models.events import AccountOpened, Event, TransactionPosted, VisitLogged
from models.policy import (
    ACCOUNT_TYPES,
    BUSINESS_LINES,
    VISIT_KINDS,
    VISIT_METHODS,
    Policy,
    claim_ratio,
    to_cny,
    weighted_profit,
)

Assignment = tuple[datetime, str]
"""One row of a client's assignment history: (assigned_at, manager_id)."""


class ClientTerms(NamedTuple):
    """What the credit rule reads of a client record."""

    manager_id: str
    claim_ratio: Decimal | None = None
    origin: str | None = None


class ManagerTerms(NamedTuple):
    """What the credit rule reads of a manager record."""

    branch_id: str
    active: bool = True


class Credit(NamedTuple):
    """Where a fact counts, and what it adds to that day's bucket (a named tuple: one is
    built per fact, and a tuple is the cheapest immutable record Python builds)."""

    manager_id: str
    branch_id: str
    day: date
    ratio: Decimal | None
    """The claim ratio applied (transactions; None for openings and visits)."""
    weighted_profit: Decimal | None
    """simulated profit × coefficient × ratio, exact (transactions only)."""
    columns: tuple[tuple[str, int | Decimal], ...]
    """The bucket columns the fact adds to (column, amount)."""


class Wait(NamedTuple):
    """The fact cannot be credited yet: the client or the manager is not known."""

    reason: str
    client_id: str | None = None
    """The client it waits for (None: the client is known)."""
    manager_id: str | None = None
    """The manager it waits for (None: no manager is missing, or none can be named yet)."""


_LINE_COLUMNS = {line: (f"volume_{line}", f"profit_{line}") for line in BUSINESS_LINES}
_ACCOUNT_COLUMNS = {
    (t, o): ((f"accounts_{t}", 1), (f"accounts_{o}", 1))
    for t in ACCOUNT_TYPES
    for o in ("natural", "marketed")
}
_VISIT_COLUMNS = {
    (m, k): (("visits_total", 1), (f"visits_{m}", 1), (f"visits_{k}", 1))
    for m in VISIT_METHODS
    for k in VISIT_KINDS
}


def attribution(history: Sequence[Assignment], at: datetime) -> tuple[str | None, int]:
    """Who held the client at ``at`` (the last assignment at or before it, else the first),
    and which assignment that is (0: the first; later ones are hand-overs)."""
    if not history:
        return None, 0
    i = max(bisect.bisect_right(history, at, key=lambda h: h[0]) - 1, 0)
    return history[i][1], i


def attributed_manager(history: Sequence[Assignment], at: datetime) -> str | None:
    """Who held the client at ``at``: the last assignment at or before it, else the first."""
    return attribution(history, at)[0]


def credit(
    event: Event,
    client: ClientTerms | None,
    history: Sequence[Assignment],
    managers: Mapping[str, ManagerTerms],
    policy: Policy,
    tz: ZoneInfo | None = None,
) -> Credit | Wait:
    """The credit of one fact (CONTRACT.md "Attribution", README "Rules where the contract
    leaves room"), or why it waits.

    - a visit counts for its visitor (``payload.manager_id``);
    - otherwise ``payload.manager_id`` if given, else the manager who held the client at the
      event's ``occurred_at`` (before the first assignment: the first manager);
    - the branch is the credited manager's; the day is the bank day of ``occurred_at``;
    - the client's claim ratio applies whoever is credited (unset: the policy's default, or
      its defaults by origin and hand-over).
    """
    p = event.payload
    cid: str = p.client_id  # type: ignore[union-attr]
    override: str | None = p.manager_id
    handed_over = False
    if client is None:
        reason = f"client {cid} is not known yet"
        if override is not None and override not in managers:
            return Wait(f"{reason}; manager {override} is not known yet", cid, override)
        return Wait(reason, cid, None)
    if override is None:
        holder, index = attribution(history, event.occurred_at)
        override = holder or client.manager_id
        handed_over = index > 0
    manager = managers.get(override)
    if manager is None:
        return Wait(f"manager {override} is not known yet", None, override)
    return credit_to(event, override, manager.branch_id, client, handed_over, policy, tz)


def credit_to(
    event: Event,
    manager_id: str,
    branch_id: str,
    client: ClientTerms | None,
    handed_over: bool,
    policy: Policy,
    tz: ZoneInfo | None = None,
) -> Credit:
    """The credit of a fact to a given manager (the second half of ``credit``)."""
    day = event.occurred_at.astimezone(tz or policy.tz).date()
    p = event.payload
    if isinstance(p, TransactionPosted):
        line = p.business_line
        amount = to_cny(p.amount, p.currency, policy)
        profit = to_cny(p.simulated_profit, p.currency, policy)
        ratio = claim_ratio(
            client.claim_ratio if client is not None else None,
            client.origin if client is not None else None,
            handed_over,
            line,
            policy,
        )
        weighted = weighted_profit(profit, line, ratio, policy)
        volume, simulated = _LINE_COLUMNS[line]
        columns: tuple[tuple[str, int | Decimal], ...] = (
            ("transactions", 1),
            (volume, amount),
            (simulated, profit),
            ("weighted_profit", weighted),
        )
        return Credit(manager_id, branch_id, day, ratio, weighted, columns)
    if isinstance(p, AccountOpened):
        columns = _ACCOUNT_COLUMNS[(p.account_type, p.origin)]
    elif isinstance(p, VisitLogged):
        columns = _VISIT_COLUMNS[(p.method, p.kind)]
    else:  # pragma: no cover - reference data is never credited
        raise TypeError(f"{event.event_type} is not a fact")
    return Credit(manager_id, branch_id, day, None, None, columns)


def fact_columns(event: Event, weighted: Decimal | None, policy: Policy) -> dict[str, Any]:
    """What a fact added to its bucket, with the weighted profit it was credited (to take
    back exactly that when it moves)."""
    c = credit_to(event, "", "", None, False, policy)
    out: dict[str, Any] = dict(c.columns)
    if "weighted_profit" in out and weighted is not None:
        out["weighted_profit"] = weighted
    return out
