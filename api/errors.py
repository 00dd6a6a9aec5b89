"""The API's errors and how each is answered: ``{"detail": message}`` with its status code,
by one exception handler (``install``) for every ``CRMError`` raised under a route."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from models.errors import Conflict, CRMError, Invalid, NotFound

__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "Unauthorized",
    "Unavailable",
    "install",
]

log = logging.getLogger("crmtracker.api")


class APIError(CRMError):
    """Base of the errors only the API raises (who the caller is, what it may see)."""


class Unauthorized(APIError):
    """No valid credentials; ``challenge``: answer with ``WWW-Authenticate: Bearer``."""

    def __init__(self, detail: str, *, challenge: bool = True) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": "Bearer"} if challenge else None


class Forbidden(APIError):
    """Out of scope for the caller's role or branches."""


class Unavailable(APIError):
    """A dependency (the broker) cannot answer now."""


STATUS: dict[type[CRMError], int] = {
    Unauthorized: status.HTTP_401_UNAUTHORIZED,
    Forbidden: status.HTTP_403_FORBIDDEN,
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Invalid: status.HTTP_422_UNPROCESSABLE_CONTENT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def status_of(exc: CRMError) -> int:
    """The status code of an error: its nearest kind's (500 for a kind the API has no answer
    for: a mistake, logged)."""
    for kind in type(exc).__mro__:
        code = STATUS.get(kind)
        if code is not None:
            return code
    return status.HTTP_500_INTERNAL_SERVER_ERROR


async def answer(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CRMError)
    code = status_of(exc)
    if code == status.HTTP_500_INTERNAL_SERVER_ERROR:
        log.error("unmapped %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=code)
    return JSONResponse(
        {"detail": exc.detail}, status_code=code, headers=getattr(exc, "headers", None)
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(CRMError, answer)
