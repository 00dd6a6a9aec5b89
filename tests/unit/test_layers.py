"""Imports point one way: the command line's package (``crmtracker``: cli, up, compose and the
process helpers) sits on top; the components (``models``, ``streams``, ``api``,
``scheduler``) never import it; ``config`` and ``demo`` at the bottom import no component
(``config`` only the policy's own modules, to read the policy)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("config", "crmtracker", "demo", "models", "reminders", "streams", "api", "scheduler")
CONFIG_MAY_USE = {"config", "models.policy", "models.policy_file", "models.digest"}


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (functions, ``TYPE_CHECKING`` blocks)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add(".")  # relative: not used in this code base
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("package", ["models", "reminders", "streams", "api", "scheduler"])
def test_components_do_not_import_the_command_line_package(package: str) -> None:
    files = modules(package)
    assert files
    wrong = {
        str(f.relative_to(ROOT)): sorted(n for n in imported(f) if top(n) in ("crmtracker", "."))
        for f in files
    }
    assert {f: n for f, n in wrong.items() if n} == {}


def test_config_is_the_bottom() -> None:
    wrong = {}
    for f in modules("config"):
        names = {n for n in imported(f) if top(n) in PRODUCT}
        bad = sorted(
            n for n in names if not any(n == ok or n.startswith(ok + ".") for ok in CONFIG_MAY_USE)
        )
        if bad:
            wrong[str(f.relative_to(ROOT))] = bad
    assert wrong == {}


def test_the_demo_generator_imports_nothing_of_the_product() -> None:
    wrong = {
        str(f.relative_to(ROOT)): sorted(
            n for n in imported(f) if top(n) in PRODUCT and top(n) != "demo"
        )
        for f in modules("demo")
    }
    assert {f: n for f, n in wrong.items() if n} == {}


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from crmtracker.compose import engine\n")
    assert "crmtracker.compose" in imported(f)
