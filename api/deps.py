"""Request dependencies as ``Annotated`` aliases: settings, database connection, caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.auth import Principal, TokenError, decode_token
from api.errors import Forbidden, Unauthorized
from api.reads import ReadCache
from config import ApiConfig

_bearer = HTTPBearer(auto_error=False, description="A token from `crm-tracker token`")


# Dependencies are ``async def`` even when they do no I/O: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hop per dependency per request.
async def get_settings(request: Request) -> ApiConfig:
    return request.app.state.settings


async def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    async with request.app.state.engine.connect() as conn:
        yield conn


def principal_of(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal:
    """The caller of a request with these credentials; 401 without a valid bearer token."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    try:
        return decode_token(request.app.state.secret, creds.credentials)
    except TokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None


def require_roles(*roles: str):
    async def check(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        user = principal_of(request, creds)
        if user.role not in roles:
            raise Forbidden("out of scope for this role")
        return user

    return check


@dataclass(frozen=True)
class Reading:
    """A request's cached reads (api/reads.py ``cached_read``, ``cached_answer``): the read
    cache, the data version this request reads at (read once per request, after it arrived)
    and the settings, as one dependency (FastAPI's work per request grows with the number
    of dependencies)."""

    cache: ReadCache
    version: tuple[int, int] | None
    settings: ApiConfig


async def reading(request: Request) -> Reading:
    state = request.app.state
    return Reading(state.reads, await state.reads.version(), state.settings)


SettingsDep = Annotated[ApiConfig, Depends(get_settings)]
ReadingDep = Annotated[Reading, Depends(reading)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
ConnDep = Annotated[AsyncConnection, Depends(get_conn)]
Reader = Annotated[Principal, Depends(require_roles("manager", "supervisor", "admin"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]


class ErrorOut(BaseModel):
    """Every error answer: ``{"detail": ...}`` (a message, or the list of invalid fields)."""

    detail: str | list[dict[str, Any]]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or an invalid one (expired, bad signature)"},
    403: {"model": ErrorOut, "description": "out of scope for the caller's role or branches"},
    404: {"model": ErrorOut, "description": "unknown id"},
    422: {"model": ErrorOut, "description": "bad input: the detail names what and why"},
}
