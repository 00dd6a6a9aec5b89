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
from typing import Annotated

from fastapi import Depends, HTTPException, Path, status
from sqlalchemy import select

from api.deps import ConnDep, Reader
from models.tables import ManagerRow

ManagerId = Annotated[str, Path(min_length=1, max_length=128, description="a manager id")]
BranchId = Annotated[str, Path(min_length=1, max_length=128, description="a branch id")]


@dataclass(frozen=True)
class ManagerRef:
    manager_id: str
    branch_id: str
    name: str | None
    active: bool


async def manager_in_scope(manager_id: ManagerId, user: Reader, conn: ConnDep) -> ManagerRef:
    """The path's manager, if the caller may see it."""
    if user.role == "manager" and user.manager_id != manager_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "managers see their own data only")
    row = (
        await conn.execute(
            select(
                ManagerRow.manager_id, ManagerRow.branch_id, ManagerRow.name, ManagerRow.active
            ).where(ManagerRow.manager_id == manager_id)
        )
    ).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"manager {manager_id} not found")
    if not user.can_see_manager(manager_id, row.branch_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "manager is outside your branches")
    return ManagerRef(row.manager_id, row.branch_id, row.name, row.active)


async def branch_in_scope(branch_id: BranchId, user: Reader, conn: ConnDep) -> list[ManagerRef]:
    """The path's branch (its managers), if the caller may see it."""
    if not user.can_see_branch(branch_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "branch is outside your scope")
    rows = (
        await conn.execute(
            select(ManagerRow.manager_id, ManagerRow.branch_id, ManagerRow.name, ManagerRow.active)
            .where(ManagerRow.branch_id == branch_id)
            .order_by(ManagerRow.manager_id)
        )
    ).all()
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"branch {branch_id} not found")
    return [ManagerRef(r.manager_id, r.branch_id, r.name, r.active) for r in rows]


ManagerInScope = Annotated[ManagerRef, Depends(manager_in_scope)]
BranchInScope = Annotated[list[ManagerRef], Depends(branch_in_scope)]
