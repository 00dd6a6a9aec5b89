"""The fast path of the manager tally and the branch leaderboard (api/deps.py
``fast_path_route``): it answers the plain requests in scope, exactly as the declared route
does, and leaves every other request (errors included) to the route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import api.routes.tally as tally_routes
from testkit.book import auth

TALLY = "/v1/managers/m1/tally"
BOARD = "/v1/branches/b1/leaderboard"


@pytest.fixture
def fast_answers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The spans the fast path answered for (only the fast path calls ``plain_span``)."""
    seen: list[Any] = []
    plain_span = tally_routes.plain_span

    def spy(request: Any, query: Any) -> Any:
        seen.append(span := plain_span(request, query))
        return span

    monkeypatch.setattr(tally_routes, "plain_span", spy)
    monkeypatch.setattr("api.routes.leaderboard.plain_span", spy)
    return seen


def _same(fast: httpx.Response, full: httpx.Response) -> None:
    assert (fast.status_code, fast.headers["content-type"]) == (
        full.status_code,
        full.headers["content-type"],
    )
    a, b = fast.json(), full.json()
    a.pop("as_of", None), b.pop("as_of", None)
    for item in [*a.get("items", []), *b.get("items", [])]:
        item["tally"].pop("as_of", None)
    assert a == b


@pytest.mark.parametrize(
    ("path", "query", "role", "kw"),
    [
        (TALLY, "period=month&at=2026-11-03", "manager", {"manager_id": "m1"}),
        (TALLY, "period=week", "supervisor", {"branches": ["b1"]}),
        (TALLY, "", "admin", {}),
        (BOARD, "period=month&at=2026-11-03", "supervisor", {"branches": ["b1"]}),
        (BOARD, "metric=transactions&limit=1", "admin", {}),
    ],
)
async def test_a_plain_request_gets_the_routes_answer(
    api: httpx.AsyncClient, fast_answers: list[Any], path: str, query: str, role: str, kw: Any
) -> None:
    headers = auth(role, **kw)
    fast = await api.get(f"{path}?{query}", headers=headers)
    assert fast.status_code == 200 and len(fast_answers) == 1
    # a repeated parameter is not plain: the declared route answers (its last value counts)
    first = query.split("&")[0] if query else "period=month"
    full = await api.get(f"{path}?{first}&{query or first}", headers=headers)
    assert len(fast_answers) == 1
    _same(fast, full)


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        (f"{TALLY}?period=month", {}, 401),
        (f"{TALLY}?period=month", {"Authorization": "Bearer nonsense"}, 401),
        (f"{TALLY}?period=month", auth("ops"), 403),
        (f"{TALLY}?period=month", auth("manager", manager_id="m2"), 403),
        (f"{TALLY}?period=month", auth("supervisor", branches=["b2"]), 403),
        ("/v1/managers/nobody/tally?period=month", auth("admin"), 404),
        (f"{TALLY}?period=decade", auth("admin"), 422),
        (f"{TALLY}?at=2026-02-30", auth("admin"), 422),
        (f"{TALLY}?from=2026-11-05&to=2026-11-01", auth("admin"), 422),
        (f"{BOARD}?period=month", auth("manager", manager_id="m1"), 403),
        (f"{BOARD}?period=month", auth("supervisor", branches=["b2"]), 403),
        ("/v1/branches/nowhere/leaderboard", auth("admin"), 404),
        (f"{BOARD}?metric=luck", auth("admin"), 422),
        (f"{BOARD}?limit=0", auth("admin"), 422),
        (f"{BOARD}?limit=1001", auth("admin"), 422),
    ],
)
async def test_errors_are_the_routes_own(
    api: httpx.AsyncClient, fast_answers: list[Any], path: str, headers: Any, status: int
) -> None:
    r = await api.get(path, headers=headers)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    assert fast_answers == []


@pytest.mark.parametrize(
    "query", ["from=2026-11-01&to=2026-11-05", "at=20261103", "limit=010", "cursor=", "x=1"]
)
async def test_other_queries_go_through_the_route(
    api: httpx.AsyncClient, fast_answers: list[Any], query: str
) -> None:
    r = await api.get(f"{BOARD}?{query}", headers=auth("admin"))
    assert fast_answers == []
    assert r.status_code in (200, 422)
