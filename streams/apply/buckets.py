"""Deltas to the daily buckets, summed in memory per (manager, day) and (branch, day)
before they touch the database (one upsert per table per batch)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from streams.apply.credit import Credit
from streams.apply.ledger import COLUMN_INDEX, Deltas, Ledger


class Tally:
    """The batch's bucket deltas; ``touched`` lists (manager, branch, day) for the stream."""

    __slots__ = ("_cells", "branch", "manager")

    def __init__(self) -> None:
        self.manager: Deltas = {}
        self.branch: Deltas = {}
        self._cells: dict[tuple[str, str, date], tuple[dict[int, Any], dict[int, Any]]] = {}
        """(manager, branch, day) → its manager's and its branch's cells of that day: one
        look-up per fact instead of three."""

    @property
    def touched(self) -> set[tuple[str, str, date]]:
        return set(self._cells)

    def add(self, c: Credit, sign: int = 1) -> None:
        """Add a credit (``sign=-1``: take it back)."""
        self.add_columns(c.manager_id, c.branch_id, c.day, c.columns, sign)

    def add_columns(
        self,
        manager_id: str,
        branch_id: str,
        day: date,
        columns: Iterable[tuple[str, Any]],
        sign: int = 1,
    ) -> None:
        key = (manager_id, branch_id, day)
        cells = self._cells.get(key)
        if cells is None:
            m = self.manager.get((manager_id, day))
            if m is None:
                m = self.manager[(manager_id, day)] = {}
            b = self.branch.get((branch_id, day))
            if b is None:
                b = self.branch[(branch_id, day)] = {}
            cells = self._cells[key] = (m, b)
        m, b = cells
        index = COLUMN_INDEX
        for col, v in columns:  # the same additions, in the same order, as column by column
            i = index[col]
            if sign < 0:
                v = -v
            m[i] = m.get(i, 0) + v
            b[i] = b.get(i, 0) + v

    async def write(self, ledger: Ledger, conn: AsyncConnection) -> None:
        await ledger.add(conn, "manager", self.manager)
        await ledger.add(conn, "branch", self.branch)

    def stream_entries(self) -> list[tuple[str, str, date, None]]:
        return [(m, b, d, None) for m, b, d in self._cells]
