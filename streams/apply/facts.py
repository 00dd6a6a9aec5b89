"""Facts (transactions, account openings, visits) on their way through a batch: each is
credited by the one rule (``credit``) against terms read once for the whole batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import BalanceSnapshot, Event, TransactionPosted
from models.policy import Policy
from streams.apply.credit import Credit, Wait, credit
from streams.apply.ledger import Ledger
from streams.apply.messages import Incoming
from streams.apply.terms import Terms


class Fact:
    """A fact and what the credit rule said of it: ``credit`` or ``wait`` (set together by
    ``outcome``; plain slots, read several times per fact in a batch)."""

    __slots__ = ("credit", "event", "held_id", "msg", "wait")

    def __init__(
        self,
        event: Event,
        msg: Incoming | None,
        held_id: int | None = None,
        outcome: Credit | Wait | None = None,
    ) -> None:
        self.event = event
        self.msg: Incoming | None = msg
        """None for a released held event (it was claimed when it was held)."""
        self.held_id = held_id
        self.credit: Credit | None = None
        self.wait: Wait | None = None
        if outcome is not None:
            self.outcome = outcome

    @property
    def outcome(self) -> Credit | Wait | None:
        return self.credit if self.credit is not None else self.wait

    @outcome.setter
    def outcome(self, value: Credit | Wait | None) -> None:
        if isinstance(value, Credit):
            self.credit, self.wait = value, None
        else:
            assert value is None or isinstance(value, Wait)
            self.credit, self.wait = None, value


async def resolve(
    ledger: Ledger, conn: AsyncConnection, facts: Sequence[Fact], policy: Policy, tz: ZoneInfo
) -> Terms | None:
    """Credit each fact (or say what it waits for), reading the terms in three statements (a
    fourth for the accounts of handed-over clients); return the terms read."""
    if not facts:
        return None
    terms = await ledger.load_terms(
        conn,
        {f.event.payload.client_id for f in facts},  # type: ignore[union-attr]
        # a balance snapshot names no manager
        {m for f in facts if (m := getattr(f.event.payload, "manager_id", None)) is not None},
    )
    terms.note_openings(f.event for f in facts)  # an opening and its account's business together
    clients, history, managers, opened = terms.clients, terms.history, terms.managers, terms.opened
    # a balance snapshot's credit depends on nothing but its client and ``occurred_at`` (it
    # names no manager, adds no column): a night's snapshots of a client share one
    snapshots: dict[tuple[str, datetime], Credit | Wait] = {}
    for f in facts:
        p = f.event.payload
        cid = p.client_id  # type: ignore[union-attr]
        if type(p) is BalanceSnapshot:
            key = (cid, f.event.occurred_at)
            outcome = snapshots.get(key)
            if outcome is None:
                outcome = snapshots[key] = credit(
                    f.event, clients.get(cid), history.get(cid, ()), managers, policy, tz
                )
            f.outcome = outcome
            continue
        f.outcome = credit(
            f.event,
            clients.get(cid),
            history.get(cid, ()),
            managers,
            policy,
            tz,
            opened.get(p.account_id) if opened and isinstance(p, TransactionPosted) else None,
        )
    return terms
