"""Who may see what, in one place: dependencies that resolve a path's manager or branch and
check the caller's scope before any route code runs.

- ``manager`` tokens: their own manager id (and its clients) only;
- ``supervisor`` tokens: the managers and clients of their token's branches;
- ``ops`` tokens: only ``/v1/ops/*`` and ``/metrics`` (every route here refuses them);
- ``admin`` tokens: everything.

Order of answers: 401 without a valid token, 403 when the role may never see such data (or a
manager asks for another manager), 404 for an unknown id, 403 for a known one out of scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from api.auth import Principal
from api.deps import ConnDep, Reader, ReadingDep
from api.errors import Forbidden, NotFound
from api.reads import cached_read
from models.followup import Scope, client_row, reminder_scope_row
from models.tables import ManagerRow
from models.tally import driver_row

ManagerId = Annotated[str, Path(min_length=1, max_length=128, description="a manager id")]
BranchId = Annotated[str, Path(min_length=1, max_length=128, description="a branch id")]
ClientId = Annotated[str, Path(min_length=1, max_length=128, description="a client id")]
ReminderId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a reminder id")]


@dataclass(frozen=True)
class ManagerRef:
    manager_id: str
    branch_id: str
    name: str | None
    active: bool


_REF_COLUMNS = (ManagerRow.manager_id, ManagerRow.branch_id, ManagerRow.name, ManagerRow.active)


_REF_SQL = "SELECT manager_id, branch_id, name, active FROM managers WHERE manager_id = ?"


@cached_read("managers")
async def manager_ref(conn: AsyncConnection, manager_id: str) -> ManagerRef | None:
    # on the driver: every tally request makes this lookup, again whenever the data moved
    row = await driver_row(conn, _REF_SQL, manager_id)
    return None if row is None else ManagerRef(row[0], row[1], row[2], bool(row[3]))


@cached_read("managers")
async def branch_refs(conn: AsyncConnection, branch_id: str) -> tuple[ManagerRef, ...]:
    rows = await conn.execute(
        select(*_REF_COLUMNS)
        .where(ManagerRow.branch_id == branch_id)
        .order_by(ManagerRow.manager_id)
    )
    return tuple(ManagerRef(*r) for r in rows.all())


async def manager_in_scope(manager_id: ManagerId, user: Reader, reading: ReadingDep) -> ManagerRef:
    """The path's manager, if the caller may see it (the lookup goes through the read cache)."""
    if user.role == "manager" and user.manager_id != manager_id:
        raise Forbidden("managers see their own data only")
    ref = await manager_ref(reading, manager_id)
    if ref is None:
        raise NotFound("manager", manager_id)
    if not user.can_see_manager(manager_id, ref.branch_id):
        raise Forbidden("manager is outside your branches")
    return ref


async def branch_in_scope(
    branch_id: BranchId, user: Reader, reading: ReadingDep
) -> list[ManagerRef]:
    """The path's branch (its managers), if the caller may see it."""
    if not user.can_see_branch(branch_id):
        raise Forbidden("branch is outside your scope")
    refs = await branch_refs(reading, branch_id)
    if not refs:
        raise NotFound("branch", branch_id)
    return list(refs)


async def client_in_scope(client_id: ClientId, user: Reader, conn: ConnDep) -> Any:
    """The path's client (with its manager's branch), if the caller may see it."""
    c = await client_row(conn, client_id)
    if c is None:
        raise NotFound("client", client_id)
    if not user.can_see_manager(c.manager_id, c.manager_branch_id):
        raise Forbidden("out of scope for this caller")
    return c


async def reminder_in_scope(reminder_id: ReminderId, user: Reader, conn: ConnDep) -> int:
    """404 for an unknown reminder, 403 unless the caller is its manager, their supervisor
    (the manager's branch) or an admin. Ends the read so a write starts its own."""
    r = await reminder_scope_row(conn, reminder_id)
    await conn.rollback()
    if r is None:
        raise NotFound("reminder", reminder_id)
    if not user.can_see_manager(r.manager_id, r.manager_branch_id):
        raise Forbidden("out of scope for this caller")
    return reminder_id


def caller_scope(user: Principal) -> Scope:
    """What the caller may see: a manager their own clients, a supervisor their branches."""
    if user.role == "manager":
        return Scope(manager_ids=frozenset({user.manager_id or ""}))
    if user.role == "supervisor":
        return Scope(branch_ids=user.branches)
    return Scope()


async def forbid_out_of_scope(
    conn: Any, user: Principal, manager_id: str | None, branch_id: str | None
) -> None:
    """A filter naming someone the caller may not see is a 403, not an empty list."""
    if manager_id is not None and user.role == "manager" and manager_id != user.manager_id:
        raise Forbidden("out of scope: another manager")
    if branch_id is not None and user.role == "supervisor" and branch_id not in user.branches:
        raise Forbidden("out of scope: another branch")
    if branch_id is not None and user.role == "manager":
        home = (
            await conn.execute(
                select(ManagerRow.branch_id).where(ManagerRow.manager_id == user.manager_id)
            )
        ).scalar_one_or_none()
        if home != branch_id:
            raise Forbidden("out of scope: another branch")
    if manager_id is not None and user.role == "supervisor":
        home = (
            await conn.execute(
                select(ManagerRow.branch_id).where(ManagerRow.manager_id == manager_id)
            )
        ).scalar_one_or_none()
        if home is None or home not in user.branches:
            raise Forbidden("out of scope: another branch")


ManagerInScope = Annotated[ManagerRef, Depends(manager_in_scope)]
ClientInScope = Annotated[Any, Depends(client_in_scope)]
ReminderInScope = Annotated[int, Depends(reminder_in_scope)]
BranchInScope = Annotated[list[ManagerRef], Depends(branch_in_scope)]
