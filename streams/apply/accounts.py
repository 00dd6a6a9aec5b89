"""Account openings: each account's opening instant (``accounts``), which the hand-over rule
(增量认领, ``streams.apply.credit``) reads to tell a client's existing accounts from the ones
opened after a hand-over. One statement per batch; the earliest opening of an account wins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import AccountOpened, Event
from models.tables import AccountRow
from streams.apply.ledger import Ledger


class Accounts:
    def __init__(self, ledger: Ledger) -> None:
        self._pg = ledger.dialect == "postgresql"
        stmt = ledger.insert(AccountRow)
        earliest = func.least if ledger.dialect == "postgresql" else func.min
        self._stmt = stmt.on_conflict_do_update(
            index_elements=["account_id"],
            set_={"opened_at": earliest(AccountRow.opened_at, stmt.excluded.opened_at)},
        )

    async def record(self, conn: AsyncConnection, fresh: Sequence[Event]) -> set[str]:
        """Record the openings among these newly claimed facts (held ones too: the opening is a
        fact whoever is credited); return their clients."""
        rows: dict[str, dict[str, Any]] = {}
        for e in fresh:
            p = e.payload
            if not isinstance(p, AccountOpened):
                continue
            known = rows.get(p.account_id)
            if known is None or e.occurred_at < known["opened_at"]:
                rows[p.account_id] = {
                    "account_id": p.account_id,
                    "client_id": p.client_id,
                    "opened_at": e.occurred_at,
                }
        if rows and self._pg:
            # on the driver: the openings as one JSON document, in account order
            doc = [(k, rows[k]["client_id"], rows[k]["opened_at"]) for k in sorted(rows)]
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute(_PG_RECORD, _JSON.encode(doc).decode())  # type: ignore[union-attr]
        elif rows:
            await conn.execute(self._stmt, [rows[k] for k in sorted(rows)])
        return {r["client_id"] for r in rows.values()}


_JSON = msgspec.json.Encoder()
_PG_RECORD = (
    "INSERT INTO accounts (account_id, client_id, opened_at)"
    " SELECT r->>0, r->>1, (r->>2)::timestamptz"
    " FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n"
    " ON CONFLICT (account_id) DO UPDATE SET opened_at = least(accounts.opened_at, excluded.opened_at)"
)
