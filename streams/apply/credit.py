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

- the opening instant of a transaction's account (``opened_at``: the earliest
  ``account.opened`` of that account; None when never seen opened).

The hand-over rule of DOMAIN.md (他人移交的客户, 增量认领, ``Policy.handover_mode``
``increment``): after a hand-over, a transaction on an account the client held before it
(opened before it, or never seen opened) stays with the manager who held the client when the
account was opened (never seen opened: the first manager), while that manager is active; a
transaction on an account opened from the hand-over on goes to the new manager at the
hand-over ratios. ``full``, or the previous manager inactive (left): everything from the
hand-over on goes to the new manager.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from models.events import AccountOpened, BalanceSnapshot, Event, TransactionPosted, VisitLogged
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


_ASSIGNED_AT = operator.itemgetter(0)


def attribution(history: Sequence[Assignment], at: datetime) -> tuple[str | None, int]:
    """Who held the client at ``at`` (the last assignment at or before it, else the first),
    and which assignment that is (0: the first; later ones are hand-overs)."""
    if len(history) < 2:  # none, or one assignment: the first manager whenever it was
        return (history[0][1], 0) if history else (None, 0)
    i = max(bisect.bisect_right(history, at, key=_ASSIGNED_AT) - 1, 0)
    return history[i][1], i


def attributed_manager(history: Sequence[Assignment], at: datetime) -> str | None:
    """Who held the client at ``at``: the last assignment at or before it, else the first."""
    return attribution(history, at)[0]


def stock_owner(
    history: Sequence[Assignment], index: int, opened_at: datetime | None
) -> tuple[str, int] | None:
    """The manager whose existing business (存量业务) a fact under assignment ``index`` is, and
    that manager's assignment: the holder when the fact's account was opened (never seen
    opened: the first manager), if that is an earlier assignment of another manager; else
    None (the fact is the current holder's)."""
    if index == 0:
        return None
    j = 0 if opened_at is None else attribution(history, opened_at)[1]
    if j >= index or history[j][1] == history[index][1]:
        return None
    return history[j][1], j


def credit(
    event: Event,
    client: ClientTerms | None,
    history: Sequence[Assignment],
    managers: Mapping[str, ManagerTerms],
    policy: Policy,
    tz: ZoneInfo | None = None,
    opened_at: datetime | None = None,
) -> Credit | Wait:
    """The credit of one fact (CONTRACT.md "Attribution", README "Rules where the contract
    leaves room"), or why it waits.

    - a visit counts for its visitor (``payload.manager_id``);
    - otherwise ``payload.manager_id`` if given, else the manager who held the client at the
      event's ``occurred_at`` (before the first assignment: the first manager);
    - after a hand-over, in ``increment`` mode, a transaction on an existing account (see
      ``stock_owner``; ``opened_at`` is its account's opening) stays with the manager who held
      it while that manager is active (inactive: the new manager, a full transfer);
    - the branch is the credited manager's; the day is the bank day of ``occurred_at``;
    - the client's claim ratio applies whoever is credited (unset: the hand-over ratios for
      business a manager claims after a hand-over, else the policy's default or its defaults
      by origin).
    """
    p = event.payload
    cid: str = p.client_id  # type: ignore[union-attr]
    # a balance snapshot names no manager: its client's holder
    override: str | None = getattr(p, "manager_id", None)
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
        if handed_over and policy.handover_mode == "increment" and isinstance(p, TransactionPosted):
            owner = stock_owner(history, index, opened_at)
            if owner is not None:
                previous = managers.get(owner[0])
                if previous is None:  # whether it is active decides: wait for its record
                    return Wait(f"manager {owner[0]} is not known yet", None, owner[0])
                if previous.active:
                    override, handed_over = owner[0], owner[1] > 0
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
    elif isinstance(p, BalanceSnapshot):
        columns = ()  # balances keep their own day changes (streams/balances.py)
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
