"""The OpenAPI documents every route: a description, its error answers and a real example
(api/examples.json, which must still look like what the routes answer)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from api.make_examples import EXAMPLES, _collect
from config import Settings
from crmtracker.compose import api_app as create_app
from testkit.paths import VECTORS

ROUTES = Path(__file__).with_name("openapi_routes.json")


def test_every_route_has_a_description_errors_and_an_example() -> None:
    spec = create_app(Settings(auth_secret="o" * 40)).openapi()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("description") or op.get("summary"), (method, path)
            assert "example" in json.dumps(op["responses"]["200"]), (method, path)
            if path.startswith("/v1/"):
                assert {"401", "403", "422"} <= set(op["responses"]), (method, path)


def test_the_routes_methods_and_status_codes_are_the_recorded_ones() -> None:
    """Every path, its methods and the status codes each declares, as recorded: a change to
    the API's surface shows up here (and in the file's diff) before a client sees it."""
    spec = create_app(Settings(auth_secret="o" * 40)).openapi()
    found = {
        path: {method: sorted(op["responses"]) for method, op in ops.items()}
        for path, ops in spec["paths"].items()
    }
    assert found == json.loads(ROUTES.read_text())


def test_examples_are_what_the_routes_answer_today() -> None:
    stored = json.loads(EXAMPLES.read_text())
    fresh = asyncio.run(_collect(VECTORS))
    assert set(stored) == set(fresh)

    def shape(doc: object) -> object:
        if isinstance(doc, dict):
            return {k: shape(v) for k, v in doc.items() if k not in ("as_of",)}
        if isinstance(doc, list):
            return [shape(item) for item in doc]
        return type(doc).__name__

    for key in stored:
        assert shape(stored[key]) == shape(fresh[key]), f"{key}: run python -m api.make_examples"


def test_every_example_is_an_answer_of_the_routes_type() -> None:
    """The typed answers (api/answers.py) are the authority: each stored example must be one
    (lists cut to one item stay answers of the same type)."""
    import importlib
    import pkgutil

    from fastapi.routing import APIRoute
    from pydantic import TypeAdapter

    import api.routes

    stored = json.loads(EXAMPLES.read_text())
    typed = 0
    routes = [
        route
        for info in pkgutil.iter_modules(api.routes.__path__)
        for route in importlib.import_module(f"api.routes.{info.name}").router.routes
    ]
    for route in routes:
        if not isinstance(route, APIRoute) or route.response_model is None:
            continue
        for method in route.methods:
            example = stored.get(f"{method} {route.path}")
            assert route.response_model != dict[str, Any], f"{route.path} answers untyped"
            if example is not None:
                TypeAdapter(route.response_model).validate_python(example)
                typed += 1
    assert typed >= 25, "the typed routes have examples"
