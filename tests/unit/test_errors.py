"""The API's errors: each kind answered with its status code and ``{"detail": message}`` by
one handler (api/errors.py), as inline HTTPExceptions answered before."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from api import errors
from models.errors import CRMError, NotFound


def _app(exc: Exception) -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/x")
    async def fail() -> None:
        raise exc

    return app


@pytest.mark.parametrize(
    ("exc", "code", "detail", "challenge"),
    [
        (errors.Unauthorized("missing bearer token"), 401, "missing bearer token", "Bearer"),
        (errors.Unauthorized("unknown feed", challenge=False), 401, "unknown feed", None),
        (errors.Forbidden("out of scope"), 403, "out of scope", None),
        (NotFound("manager", "m036"), 404, "manager m036 not found", None),
        (errors.NotFound("reminder", 7), 404, "reminder 7 not found", None),
        (errors.Conflict("retry"), 409, "retry", None),
        (errors.Invalid("from must not be after to"), 422, "from must not be after to", None),
        (errors.Unavailable("broker down"), 503, "broker down", None),
        (CRMError("a kind with no answer"), 500, "internal error", None),
    ],
)
async def test_each_kind_is_answered_with_its_status(
    exc: Exception, code: int, detail: str, challenge: str | None
) -> None:
    transport = httpx.ASGITransport(app=_app(exc))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/x")
    assert (r.status_code, r.json()) == (code, {"detail": detail})
    assert r.headers.get("www-authenticate") == challenge
